"""Training throughput of the recurrent codec: the eager unfused build against the configs' default build
and each speed switch on its own, interleaved in one run; optionally encode/decode of a whole image.

Builds (same weights, same batch, same stochastic-binarizer seed; see :class:`models.rnn_codec.RNNCodec`):

- ``eager unfused``: every switch off — what the classic PyTorch implementation runs;
- one build per switch, that switch alone on (``skip_zero_state``, ``compile_gates``, ``small_map_gemm``,
  ``channels_last``, ``autocast_bf16``);
- ``default``: the switches that ``configs/rnn_compressor/paper.yaml`` turns on (``--config``);
- ``default, float32``: those switches less ``autocast_bf16`` (the part that keeps float32 numbers).

Every repetition runs one training step (forward over T iterations, the paper's loss, backward, Adam) of
every build, in an order rotated from one repetition to the next, so that a load change on a shared
machine hits all builds alike. Reported per build: patches/s at the median and at the fastest step, and
the speed-up over ``eager unfused`` as the median over repetitions of the ratio of the two steps of the same
repetition; the machine's load (``os.getloadavg``) before and after. The first ``--warmup`` steps of each
build are not timed (``compile_gates`` compiles there). The timed steps use the one ``--patch-size`` patch
batch of random pixels: speed does not depend on the pixels.

``--quality STEPS`` asks the other question a switch that changes numbers raises — does the network still
learn as well? It trains ``eager unfused`` (initialisation seed 0), ``eager unfused`` again from
initialisation seed 1 (the spread that any change of rounding already brings), and ``default`` (seed 0)
for STEPS interleaved steps on one stream of random 32×32 crops (with h-flips) of scikit-image's bundled
training photos, then codes crops of the held-out photos (chelsea, coffee, rocket) in float32 evaluation
mode, and prints the mean training loss of the last tenth of the steps and the held-out PSNR after 1, T/2
and T iterations; ``--out DIR`` adds the loss curves as a PNG.

    python -m benchmarks.rnn_codec_throughput                  # full width, batch 32, T = 16, CPU
    python -m benchmarks.rnn_codec_throughput --iterations 4 --repeats 3
    python -m benchmarks.rnn_codec_throughput --device cuda    # a GPU: the same builds
    python -m benchmarks.rnn_codec_throughput --inference      # + encode/decode ms of a 768×512 image
    python -m benchmarks.rnn_codec_throughput --quality 300 --width 0.25 --iterations 8 --out runs/rnn_speed
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import yaml

from benchmarks.table_output import print_table
from models.rnn_codec import RNNCodec

SWITCHES = ("skip_zero_state", "compile_gates", "small_map_gemm", "channels_last", "autocast_bf16")
CONFIG = Path(__file__).resolve().parents[1] / "configs/rnn_compressor/paper.yaml"


def config_switches(path: Path) -> dict[str, bool]:
    """The speed switches a compressor config sets (unset ones take :class:`RNNCodec`'s defaults)."""
    init_args = (yaml.safe_load(path.read_text()) or {}).get("model", {}).get("init_args", {})
    return {name: bool(init_args.get(name, False)) for name in SWITCHES}  # RNNCodec's defaults: all off


def label(prefix: str, switches: dict[str, bool]) -> str:
    """``prefix (the switches that are on)``: how the tables name a build."""
    return f"{prefix} (" + ", ".join(n for n in SWITCHES if switches[n]) + ")"


def builds(config: dict[str, bool], alone: tuple[str, ...] = SWITCHES) -> dict[str, dict[str, bool]]:
    off = dict.fromkeys(SWITCHES, False)
    out = {"eager unfused": off}
    out |= {f"{name} alone": off | {name: True} for name in alone}
    out[label("default", config)] = config
    if config["autocast_bf16"]:
        exact = config | {"autocast_bf16": False}
        out[label("default, float32", exact)] = exact
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """One build's codec, optimiser and training step."""

    def __init__(self, switches: dict[str, bool], state: dict, args, device: torch.device, lr: float = 1e-3) -> None:
        self.codec = RNNCodec(width=args.width, **switches).to(device)
        self.codec.load_state_dict(state)
        self.codec.train()
        self.optimizer = torch.optim.Adam(self.codec.parameters(), lr=lr)
        self.iterations, self.device = args.iterations, device

    def train_step(self, patches: torch.Tensor) -> float:
        """One training step (the paper's loss: Σ_t mean |x − x̂_t|); returns the loss."""
        self.codec.train()
        out = self.codec(patches, self.iterations)
        loss = (patches.unsqueeze(0) - out["x_hats"]).abs().mean(dim=(1, 2, 3, 4)).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def step(self, patches: torch.Tensor) -> float:
        """Seconds of one training step."""
        _sync(self.device)
        start = time.perf_counter()
        torch.manual_seed(0)  # the same binarizer draws in every build
        self.train_step(patches)
        _sync(self.device)
        return time.perf_counter() - start


def measure_training(args, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    state = RNNCodec(width=args.width).state_dict()
    patches = torch.rand(args.batch_size, 3, args.patch_size, args.patch_size, device=device)
    config = config_switches(args.config)
    trainers = {name: Trainer(switches, state, args, device) for name, switches in builds(config, args.alone).items()}
    names = list(trainers)
    for name in names:
        for _ in range(args.warmup):
            trainers[name].step(patches)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(trainers[name].step(patches))
    base = times["eager unfused"]
    rows = []
    for name in names:
        ratios = [b / t for b, t in zip(base, times[name], strict=True)]
        rows.append(
            {
                "build": name,
                "patches_per_s": args.batch_size / statistics.median(times[name]),
                "patches_per_s_fastest": args.batch_size / min(times[name]),
                "speedup": statistics.median(ratios),
                "speedup_min": min(ratios),
                "speedup_max": max(ratios),
                "step_s": times[name],
            }
        )
    return rows


def measure_inference(args, device: torch.device) -> dict:
    """Encode (to a real stream) and decode ms of one image with the eager codec."""
    from coding.rnn_bitstream import compress, decompress

    codec = RNNCodec(width=args.width).to(device).eval()
    image = torch.rand(1, 3, *args.image_size, device=device)

    def median_ms(fn) -> float:
        fn()
        out = []
        for _ in range(args.repeats):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - start)
        return statistics.median(out) * 1e3

    with torch.inference_mode():
        stream = compress(codec, image, args.iterations)
        return {
            "encode_ms": median_ms(lambda: compress(codec, image, args.iterations)),
            "decode_ms": median_ms(lambda: decompress(codec, stream)),
            "bytes": len(stream),
        }


def photo_patches(names, count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random ``size``² crops (half of them h-flipped) of the bundled photos ``names``, in [0, 1]."""
    from datamodules.sample_images import load_sample_photo  # imports Lightning: only for --quality

    photos = [torch.from_numpy(load_sample_photo(n)).permute(2, 0, 1).float() / 255 for n in names]
    out = torch.empty(count, 3, size, size)
    for i in range(count):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        top = int(torch.randint(photo.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[2] - size + 1, (1,), generator=generator))
        crop = photo[:, top : top + size, left : left + size]
        out[i] = crop.flip(-1) if torch.rand(1, generator=generator) < 0.5 else crop
    return out


def measure_quality(args, device: torch.device, config: dict[str, bool]) -> dict:
    """Train eager (seeds 0 and 1) and the default build (seed 0) side by side; held-out PSNR in float32."""
    off = dict.fromkeys(SWITCHES, False)
    runs = {"eager unfused, init seed 0": (off, 0), "eager unfused, init seed 1": (off, 1)}
    runs[label("default", config) + ", init seed 0"] = (config, 0)
    from datamodules.sample_images import DEFAULT_VAL_PHOTOS, SAMPLE_PHOTOS  # the compressor demo's split

    train_photos = [n for n in SAMPLE_PHOTOS if n not in DEFAULT_VAL_PHOTOS]
    generator = torch.Generator().manual_seed(0)
    train = photo_patches(train_photos, args.quality * args.batch_size, 32, generator)
    held_out = photo_patches(DEFAULT_VAL_PHOTOS, 256, 32, generator).to(device)
    trainers = {}
    for name, (switches, seed) in runs.items():
        torch.manual_seed(seed)
        state = RNNCodec(width=args.width).state_dict()
        trainers[name] = Trainer(switches, state, args, device, lr=args.lr)
    losses: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.quality):
        batch = train[step * args.batch_size : (step + 1) * args.batch_size].to(device)
        for name, trainer in trainers.items():
            torch.manual_seed(1000 + step)  # the same binarizer draws in every run
            losses[name].append(trainer.train_step(batch))
    tail = max(1, args.quality // 10)
    rows = []
    for name, trainer in trainers.items():
        codec = trainer.codec.eval()
        with torch.no_grad():
            x_hats = codec(held_out, args.iterations)["x_hats"].clamp(0, 1)
        mse = (x_hats - held_out.unsqueeze(0)).square().mean(dim=(1, 2, 3, 4))
        psnr = (10 * torch.log10(1 / mse)).tolist()
        rows.append({"run": name, "final_loss": statistics.fmean(losses[name][-tail:]), "psnr": psnr,
                     "losses": losses[name]})  # fmt: skip
    return {"steps": args.quality, "tail": tail, "held_out": list(DEFAULT_VAL_PHOTOS), "rows": rows}


def print_quality(quality: dict, iterations: int) -> None:
    marks = sorted({1, max(1, iterations // 2), iterations})
    loss = f"training loss (mean of last {quality['tail']} steps)"
    psnr = {k: f"PSNR after {k} (dB)" for k in marks}
    rows = [{"run": r["run"], loss: f"{r['final_loss']:.4f}"} | {psnr[k]: f"{r['psnr'][k - 1]:.2f}" for k in marks}
            for r in quality["rows"]]  # fmt: skip
    title = (f"\ntraining quality: {quality['steps']} steps on the bundled photos' crops; held-out PSNR (float32 "
             f"evaluation) on 256 crops of {', '.join(quality['held_out'])}")  # fmt: skip
    print_table(["run", loss, *psnr.values()], rows, title, right=[loss, *psnr.values()])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=16, help="T, coding iterations per step")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per build")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per build first (compilation)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the config whose switches are 'default'")
    parser.add_argument("--alone", nargs="*", choices=SWITCHES, default=list(SWITCHES), metavar="SWITCH",
                        help=f"the switches timed on their own (default: all of {', '.join(SWITCHES)})")  # fmt: skip
    parser.add_argument("--inference", action="store_true", help="also time encode/decode of one image")
    parser.add_argument("--quality", type=int, default=0, metavar="STEPS",
                        help="also train eager (2 seeds) and default side by side for STEPS steps; compare")  # fmt: skip
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of --quality (the paper's)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the --quality loss-curve PNG")
    parser.add_argument("--image-size", type=int, nargs=2, default=[512, 768], metavar=("H", "W"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.quality < 0 or args.repeats < 1:
        parser.error("--quality must be >= 0 and --repeats >= 1")
    if args.quality and args.patch_size != 32:
        parser.error("--quality trains on 32×32 crops; leave --patch-size at 32")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = measure_training(args, device)
    load_after = os.getloadavg()
    print(f"recurrent codec training step: width {args.width}, batch {args.batch_size}, {args.patch_size}×"
          f"{args.patch_size} patches, T = {args.iterations}, {device}, {torch.get_num_threads()} threads, "
          f"{args.repeats} steps per build interleaved (+{args.warmup} warm-up); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")  # fmt: skip
    columns = ["build", "patches/s (median step)", "patches/s (fastest step)",
               "speed-up vs eager unfused (median; min–max)"]  # fmt: skip
    cells = [dict(zip(columns, (r["build"], f"{r['patches_per_s']:.2f}", f"{r['patches_per_s_fastest']:.2f}",
                                f"{r['speedup']:.2f}× ({r['speedup_min']:.2f}–{r['speedup_max']:.2f})"), strict=True))
             for r in rows]  # fmt: skip
    print_table(columns, cells, right=columns[1:])
    result = {"device": str(device), "width": args.width, "iterations": args.iterations,
              "batch_size": args.batch_size, "threads": torch.get_num_threads(), "load_before": load_before,
              "load_after": load_after, "training": rows}  # fmt: skip
    if args.inference:
        result["inference"] = measure_inference(args, device)
        print(f"encode {result['inference']['encode_ms']:.1f} ms, decode {result['inference']['decode_ms']:.1f} ms "
              f"({result['inference']['bytes']} bytes) for one {args.image_size[0]}×{args.image_size[1]} image")  # fmt: skip
    if args.quality:
        quality = measure_quality(args, device, config_switches(args.config))
        print_quality(quality, args.iterations)
        result["quality"] = quality
        if args.out:
            from plotting.plots import plot_training_curves

            png = plot_training_curves(
                {r["run"]: r["losses"] for r in quality["rows"]}, args.out / "rnn_training_quality.png",
                title=f"width {args.width}, batch {args.batch_size}, T = {args.iterations}", smooth=max(1, args.quality // 30),
            )  # fmt: skip
            print(f"loss curves: {png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
