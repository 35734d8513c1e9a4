"""splitcv's command line (the ``splitcv`` console script; ``python train.py`` is the same).

    splitcv fit --config configs/trainer/cpu.yaml --config configs/rnn_compressor/demo.yaml
    splitcv fit ... --ckpt_path last            # resume the newest run of that name (or of --run.id)
    splitcv test ... --ckpt_path last           # evaluate that run's newest checkpoint
    splitcv search --config configs/bit_search/demo.yaml   # B-DCNN activation-bit search

This file only dispatches: ``fit``/``validate``/``test``/``predict`` go to :class:`cli.lightning_cli.SplitCVCLI`
(LightningCLI with splitcv's run directories, checkpoints, W&B and SLURM conventions), ``search`` to the
bit search. Nothing heavy is imported before the subcommand is known, so ``splitcv --help`` answers at once
(Lightning alone takes seconds to import).
"""

from __future__ import annotations

import sys

LIGHTNING_SUBCOMMANDS = {
    "fit": "Train a model (a new run, or --ckpt_path last to resume one).",
    "validate": "One evaluation epoch over the validation set.",
    "test": "One evaluation epoch over the test set (--ckpt_path last: the run's newest checkpoint).",
    "predict": "Run inference on the predict set.",
}
OTHER_SUBCOMMANDS = {
    "search": "B-DCNN activation-bit search (Algorithm 1) over a validation subset: splitcv search --config ...",
    "export": "A trained split model as ONNX halves (edge, server) + manifest.json: splitcv export CKPT --out DIR",
    "serve": "Run the server half over TCP on 127.0.0.1 (ONNX Runtime, no Lightning): splitcv serve DIR",
    "edge": "Run the edge half on images and send the wire bytes to a server: splitcv edge DIR IMAGES...",
}
DEPLOY_SUBCOMMANDS = ("export", "edge", "serve")


def usage() -> str:
    width = max(map(len, [*LIGHTNING_SUBCOMMANDS, *OTHER_SUBCOMMANDS]))
    lines = [
        "usage: splitcv {" + ",".join([*LIGHTNING_SUBCOMMANDS, *OTHER_SUBCOMMANDS]) + "} [--config FILE ...] [options]",
        "",
        "Learned compression and split inference for vision at the edge (PyTorch Lightning).",
        "",
        "subcommands:",
        *(f"  {name:<{width}}  {text}" for name, text in {**LIGHTNING_SUBCOMMANDS, **OTHER_SUBCOMMANDS}.items()),
        "",
        "`splitcv SUBCOMMAND --help` lists every option of a subcommand; configs compose, later files win:",
        "  splitcv fit --config configs/trainer/cpu.yaml --config configs/rnn_compressor/demo.yaml",
        "See README.md for every method's commands.",
    ]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``splitcv``); refusals about the run directory are one line, not a traceback."""
    argv = sys.argv[1:] if args is None else list(args)
    command = argv[0] if argv else None
    if command in (None, "-h", "--help"):
        print(usage())
        return
    if command in DEPLOY_SUBCOMMANDS:  # argparse and ONNX Runtime; edge and serve never import Lightning
        from deploy.cli import main as deploy_main

        deploy_main(argv)
        return
    if command == "search":
        from lightning_modules.bit_search_cli import run_search_command

        run_search_command(argv[1:])
        return
    if command not in LIGHTNING_SUBCOMMANDS and not command.startswith("-"):
        sys.exit(f"{usage()}\n\nsplitcv: error: unknown subcommand {command!r}")
    from cli.lightning_cli import run_lightning_cli

    run_lightning_cli(args)


if __name__ == "__main__":
    main()
