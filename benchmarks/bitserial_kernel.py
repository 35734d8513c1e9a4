"""Bit-serial B-DCNN against float, on this CPU: one layer at Q = 1..8, or a whole network.

**Layer mode** (default): one decomposed layer (default: AlexNet's conv3, 192 → 384 channels, 3×3, 13×13
input, batch 1, k = 4) run by :class:`models.bitserial.BitSerialLayer` against ``torch.nn.functional``'s
float layer on the same input, the runs interleaved repetition by repetition (a load change on a shared
machine hits both alike). Each repetition times

- ``float``: the float layer;
- ``quantise+pack``, ``kernel`` (the AND + popcount loop the cost model's ``word_ops`` counts),
  ``combine`` (y = β Σ_j c_j Z_j + o Σ_j c_j s_j + bias): the three parts, called one after the other;
- ``total``: the whole layer in one call (what a network runs);
- the float layer and the total again, timed in CPU time of the calling thread (``time.thread_time``:
  the work itself at one thread; wall-clock time on a loaded machine also counts waits for a core).

Reported: wall-clock medians and minima of the float layer and of the one-call total; the speed-up as
the median over repetitions of float / total of the same repetition; the same in CPU time; the three parts
of the one repetition whose parts add up to the least, with their sum (never one column's minimum beside
another's, which made "min total" less than "min kernel"); the kernel's rate in 64-bit word-ops per ns
(``word_ops`` = N·P·k·Q·⌈D/64⌉), at its median and its fastest repetition.

**Network mode** (``--network alexnet`` or ``demo_cnn``): the network (``weights=None``: speed does not
depend on the weights' values) converted by ``convert_to_bdcnn`` with every convolution *and* linear layer
decomposed, bits uniform (``--bits``) or per layer (``--layer-bits name=Q``), timed at batch 1 against the
float network by :func:`models.bdcnn_timing.network_ms_per_image` (interleaved, medians and minima).

The path taken (backend, and the native kernel's instruction set chosen from the CPU's features) is
printed first. Threads: ``--threads`` for torch and the kernel alike (the native kernel is one-threaded).

    python benchmarks/bitserial_kernel.py [--shape alexnet_conv3] [--bases 4] [--threads 1] [--repeats 30]
    python benchmarks/bitserial_kernel.py --network alexnet --bits 2 4 [--layer-bits net.features.0=5 ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.bdcnn import BinaryDecomposedConv2d, BinaryDecomposedLinear, convert_to_bdcnn, layer_cost, set_bits  # noqa: E402
from models.bdcnn_networks import build_classifier  # noqa: E402
from models.bdcnn_timing import cpu_threads, network_ms_per_image  # noqa: E402
from models.bitserial import BitSerialLayer, available_isas, default_backend, default_isa  # noqa: E402

SHAPES = {
    # name: (kind, in, out, kernel, stride, padding, input side)
    "alexnet_conv2": ("conv", 64, 192, 5, 1, 2, 27),
    "alexnet_conv3": ("conv", 192, 384, 3, 1, 1, 13),
    "alexnet_conv4": ("conv", 384, 256, 3, 1, 1, 13),
    "demo_conv3": ("conv", 32, 64, 3, 1, 1, 8),
    "alexnet_fc6": ("linear", 9216, 4096, 0, 0, 0, 0),
    "fc_1024": ("linear", 4096, 1024, 0, 0, 0, 0),
}
NETWORKS = {"alexnet": (1000, 224), "demo_cnn": (10, 64)}


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


def timed_cpu(fn) -> float:
    """CPU milliseconds of the calling thread (the work itself at one thread, whatever the load)."""
    start = time.thread_time()
    fn()
    return (time.thread_time() - start) * 1e3


def describe_path(backend: str, isa: str | None) -> str:
    cpu = platform.processor() or platform.machine()
    if backend == "native":
        return f"backend native (C extension), kernel path {isa} (this CPU runs {available_isas()}; {cpu})"
    return f"backend {backend} (the C extension is not used), {cpu}"


def measure_layer(shape: str, bases: int, bits: list[int], repeats: int, warmup: int, backend: str, isa) -> list[dict]:
    source, layer, x = build(shape, bases)
    kernels = {}
    for q in bits:
        layer.bits = q
        kernels[q] = BitSerialLayer(layer, backend=backend, isa=isa)
        kernels[q](x)  # compile and warm up
    parts = backend == "native"
    reps: list[dict] = []
    with torch.no_grad():
        for r in range(warmup + repeats):
            row = {"float": timed(lambda: source(x)), "float_cpu": timed_cpu(lambda: source(x))}
            for q, k in kernels.items():
                if parts:
                    state = {}
                    row[f"pack{q}"] = timed(lambda k=k, s=state: s.update(p=k.native_pack(x[0])))
                    row[f"kernel{q}"] = timed(lambda k=k, s=state: s.update(a=k.native_kernel(s["p"])))
                    row[f"combine{q}"] = timed(lambda k=k, s=state: k.native_combine(s["a"], s["p"]))
                row[f"total{q}"] = timed(lambda k=k: k(x))
                row[f"total_cpu{q}"] = timed_cpu(lambda k=k: k(x))
            if r >= warmup:
                reps.append(row)
    in_shape = tuple(x.shape[1:])
    floats = [rep["float"] for rep in reps]
    rows = []
    for q in bits:
        cost = layer_cost(layer, in_shape, q)
        totals = [rep[f"total{q}"] for rep in reps]
        row = {
            "shape": shape,
            "bases": bases,
            "bits": q,
            "float_ms": statistics.median(floats),
            "float_min_ms": min(floats),
            "total_ms": statistics.median(totals),
            "total_min_ms": min(totals),
            "speedup": statistics.median(f / t for f, t in zip(floats, totals, strict=True)),
            "float_cpu_ms": statistics.median(rep["float_cpu"] for rep in reps),
            "total_cpu_ms": statistics.median(rep[f"total_cpu{q}"] for rep in reps),
            "speedup_cpu": statistics.median(rep["float_cpu"] / rep[f"total_cpu{q}"] for rep in reps),
            "word_ops": cost["word_ops"],
            "float_macs": cost["float_macs"],
            "model_ops_ratio": cost["float_macs"] / cost["word_ops"],
        }
        if parts:  # the three parts of the repetition whose parts add up to the least, all from that one
            sums = [rep[f"pack{q}"] + rep[f"kernel{q}"] + rep[f"combine{q}"] for rep in reps]
            best = reps[min(range(len(reps)), key=sums.__getitem__)]
            for part in ("pack", "kernel", "combine"):
                row[f"{part}_ms"] = statistics.median(rep[f"{part}{q}"] for rep in reps)
                row[f"best_{part}_ms"] = best[f"{part}{q}"]
            row["best_parts_ms"] = min(sums)
            row["word_ops_per_ns"] = cost["word_ops"] / (row["kernel_ms"] * 1e6)
            row["word_ops_per_ns_best"] = cost["word_ops"] / (min(rep[f"kernel{q}"] for rep in reps) * 1e6)
        rows.append(row)
    return rows


def print_layer(rows: list[dict], args) -> None:
    print(f"{args.shape}, k = {args.bases}, threads = {args.threads}, {args.repeats} repetitions interleaved "
          "(wall-clock: median / min; CPU: median of the calling thread's CPU time; the parts are those of the "
          "one repetition whose parts add up to the least)")  # fmt: skip
    head = ["Q", "float ms", "bit-serial ms (one call)", "speed-up (median of per-repetition ratios)",
            "CPU ms float / bit-serial", "speed-up in CPU time", "parts: quantise+pack / kernel / combine = sum",
            "kernel word-ops/ns (median / fastest)", "float MACs / word op"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for r in rows:
        parts = (
            f"{r['best_pack_ms']:.3f} / {r['best_kernel_ms']:.3f} / {r['best_combine_ms']:.3f} = {r['best_parts_ms']:.3f}"
            if "best_parts_ms" in r
            else "-"
        )
        rate = f"{r['word_ops_per_ns']:.1f} / {r['word_ops_per_ns_best']:.1f}" if "word_ops_per_ns" in r else "-"
        values = [str(r["bits"]), f"{r['float_ms']:.3f} / {r['float_min_ms']:.3f}",
                  f"{r['total_ms']:.3f} / {r['total_min_ms']:.3f}", f"{r['speedup']:.2f}×",
                  f"{r['float_cpu_ms']:.3f} / {r['total_cpu_ms']:.3f}", f"{r['speedup_cpu']:.2f}×", parts, rate,
                  f"{r['model_ops_ratio']:.1f}"]  # fmt: skip
        print("| " + " | ".join(values) + " |")


def parse_layer_bits(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise SystemExit(f"--layer-bits takes name=Q pairs (e.g. net.features.0=5), got {item!r}")
        out[name] = int(value)
    return out


def measure_network(args) -> list[dict]:
    num_classes, size = NETWORKS[args.network]
    torch.manual_seed(0)
    float_model = build_classifier(args.network, num_classes=num_classes, width=args.width).eval()
    decomposed = convert_to_bdcnn(float_model, bases=args.bases, bits=None, layers="all", method="greedy")
    layer_bits = parse_layer_bits(args.layer_bits)
    names = [name for name, _ in decomposed.named_modules() if name in layer_bits]
    unknown = sorted(set(layer_bits) - set(names))
    if unknown:
        raise SystemExit(f"--layer-bits: no decomposed layer named {unknown}")
    example = torch.rand(1, 3, size, size)
    configs = [(f"uniform Q = {q}", q, {}) for q in args.bits]
    if layer_bits:
        configs.append((f"per layer {layer_bits}, others Q = {args.bits[0]}", args.bits[0], layer_bits))
    rows = []
    for label, q, per_layer in configs:
        set_bits(decomposed, q)
        set_bits(decomposed, per_layer)
        result = network_ms_per_image(float_model, decomposed, example, repeats=args.repeats, threads=args.threads,
                                      warmup=args.warmup, backend=args.backend)  # fmt: skip
        rows.append({"network": args.network, "config": label, "bases": args.bases, "image_size": size} | result)
    return rows


def print_network(rows: list[dict], args) -> None:
    print(f"{args.network}, every conv and linear layer decomposed (k = {args.bases}) and run bit-serially, batch 1, "
          f"threads = {args.threads}, {args.repeats} repetitions interleaved with the float network")  # fmt: skip
    head = ["bits", "float ms (median / min)", "bit-serial ms (median / min)", "speed-up (median of ratios)",
            "speed-up at the best bit-serial repetition", "CPU ms float / bit-serial", "speed-up in CPU time",
            "layers"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for r in rows:
        values = [r["config"], f"{r['float_ms']:.2f} / {r['float_min_ms']:.2f}",
                  f"{r['bitserial_ms']:.2f} / {r['bitserial_min_ms']:.2f}", f"{r['speedup']:.2f}×",
                  f"{r['speedup_min']:.2f}×",
                  f"{r['float_cpu_ms']:.2f} / {r['bitserial_cpu_ms']:.2f}" if r["float_cpu_ms"] else "-",
                  f"{r['speedup_cpu']:.2f}×" if r["speedup_cpu"] else "-", str(r["layers"])]  # fmt: skip
        print("| " + " | ".join(values) + " |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="alexnet_conv3", help="layer mode: which layer")
    parser.add_argument("--network", choices=sorted(NETWORKS), help="network mode: time this whole network")
    parser.add_argument("--width", type=int, default=16, help="demo_cnn's width")
    parser.add_argument("--layer-bits", nargs="*", default=[], help="network mode: name=Q for some layers")
    parser.add_argument("--bases", type=int, default=4, help="k, bases per output channel")
    parser.add_argument("--bits", type=int, nargs="+", help="Q values (layer mode: default 1..8; network: 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch and kernel threads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backend", choices=["native", "numba", "torch"], default=None,
                        help="bit-serial backend (default: native when built)")  # fmt: skip
    parser.add_argument("--isa", choices=["avx512_vpopcntdq", "avx2", "scalar"], default=None,
                        help="native kernel path (default: the fastest this CPU runs)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default runs/benchmarks/...)")
    args = parser.parse_args(argv)
    args.backend = args.backend or default_backend()
    isa = (args.isa or default_isa()) if args.backend == "native" else None
    args.bits = args.bits or ([2] if args.network else list(range(1, 9)))
    print(describe_path(args.backend, isa))
    if args.network:
        if args.isa:
            raise SystemExit("--isa applies to layer mode; the network runs the default path")
        rows = measure_network(args)
        print_network(rows, args)
    else:
        with cpu_threads(args.threads, args.backend):
            rows = measure_layer(args.shape, args.bases, args.bits, args.repeats, args.warmup, args.backend, isa)
        print_layer(rows, args)
    out = args.out or Path(f"runs/benchmarks/bitserial_{args.network or args.shape}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "backend": args.backend, "isa": isa, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
