"""VOC AP against hand-computed values, both definitions (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.voc_eval import VOCMeanAveragePrecision, class_average_precision, evaluate_detections, voc_ap

BOX = [0.0, 0.0, 10.0, 10.0]
FAR = [50.0, 50.0, 60.0, 60.0]


def ap(dets: list[tuple[str, list[float], float]], gts: list[tuple[str, list[float], bool]]) -> tuple[float, float]:
    """(11-point AP, area AP) of one class; dets: (image, box, score), gts: (image, box, difficult)."""
    result = class_average_precision(
        np.array([d[1] for d in dets]).reshape(-1, 4),
        np.array([d[2] for d in dets]),
        np.array([d[0] for d in dets]),
        np.array([g[1] for g in gts]).reshape(-1, 4),
        np.array([g[2] for g in gts]),
        np.array([g[0] for g in gts]),
    )
    return result.ap_voc07, result.ap_area


def test_perfect() -> None:
    # two boxes, both found: recall [.5, 1], precision [1, 1]
    # 11-point: precision 1 at every threshold -> 1. area: .5 * 1 + .5 * 1 = 1
    assert ap([("a", BOX, 0.9), ("b", BOX, 0.8)], [("a", BOX, False), ("b", BOX, False)]) == (1.0, 1.0)


def test_missed() -> None:
    # four boxes, two found: recall [.25, .5], precision [1, 1]
    # 11-point: t = 0, .1, .2, .3, .4, .5 have precision 1, t >= .6 none: 6/11
    # area: .25 * 1 + .25 * 1 + .5 * 0 = .5
    gts = [(im, BOX, False) for im in "abcd"]
    ap07, area = ap([("a", BOX, 0.9), ("b", BOX, 0.8)], gts)
    assert ap07 == pytest.approx(6 / 11) and area == pytest.approx(0.5)


def test_duplicate_is_a_false_positive() -> None:
    # boxes in a and b; detections a (.9, TP), a again (.8, duplicate -> FP), b (.7, TP)
    # cumulative TP [1, 1, 2], FP [0, 1, 1]: recall [.5, .5, 1], precision [1, .5, 2/3]
    # 11-point: t <= .5 (6 thresholds) max precision 1; t >= .6 (5) 2/3 -> (6 + 10/3) / 11 = 28/33
    # area: envelope [1, 2/3, 2/3]: .5 * 1 + .5 * 2/3 = 5/6
    dets = [("a", BOX, 0.9), ("a", BOX, 0.8), ("b", BOX, 0.7)]
    ap07, area = ap(dets, [("a", BOX, False), ("b", BOX, False)])
    assert ap07 == pytest.approx(28 / 33) and area == pytest.approx(5 / 6)


def test_difficult_objects_are_ignored() -> None:
    # image a: one normal box, one difficult box (detected first, .95) and one difficult box never detected.
    # The detection on the difficult box is neither TP nor FP; the missed difficult box does not count.
    # npos = 1; TP [0, 1], FP [0, 0]: recall [0, 1], precision [0, 1] -> 11-point 1, area 1 * 1 = 1
    gts = [("a", BOX, False), ("a", FAR, True), ("a", [20.0, 20.0, 30.0, 30.0], True)]
    assert ap([("a", FAR, 0.95), ("a", BOX, 0.9)], gts) == (1.0, 1.0)
    # counted as a false positive instead, it would give precision [0, .5]: both APs .5
    assert ap([("a", FAR, 0.95), ("a", BOX, 0.9)], [("a", BOX, False)]) == (0.5, 0.5)


def test_a_class_with_only_difficult_boxes_has_no_ap() -> None:
    ap07, area = ap([("a", BOX, 0.9)], [("a", BOX, True)])
    assert math.isnan(ap07) and math.isnan(area)


def test_detections_are_ranked_by_score_not_input_order() -> None:
    # given in the order b (.7), a-duplicate (.8), a (.9): ranked a, a-dup, b as in the duplicate case
    dets = [("b", BOX, 0.7), ("a", BOX, 0.8), ("a", BOX, 0.9)]
    ap07, area = ap(dets, [("a", BOX, False), ("b", BOX, False)])
    assert ap07 == pytest.approx(28 / 33) and area == pytest.approx(5 / 6)
    # a high-scoring false positive given last: ranked first. TP [0, 1, 1], FP [1, 0, 0]
    # recall [0, .5, 1], precision [0, .5, 2/3]: every threshold's best precision is 2/3 -> 2/3;
    # area: envelope 2/3 over recall 0..1 -> 2/3. (Unsorted it would be 28/33 and 5/6.)
    dets = [("b", BOX, 0.7), ("a", BOX, 0.8), ("c", BOX, 0.9)]
    ap07, area = ap(dets, [("a", BOX, False), ("b", BOX, False)])
    assert ap07 == pytest.approx(2 / 3) and area == pytest.approx(2 / 3)


def test_iou_threshold_is_inclusive_at_one_half() -> None:
    # [0, 0, 10, 5] against [0, 0, 10, 10]: intersection 50, union 100 -> IoU exactly .5: a match
    assert ap([("a", [0.0, 0.0, 10.0, 5.0], 0.9)], [("a", BOX, False)]) == (1.0, 1.0)
    # [0, 0, 10, 4.9]: IoU .49 -> a false positive; recall 0 -> AP 0
    assert ap([("a", [0.0, 0.0, 10.0, 4.9], 0.9)], [("a", BOX, False)]) == (0.0, 0.0)


def _found(found: int, total: int = 10) -> list:
    """Detections (image, box, score) that find the first ``found`` of ``total`` one-box images, best first."""
    return [(str(i), BOX, 1.0 - i / 100) for i in range(found)]


@pytest.mark.parametrize(
    ("found", "voc_eval", "exact"),
    [
        # recall [.1, .2, .3], precision 1. py-faster-rcnn's thresholds np.arange(0, 1.1, 0.1) hold
        # 0.30000000000000004 > 3/10, so only t = 0, .1, .2 count: 3/11; exact tenths also count .3: 4/11
        (3, 3 / 11, 4 / 11),
        # recall up to 6/10: voc_eval counts 0 … .5 (6 points; 0.6000000000000001 > .6): 6/11; exact 7/11
        (6, 6 / 11, 7 / 11),
        # recall up to 7/10: voc_eval counts 0 … .6 (0.6000000000000001 < .7) but not 0.7000000000000001: 7/11
        (7, 7 / 11, 8 / 11),
        # recall 5/10: both conventions agree (6 points: 0 … .5)
        (5, 6 / 11, 6 / 11),
    ],
)
def test_eleven_point_follows_py_faster_rcnn_by_default_and_exact_tenths_on_request(found, voc_eval, exact) -> None:
    gts = [(str(i), BOX, False) for i in range(10)]
    dets = _found(found)
    args = (
        np.array([d[1] for d in dets]),
        np.array([d[2] for d in dets]),
        np.array([d[0] for d in dets]),
        np.array([g[1] for g in gts]),
        np.array([g[2] for g in gts]),
        np.array([g[0] for g in gts]),
    )
    assert class_average_precision(*args).ap_voc07 == pytest.approx(voc_eval, abs=1e-12)
    assert class_average_precision(*args, eleven_point="exact").ap_voc07 == pytest.approx(exact, abs=1e-12)
    for convention, expected in (("voc_eval", voc_eval), ("exact", exact)):
        metric = VOCMeanAveragePrecision(eleven_point=convention)
        metric.update(
            [_pred([BOX], [s], [1]) for _, _, s in dets] + [_pred([], [], []) for _ in range(10 - found)],
            [_target([BOX], [1], [False]) for _ in range(10)],
        )
        assert metric.compute()["map50"].item() == pytest.approx(expected, abs=1e-6)


def py_faster_rcnn_voc07_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """py-faster-rcnn's ``voc_ap(rec, prec, use_07_metric=True)``, verbatim apart from names."""
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
        ap = ap + p / 11.0
    return ap


