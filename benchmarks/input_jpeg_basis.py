"""The "圧縮率" basis of the shared-trunk paper (Hiraga et al.): which JPEG quality its input sizes imply.

The paper's ratio is feature bytes as a % of the input image as JPEG, resized to 224×224; it gives no
quality, but its Table 3 does give the total: 485.44 MB for the 50,000 ILSVRC-2012 validation inputs, i.e.
9,709 bytes per 224×224 JPEG. This prints the mean bytes of 224×224 JPEGs of real photos (scikit-image's
bundled photos, :mod:`datamodules.sample_images`; plain resize as the paper's eq. 5–6, and torchvision's
resize 256 + centre crop 224) at each quality, their ratio to Table 3's mean, and the quality closest to
it; ``SharedTrunkTask``'s default ``input_jpeg_quality`` (70) must lie within 10 % with either resize
(``tests/benchmarks/test_input_jpeg_basis.py``).

    python benchmarks/input_jpeg_basis.py [--qualities 50 60 70 75 80 85 90 95] [--out basis.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from coding.image_codecs import encode_image
from datamodules.classification_transforms import eval_transform, plain_resize_transform
from datamodules.sample_images import SAMPLE_PHOTOS, load_sample_photo
from lightning_modules.shared_trunk import INPUT_JPEG_QUALITY, PAPER_INPUT_JPEG_BYTES

QUALITIES = (50, 60, 70, 75, 80, 85, 90, 95)
RESIZES = {"plain": plain_resize_transform, "crop": eval_transform}


def mean_jpeg_bytes(qualities: list[int], photos: list[str], image_size: int = 224) -> dict[str, dict[int, float]]:
    """Mean bytes of the photos' ``image_size``² inputs as JPEG (Pillow, 4:2:0), per resize and quality."""
    out: dict[str, dict[int, float]] = {}
    for resize, transform in RESIZES.items():
        inputs = [transform(image_size)(image=load_sample_photo(name))["image"] for name in photos]
        out[resize] = {q: statistics.mean(len(encode_image(x, "jpeg", q)) for x in inputs) for q in qualities}
    return out


def closest_quality(means: dict[int, float], target: float = PAPER_INPUT_JPEG_BYTES) -> int:
    return min(means, key=lambda q: abs(means[q] - target))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qualities", nargs="+", type=int, default=list(QUALITIES))
    p.add_argument("--photos", nargs="+", choices=SAMPLE_PHOTOS, default=list(SAMPLE_PHOTOS))
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    means = mean_jpeg_bytes(sorted(set(args.qualities)), args.photos)
    table = Table(title=f"mean bytes of {len(args.photos)} photos as 224×224 JPEG; the paper's Table 3: "
                        f"{PAPER_INPUT_JPEG_BYTES:,.0f} bytes per input")  # fmt: skip
    table.add_column("quality", justify="right")
    for resize in RESIZES:
        table.add_column(f"{resize}: bytes", justify="right")
        table.add_column(f"{resize}: ÷ Table 3", justify="right")
    for q in sorted(means["plain"]):
        cells = []
        for resize in RESIZES:
            cells += [f"{means[resize][q]:,.0f}", f"{means[resize][q] / PAPER_INPUT_JPEG_BYTES:.3f}"]
        mark = " (default)" if q == INPUT_JPEG_QUALITY else ""
        table.add_row(f"{q}{mark}", *cells)
    console = Console(width=140)
    console.print(table)
    closest = {resize: closest_quality(m) for resize, m in means.items()}
    console.print(f"closest to Table 3: {closest}; default input_jpeg_quality = {INPUT_JPEG_QUALITY}")
    results = {"table3_bytes": PAPER_INPUT_JPEG_BYTES, "photos": args.photos, "mean_bytes": means,
               "closest": closest, "default": INPUT_JPEG_QUALITY}  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
