"""Simulated clicks (magms.clicks): the deepest point of the larger error, its sign, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from magms.clicks import next_click


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius**2


def test_a_missed_region_gets_a_positive_click_at_its_centre():
    truth = ball((32, 32, 32), (12, 15, 18), 6)
    click = next_click(np.zeros_like(truth), truth)
    assert click.positive and click.index == (12, 15, 18)
    assert 6 <= click.depth_mm <= 7


def test_a_spurious_blob_deeper_than_the_miss_gets_a_negative_click_inside_it():
    truth = ball((40, 40, 40), (10, 10, 10), 6)
    prediction = truth & ~ball(truth.shape, (10, 10, 15), 2)  # a small miss at the border
    prediction |= ball(truth.shape, (30, 28, 26), 5)  # a far larger false positive
    click = next_click(prediction, truth)
    assert not click.positive and click.index == (30, 28, 26)


def test_the_largest_component_is_clicked_not_the_first():
    truth = np.zeros((40, 20, 20), bool)
    truth[2:5, 2:5, 2:5] = True  # small miss
    truth[20:34, 4:16, 4:16] = True  # large miss
    click = next_click(np.zeros_like(truth), truth)
    assert click.positive and 20 <= click.index[0] < 34


def test_depth_is_measured_in_millimetres_and_the_volume_edge_is_a_border():
    truth = np.zeros((10, 10, 40), bool)
    truth[:, :, 10:30] = True  # touches four faces of the volume
    click = next_click(np.zeros_like(truth), truth, spacing=(1.0, 1.0, 0.5))
    # 10 voxels across x and y: at most 5 mm deep there; along z 20 voxels of 0.5 mm
    assert click.depth_mm == pytest.approx(5.0)
    assert 4 <= click.index[0] <= 5 and 4 <= click.index[1] <= 5


def test_a_perfect_prediction_needs_no_click_and_bad_arrays_are_named():
    truth = ball((16, 16, 16), (8, 8, 8), 4)
    assert next_click(truth, truth) is None
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        next_click(truth[0], truth[0])
    with pytest.raises(ValueError, match="one shape"):
        next_click(truth, truth[:8])
