"""Command line of ``splitcv export``, ``splitcv edge`` and ``splitcv serve`` (argparse; each subcommand
imports what it needs only when it runs, so ``edge`` and ``serve`` never import Lightning)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SUBCOMMANDS = ("export", "edge", "serve")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {value}")
    return number


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitcv", description="Deploy a trained split model as an edge/server pair.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="checkpoint → ONNX edge and server halves + manifest.json")
    e.add_argument("checkpoint", type=Path, help="Lightning checkpoint of a split method")
    e.add_argument("--out", type=Path, required=True, help="export directory (created; an older export is replaced)")
    e.add_argument(
        "--method",
        choices=("rnn_compressor", "code_recognition", "decoded_recognition", "shared_trunk"),
        help="the checkpoint's method (default: read from the checkpoint)",
    )
    e.add_argument("--iterations", type=_positive, help="recurrent codec: iterations k to send (default: the model's)")
    e.add_argument(
        "--feature-codec",
        type=json.loads,
        help='shared trunk: feature codec settings as JSON, e.g. \'{"codec": "webp", "quality": 90}\' '
        "(default: the checkpoint's codec, else lossless PNG of 8-bit levels)",
    )
    e.add_argument(
        "--reference-images", nargs="+", type=Path, help="images (or folders) whose PyTorch streams and predictions "
        "go to reference.json, for `splitcv edge --reference`",
    )  # fmt: skip

    s = sub.add_parser("serve", help="run the server half on 127.0.0.1 (ONNX Runtime; no Lightning)")
    s.add_argument("export_dir", type=Path)
    s.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    s.add_argument("--port-file", type=Path, help="write the port listened on to this file once listening")
    s.add_argument("--max-requests", type=_positive, help="stop after this many streams (default: no limit)")
    s.add_argument("--idle-timeout", type=_seconds, default=60.0, help="stop after this long without a connection")
    s.add_argument("--recv-timeout", type=_seconds, default=10.0, help="drop a connection silent for this long")
    s.add_argument("--threads", type=_positive, default=1, help="ONNX Runtime intra-op threads")

    d = sub.add_parser("edge", help="run the edge half on images and send the streams to `splitcv serve`")
    d.add_argument("export_dir", type=Path)
    d.add_argument("images", nargs="+", type=Path, help="image files or folders (searched recursively)")
    d.add_argument("--port", type=int, required=True, help="the server's port on 127.0.0.1")
    d.add_argument("--limit", type=_positive, help="send at most this many images")
    d.add_argument("--reference", type=Path, help="reference.json of `splitcv export --reference-images`")
    d.add_argument("--corrupt-check", action="store_true", help="also send a corrupted stream; expect an error reply")
    d.add_argument("--timeout", type=_seconds, default=30.0, help="seconds to wait for the server on each request")
    d.add_argument("--summary-json", type=Path, help="write the summary (and every reply) to this JSON file")
    d.add_argument("--threads", type=_positive, default=1, help="ONNX Runtime intra-op threads")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "export":
            from deploy.export import export

            manifest = export(
                args.checkpoint, args.out, args.method, args.iterations, args.feature_codec, args.reference_images
            )
            graphs = ", ".join(f"{role}={g['file']}" for role, g in manifest["graphs"].items())
            print(f"[splitcv] exported {manifest['method']} to {args.out}: {graphs}, manifest.json")
        elif args.command == "serve":
            from deploy.server import serve

            serve(
                args.export_dir,
                port=args.port,
                port_file=args.port_file,
                max_requests=args.max_requests,
                idle_timeout=args.idle_timeout,
                recv_timeout=args.recv_timeout,
                threads=args.threads,
            )
        else:
            from deploy.edge import run_edge
            from deploy.images import list_images

            summary = run_edge(
                args.export_dir,
                list_images(args.images, args.limit),
                port=args.port,
                reference=args.reference,
                corrupt_check=args.corrupt_check,
                timeout=args.timeout,
                threads=args.threads,
            )
            if args.summary_json:
                args.summary_json.write_text(json.dumps(summary, indent=1) + "\n")
            if summary["failed"]:
                sys.exit(1)
    except (FileNotFoundError, FileExistsError, ValueError, ConnectionError, TimeoutError) as error:
        sys.exit(f"splitcv {args.command}: error: {error}")


if __name__ == "__main__":
    main()
