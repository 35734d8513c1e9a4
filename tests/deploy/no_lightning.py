"""Run ``train.main`` (the ``splitcv`` entry point) with the given arguments, then fail (exit 3) if anything imported Lightning or
the training code: how the socket test starts ``splitcv serve`` and ``splitcv edge``."""

import sys

FORBIDDEN = ("lightning", "pytorch_lightning", "lightning_modules", "callbacks", "datamodules")


def forbidden_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)


if __name__ == "__main__":
    from train import main

    try:
        main(sys.argv[1:])
    finally:
        loaded = forbidden_modules()
        if loaded:
            print(f"forbidden modules imported: {loaded[:10]}", file=sys.stderr)
            sys.exit(3)
