"""The FBNet probability heat map shows near-uniform probabilities (deviation from 1/9 on a scale sized
to the data), and the chosen-blocks figure is drawn."""

from __future__ import annotations

import numpy as np
import pytest

from plotting.fbnet_plots import plot_chosen_blocks, plot_probabilities, probability_deviation


def test_a_near_uniform_search_spans_the_whole_colour_scale():
    # an early search: every probability within 0.004 of 1/9; on a 0–1 scale all cells were the same colour
    probs = np.full((3, 9), 1 / 9)
    probs[0, 2] += 0.004
    probs[0, 5] -= 0.004
    probs[2, 8] += 0.001
    probs[2, 0] -= 0.001
    deviation, half = probability_deviation(probs)
    assert half == pytest.approx(0.004)
    assert deviation[0, 2] == pytest.approx(half) and deviation[0, 5] == pytest.approx(-half)
    assert deviation[1].tolist() == pytest.approx([0.0] * 9)
    # a fully uniform map still gets a non-degenerate scale; a decided layer spans to 1 − 1/9
    assert probability_deviation(np.full((2, 9), 1 / 9))[1] == 1e-4
    decided = np.eye(9)[:2]
    assert probability_deviation(decided)[1] == pytest.approx(8 / 9)


def test_the_figures_are_written(tmp_path):
    png = plot_probabilities(np.full((4, 9), 1 / 9), tmp_path / "p.png", "epoch 0")
    assert png.stat().st_size > 0
    blocks = plot_chosen_blocks({"a": ["skip", "k3_e6"], "b": ["k5_e1_g2"]}, tmp_path / "b.png")
    assert blocks.stat().st_size > 0
