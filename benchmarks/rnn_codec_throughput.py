"""Throughput of the recurrent codec: training patches/s, and encode + decode ms for a 768×512 image,
with the achieved GFLOP/s beside a plain matmul's on the same machine.

    python -m benchmarks.rnn_codec_throughput                 # full width, 16 iterations
    python -m benchmarks.rnn_codec_throughput --width 0.25 --iterations 4 --device cuda

FLOPs are counted with torch.utils.flop_counter (2 per multiply-add) on the same call that is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from coding.rnn_bitstream import CODINGS, compress, decompress, stream_bytes_per_image
from models.rnn_codec import RNNCodec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timed(lambda: a @ b, device, repeats) / 1e9


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, nargs=2, default=[512, 768], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--coding", choices=CODINGS, default="smallest", help="payload of the timed stream")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    codec = RNNCodec(width=args.width).to(device)
    optimizer = torch.optim.Adam(codec.parameters())
    patches = torch.rand(args.batch_size, 3, args.patch_size, args.patch_size, device=device)

    def train_step() -> None:
        out = codec(patches, args.iterations)
        loss = (patches.unsqueeze(0) - out["x_hats"]).abs().mean(dim=(1, 2, 3, 4)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    codec.train()
    train_s = timed(train_step, device, args.repeats)
    train_flops = flops(train_step)

    codec.eval()
    image = torch.rand(1, 3, *args.image_size, device=device)
    with torch.inference_mode():
        stream = compress(codec, image, args.iterations, coding=args.coding)
        encode_s = timed(lambda: compress(codec, image, args.iterations, coding=args.coding), device, args.repeats)
        codes = codec.encode(image, args.iterations)
        sizes = {c: int(stream_bytes_per_image(codes, c)[-1, 0]) for c in ("packed", "entropy")}
        decode_s = timed(lambda: decompress(codec, stream), device, args.repeats)
        encode_flops = flops(lambda: codec(image, args.iterations))
    peak = matmul_gflops(device)

    result = {
        "device": str(device), "width": args.width, "iterations": args.iterations,
        "params": sum(p.numel() for p in codec.parameters()),
        "train_patches_per_s": args.batch_size / train_s,
        "train_gflops_per_s": train_flops / train_s / 1e9,
        "encode_ms": encode_s * 1e3, "decode_ms": decode_s * 1e3,
        "encode_gflops_per_s": encode_flops / encode_s / 1e9,
        "matmul_gflops_per_s": peak, "coding": args.coding, "bytes": len(stream),
        "bytes_packed": sizes["packed"], "bytes_entropy": sizes["entropy"],
    }  # fmt: skip
    table = Table(title=f"recurrent codec, width {args.width}, {args.iterations} iterations, {device}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,.2f}" if isinstance(value, float) else str(value))
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
