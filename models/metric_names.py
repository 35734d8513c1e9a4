"""Metric names, in one place: ``{stage}/{name}``, the same name meaning the same quantity in every method.

So one W&B panel, one results record (:mod:`callbacks.results_record`) and ``benchmarks/split_report.py``
compare every split method. Plain strings (no Lightning), importable from ``callbacks``, ``benchmarks`` and
``lightning_modules`` alike.

Rates: ``bytes_per_image`` is the mean of each image's real encoded bytes (headers and side information
included) — the basis of every ratio; ``bpp`` is 8 · Σ bytes / Σ pixels of the images as given to the
wire. Accuracy: ``acc_top1`` / ``acc_top5`` (plain, micro-averaged top-k), ``map50`` (VOC07 11-point
mAP at IoU 0.5). Costs of one image: ``params_{edge,server,total}`` (parameters deployed),
``gmacs_{edge,server,total}`` (10⁹ multiply–accumulates), ``ms_per_image`` (whole pipeline, batch 1,
median), ``ms_edge`` / ``ms_server`` (each side alone).
"""

from __future__ import annotations

STAGES: tuple[str, ...] = ("train", "val", "test")

LOSS = "loss"
ACC_TOP1 = "acc_top1"
ACC_TOP5 = "acc_top5"
MAP50 = "map50"
BYTES_PER_IMAGE = "bytes_per_image"
BPP = "bpp"
PSNR = "psnr"
MS_SSIM = "ms_ssim"
COMPRESSION_RATIO = "compression_ratio"
PARAMS_EDGE = "params_edge"
PARAMS_SERVER = "params_server"
PARAMS_TOTAL = "params_total"
GMACS_EDGE = "gmacs_edge"
GMACS_SERVER = "gmacs_server"
GMACS_TOTAL = "gmacs_total"
MS_PER_IMAGE = "ms_per_image"
MS_EDGE = "ms_edge"
MS_SERVER = "ms_server"

ACCURACIES: tuple[str, ...] = (ACC_TOP1, ACC_TOP5, MAP50)
RATES: tuple[str, ...] = (BYTES_PER_IMAGE, BPP)
RECORD_COSTS: tuple[str, ...] = (PARAMS_EDGE, PARAMS_SERVER, GMACS_EDGE, GMACS_SERVER, MS_EDGE, MS_SERVER, MS_PER_IMAGE)
"""The split costs a results record carries (``callbacks.results_record``)."""
SPLIT_COSTS: tuple[str, ...] = (
    PARAMS_EDGE,
    PARAMS_SERVER,
    PARAMS_TOTAL,
    GMACS_EDGE,
    GMACS_SERVER,
    GMACS_TOTAL,
    MS_PER_IMAGE,
    MS_EDGE,
    MS_SERVER,
)


def metric(stage: str, name: str) -> str:
    """``{stage}/{name}``, e.g. ``metric("val", ACC_TOP1) == "val/acc_top1"``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return f"{stage}/{name}"


def psnr_at(k: int) -> str:
    """Per-iteration curve name: ``psnr_it{k}``."""
    return f"{PSNR}_it{k}"


def bpp_at(k: int) -> str:
    """Per-iteration curve name: ``bpp_it{k}``."""
    return f"{BPP}_it{k}"
