"""MACs saved by sharing one frozen CNN front between tasks (Hiraga, Nakada, Nakajima, eq. 1–4).

For each trunk (VGG16 split after pool4, MobileNetV2 after its 6th inverted residual) two task models
are built exactly as ``SharedTrunkTask`` trains them — the ImageNet classifier and SSD224 (wiring in
:mod:`models.split_backbones`) — and their multiply–accumulates at 224×224 counted with torch's FLOP
counter (:mod:`models.mac_count`; convolutions and linear layers, the models built on the meta device so
nothing is allocated):

    eq. 1  MAC(models) = Σ_k MAC(model_k)                                (each task model alone)
    eq. 2  MAC(model_k) = MAC(front) + MAC(model_k,latter)
    eq. 3  MAC(models) = MAC(CNN_shared) + Σ_k MAC(model_k,latter)        (one shared front)
    saved  = eq. 1 − eq. 3 = (n − 1) · MAC(CNN_shared), as a % of eq. 1

(The paper's eq. 4 prints "MAC(CNN_shared) − Σ MAC(latter)"; the percentages it reports are the
difference of eq. 1 and eq. 3, which is what is computed here.) The paper: 42.31 % for VGG16 (abstract
42.30 %) and 9.77 % for MobileNetV2 (abstract 10.83 %). Its MobileNetV2 SSD wiring is ambiguous; the
alternative reading (VGG's conv5/fc6/fc7 at 14×14 behind ``features[7:14]``, row ``mobilenet_v2_alt14``) is printed too, to show
which reading its 9.77 % fits.

    python benchmarks/shared_trunk_macs.py [--image-size 224] [--out macs.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from models.split_backbones import MOBILENET_SSD_END, mac_counts, split_classifier, split_ssd224  # noqa: E402

PAPER_SAVED = {"vgg16": (42.31, 42.30), "mobilenet_v2": (9.77, 10.83)}
"""Saved % of the two separate models' MACs: (section 5 / section 6, abstract)."""


def shared_trunk_macs(
    trunk: str, image_size: int = 224, width: float = 1.0, mobilenet_server_end: int = MOBILENET_SSD_END
) -> dict[str, float]:
    """Eq. 1–3 for classification + SSD detection sharing the front of ``trunk``: MACs of each part and
    the saved share (%)."""
    with torch.device("meta"):
        classifier = split_classifier(trunk, 1000, None, width)
        detector = split_ssd224(trunk, 21, None, width, image_size, mobilenet_server_end=mobilenet_server_end)
        example = torch.zeros(1, 3, image_size, image_size)
        cls, det = mac_counts(classifier, example), mac_counts(detector, example)
    if cls["edge"] != det["edge"]:
        raise RuntimeError(f"the two tasks' fronts differ: {cls['edge']} vs {det['edge']} MACs")
    separate = cls["total"] + det["total"]  # eq. 1
    shared = cls["edge"] + cls["server"] + det["server"]  # eq. 3
    return {
        "front": cls["edge"],
        "classification": cls["total"],
        "classification_latter": cls["server"],
        "detection": det["total"],
        "detection_latter": det["server"],
        "separate": separate,
        "shared": shared,
        "saved": separate - shared,
        "saved_percent": 100 * (separate - shared) / separate,
    }


def run(image_size: int = 224) -> dict[str, dict[str, float]]:
    results = {trunk: shared_trunk_macs(trunk, image_size) for trunk in ("vgg16", "mobilenet_v2")}
    results["mobilenet_v2_alt14"] = shared_trunk_macs(  # features[7:14] → conv5 at 14×14
        "mobilenet_v2", image_size, mobilenet_server_end=14
    )
    return results


def print_table(results: dict[str, dict[str, float]], console: Console) -> None:
    table = Table(title="MACs of classification + SSD224 with a shared front (G = 10⁹ multiply–accumulates)")
    for column in ("trunk", "front", "cls latter", "cls alone", "det latter", "det alone", "eq.1 separate",
                   "eq.3 shared", "saved", "paper saved"):  # fmt: skip
        table.add_column(column, justify="left" if column == "trunk" else "right")
    for name, r in results.items():
        paper = PAPER_SAVED.get(name)
        table.add_row(
            name,
            *(
                f"{r[k] / 1e9:.3f}"
                for k in (
                    "front",
                    "classification_latter",
                    "classification",
                    "detection_latter",
                    "detection",
                    "separate",
                    "shared",
                )
            ),  # fmt: skip
            f"{r['saved_percent']:.2f} %",
            f"{paper[0]:.2f} % ({paper[1]:.2f} %)" if paper else "—",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=224, help="square input side (the paper: 224)")
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    results = run(args.image_size)
    print_table(results, Console(width=170))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
