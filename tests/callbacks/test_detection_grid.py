"""Box drawing of the detection grid: ground truth green, predictions above the threshold red."""

from __future__ import annotations

import torch

from callbacks.detection_grid import draw_detections


def test_draws_ground_truth_and_confident_predictions_only():
    image = torch.zeros(3, 40, 40)
    pred = {
        "boxes": torch.tensor([[22.0, 22.0, 38.0, 38.0], [2.0, 25.0, 15.0, 38.0]]),
        "scores": torch.tensor([0.9, 0.1]),
        "labels": torch.tensor([7, 12]),
    }
    target = {"boxes": torch.tensor([[2.0, 2.0, 15.0, 15.0]]), "labels": torch.tensor([15])}
    out = draw_detections(image, pred, target, class_names=None, score_threshold=0.3)
    assert out.dtype == torch.uint8 and out.shape == (3, 40, 40)
    # the confident prediction's left edge (x = 22, rows 22..38; its label is written at the top) is red
    assert out[:, 36, 22].tolist() == [255, 0, 0]
    # the ground-truth box's left edge (x = 2, rows 2..15) is lime
    assert out[:, 10, 2].tolist() == [0, 255, 0]
    # the 0.1-score prediction is not drawn: its left edge (x = 2, rows 25..38) stays black
    assert out[:, 32, 2].tolist() == [0, 0, 0]
    # nothing between the boxes is touched
    assert out[:, 20, 10].tolist() == [0, 0, 0]
