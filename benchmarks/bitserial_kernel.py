"""Bit-serial B-DCNN layer vs the float layer, Q = 1..8, on this CPU, beside the cost model.

One decomposed layer (default: the shape of AlexNet's conv3, 256 → 384 channels, 3×3, 13×13 input, batch
1) is run for real by :class:`models.bitserial.BitSerialLayer` (AND + popcount on 64-bit words, numba)
and timed against ``torch.nn.functional.conv2d``/``linear`` on the same input, with the same number of
threads for both (``--threads``: torch and numba). The runs are interleaved round by round (a load
change on a shared machine hits both alike) and the median is reported, split into

- ``quantise+pack``: the quantisation sub-layer (min/max, round) and the bit-plane packing (im2col);
- ``kernel``: the AND + popcount loop (what the cost model's ``word_ops`` counts);
- ``combine``: y = β Σ_j c_j Z_j + o Σ_j c_j s_j + bias;

beside the cost model: ``word_ops`` = N·P·k·Q·⌈D/64⌉ and ``float_macs`` = N·P·D. A linear fit
kernel_ms = a + b·word_ops over Q checks that the time is linear in Q as the model predicts (R²). Medians
and minima are both reported: on a CPU shared with other jobs the minimum is the better estimate of the
work itself.

    python benchmarks/bitserial_kernel.py [--bases 4] [--threads 1] [--repeats 20] [--shape alexnet_conv3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.bdcnn import BinaryDecomposedConv2d, BinaryDecomposedLinear, layer_cost  # noqa: E402
from models.bitserial import BitSerialLayer, integer_products  # noqa: E402

SHAPES = {
    # name: (kind, in, out, kernel, stride, padding, input side)
    "alexnet_conv2": ("conv", 64, 192, 5, 1, 2, 27),
    "alexnet_conv3": ("conv", 192, 384, 3, 1, 1, 13),
    "alexnet_conv4": ("conv", 384, 256, 3, 1, 1, 13),
    "demo_conv3": ("conv", 32, 64, 3, 1, 1, 8),
    "fc_1024": ("linear", 4096, 1024, 0, 0, 0, 0),
}


def build(shape: str, bases: int) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    kind, cin, cout, kernel, stride, padding, side = SHAPES[shape]
    torch.manual_seed(0)
    if kind == "conv":
        source = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
        layer = BinaryDecomposedConv2d(source, bases, bits=1, method="greedy")
        x = torch.relu(torch.randn(1, cin, side, side))
    else:
        source = nn.Linear(cin, cout)
        layer = BinaryDecomposedLinear(source, bases, bits=1, method="greedy")
        x = torch.relu(torch.randn(1, cin))
    return source.eval(), layer.eval(), x


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(shape: str, bases: int, bits: list[int], repeats: int, warmup: int) -> list[dict]:
    source, layer, x = build(shape, bases)
    kernels = {}
    for q in bits:
        layer.bits = q
        kernels[q] = BitSerialLayer(layer, backend="numba")
        kernels[q](x)  # compile and warm up
    times: dict[str, list[float]] = {"float": []}
    for q in bits:
        for part in ("pack", "kernel", "combine", "total"):
            times[f"{part}{q}"] = []
    with torch.no_grad():
        for r in range(warmup + repeats):
            t_float = timed(lambda: source(x))
            row = {}
            for q, k in kernels.items():
                state = {}
                row[f"pack{q}"] = timed(
                    lambda k=k, s=state: s.update(lv=k.levels(x)) or s.update(pl=k.packed_planes(s["lv"][0]))
                )
                row[f"kernel{q}"] = timed(
                    lambda k=k, s=state: s.update(z=integer_products(k.packed, s["pl"][0], "numba"))
                )
                z = torch.from_numpy(state["z"])[None]
                row[f"combine{q}"] = timed(lambda k=k, z=z, s=state: k.combine(z, s["lv"][1], s["lv"][2]))
                row[f"total{q}"] = timed(lambda k=k: k(x))
            if r >= warmup:
                times["float"].append(t_float)
                for key, value in row.items():
                    times[key].append(value)
    float_ms = statistics.median(times["float"])
    in_shape = tuple(x.shape[1:])
    rows = []
    for q in bits:
        cost = layer_cost(layer, in_shape, q)
        total = statistics.median(times[f"total{q}"])
        rows.append(
            {
                "shape": shape,
                "bases": bases,
                "bits": q,
                "float_ms": float_ms,
                "pack_ms": statistics.median(times[f"pack{q}"]),
                "kernel_ms": statistics.median(times[f"kernel{q}"]),
                "combine_ms": statistics.median(times[f"combine{q}"]),
                "total_ms": total,
                "speedup_vs_float": float_ms / total,
                "float_min_ms": min(times["float"]),
                "kernel_min_ms": min(times[f"kernel{q}"]),
                "total_min_ms": min(times[f"total{q}"]),
                "speedup_vs_float_min": min(times["float"]) / min(times[f"total{q}"]),
                "word_ops": cost["word_ops"],
                "bops": cost["bops"],
                "float_macs": cost["float_macs"],
                "model_ops_ratio": cost["float_macs"] / cost["word_ops"],
            }
        )
    ops = np.array([r["word_ops"] for r in rows], dtype=float)
    for stat in ("kernel_ms", "kernel_min_ms"):
        ms = np.array([r[stat] for r in rows])
        slope, intercept = np.polyfit(ops, ms, 1)
        pred = slope * ops + intercept
        r2 = 1 - ((ms - pred) ** 2).sum() / max(((ms - ms.mean()) ** 2).sum(), 1e-30)
        for r, p in zip(rows, pred, strict=True):
            r[f"{stat}_linear_fit"] = float(p)
            r[f"{stat}_fit_r2"] = float(r2)
    for r in rows:
        r["ns_per_word_op"] = r["kernel_ms"] * 1e6 / r["word_ops"]
        r["ns_per_word_op_min"] = r["kernel_min_ms"] * 1e6 / r["word_ops"]
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="alexnet_conv3")
    parser.add_argument("--bases", type=int, default=4, help="k, bases per output channel")
    parser.add_argument("--bits", type=int, nargs="+", default=list(range(1, 9)))
    parser.add_argument("--threads", type=int, default=1, help="torch and numba threads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/bitserial_kernel.json"))
    args = parser.parse_args(argv)
    import numba

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    rows = measure(args.shape, args.bases, args.bits, args.repeats, args.warmup)
    head = ["Q", "float ms", "pack ms", "kernel ms", "combine ms", "total ms", "speed-up", "word ops", "ns/word op",
            "fit ms", "min: float", "min: kernel", "min: total", "min: speed-up", "float MACs / word ops"]  # fmt: skip
    print(f"{args.shape}, k = {args.bases}, threads = {args.threads}, median of {args.repeats}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for r in rows:
        values = [r["bits"], r["float_ms"], r["pack_ms"], r["kernel_ms"], r["combine_ms"], r["total_ms"],
                  r["speedup_vs_float"], r["word_ops"], r["ns_per_word_op"], r["kernel_ms_linear_fit"],
                  r["float_min_ms"], r["kernel_min_ms"], r["total_min_ms"], r["speedup_vs_float_min"],
                  r["model_ops_ratio"]]  # fmt: skip
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else f"{v:,}" for v in values) + " |")
    print(
        f"kernel time linear in word ops: R² = {rows[0]['kernel_ms_fit_r2']:.4f} (medians), "
        f"{rows[0]['kernel_min_ms_fit_r2']:.4f} (minima)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