def test_default_eleven_point_equals_py_faster_rcnn_on_random_curves() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        npos = int(rng.choice([10, 20, int(rng.integers(1, 30))]))  # 10, 20: recalls hit .3, .6, .7 exactly
        tp = rng.random(int(rng.integers(1, 60))) < 0.5
        ctp = np.cumsum(tp)
        rec, prec = ctp / npos, ctp / np.arange(1, len(tp) + 1)
        assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(py_faster_rcnn_voc07_ap(rec, prec), abs=1e-12)


def test_unknown_eleven_point_convention_is_refused() -> None:
    with pytest.raises(ValueError, match="eleven_point"):
        VOCMeanAveragePrecision(eleven_point="matlab")


def test_map_is_the_mean_over_classes_with_boxes() -> None:
    # class 1 perfect (1), class 2 half its boxes found (11-point 6/11 and area .5 as in test_missed
    # with two of four), class 3 only difficult (excluded), class 4 only detections (excluded)
    det = [(1, "a", BOX, 0.9), (2, "a", BOX, 0.9), (2, "b", BOX, 0.8), (4, "a", FAR, 0.9)]
    gt = [(1, "a", BOX, False), (3, "a", FAR, True)] + [(2, im, BOX, False) for im in "abcd"]
    result = evaluate_detections(
        np.array([d[2] for d in det]), np.array([d[3] for d in det]), np.array([d[0] for d in det]),
        np.array([d[1] for d in det]), np.array([g[2] for g in gt]), np.array([g[0] for g in gt]),
        np.array([g[3] for g in gt]), np.array([g[1] for g in gt]),
    )  # fmt: skip
    assert set(result["ap50_voc07"]) == {1, 2}
    assert result["map50"] == pytest.approx((1 + 6 / 11) / 2)
    assert result["map50_area"] == pytest.approx((1 + 0.5) / 2)


