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


# ------------------------------------------------------------------------------------------------
# the network's view of the clicks


def test_click_maps_put_each_click_in_its_region_and_sign_channel_and_are_zero_without_clicks():
    from magms.clicks import ClickPoint, click_maps

    assert not click_maps([], (8, 9, 10), 3).any() and click_maps([], (8, 9, 10), 3).shape == (6, 8, 9, 10)
    maps = click_maps([ClickPoint((4.0, 4.0, 4.0), True, 1), ClickPoint((2.0, 3.0, 4.0), False, 2)], (8, 9, 10), 3)
    assert maps[2, 4, 4, 4] == 1.0 and maps[5, 2, 3, 4] == 1.0  # region 1 positive: channel 2; region 2 negative: 5
    assert not maps[[0, 1, 3, 4]].any()
    assert np.unravel_index(maps[2].argmax(), maps[2].shape) == (4, 4, 4) and 0 < maps[2, 4, 4, 7] < 1  # a Gaussian


def test_a_click_beyond_the_window_marks_the_window_edge_near_it_and_a_far_one_nothing():
    from magms.clicks import CLICK_SIGMA, ClickPoint, click_maps

    near = click_maps([ClickPoint((10.0, 2.0, 2.0), True, 0)], (5, 5, 5), 1, origin=(7, 0, 0))
    assert near[0, 3, 2, 2] == 1.0  # index 10 is voxel 3 of a window starting at 7
    beyond = click_maps([ClickPoint((-2.0, 2.0, 2.0), True, 0)], (5, 5, 5), 1)
    assert 0 < beyond[0, 0, 2, 2] < 1 and beyond[0, 0, 2, 2] == pytest.approx(np.exp(-4 / (2 * CLICK_SIGMA**2)))
    assert not click_maps([ClickPoint((-40.0, 2.0, 2.0), True, 0)], (5, 5, 5), 1).any()
    with pytest.raises(ValueError, match="region 3"):
        click_maps([ClickPoint((1.0, 1.0, 1.0), True, 3)], (5, 5, 5), 3)