def _pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores), "labels": torch.tensor(labels)}


def _target(boxes, labels, difficult):
    return {
        "boxes": torch.tensor(boxes).reshape(-1, 4),
        "labels": torch.tensor(labels),
        "difficult": torch.tensor(difficult),
    }


def test_metric_accumulates_images_across_updates_like_the_duplicate_case() -> None:
    metric = VOCMeanAveragePrecision()
    # same images as test_duplicate_is_a_false_positive, fed in two updates
    metric.update([_pred([BOX, BOX], [0.9, 0.8], [1, 1])], [_target([BOX], [1], [False])])
    metric.update([_pred([BOX], [0.7], [1])], [_target([BOX], [1], [False])])
    out = metric.compute()
    assert out["map50"].item() == pytest.approx(28 / 33, abs=1e-6)
    assert out["map50_area"].item() == pytest.approx(5 / 6, abs=1e-6)
    metric.reset()
    metric.update([_pred([BOX], [0.9], [1])], [_target([BOX], [1], [False])])
    assert metric.compute()["map50"].item() == pytest.approx(1.0)


def test_metric_reports_torchmetrics_beside_voc() -> None:
    metric = VOCMeanAveragePrecision(compare_torchmetrics=True)
    # image 1: its box found; image 2: its normal box missed, its detection on a difficult box
    metric.update(
        [_pred([BOX], [0.9], [3]), _pred([FAR], [0.8], [3])],
        [_target([BOX], [3], [False]), _target([BOX, FAR], [3, 3], [False, True])],
    )
    out = metric.compute()
    # class 3: boxes (a, BOX) found, (b, BOX) missed, (b, FAR) difficult and its detection ignored:
    # recall [.5], precision [1] -> 11-point 6/11, area .5; COCO 101-point: recall thresholds 0..0.5 -> 51/101
    assert out["map50"].item() == pytest.approx(6 / 11, abs=1e-6)
    assert out["map50_area"].item() == pytest.approx(0.5, abs=1e-6)
    assert out["map50_torchmetrics"].item() == pytest.approx(51 / 101, abs=1e-4)
