"""Simulated clicks: where a user correcting one region would click next.

Interactive models are trained and scored with simulated clicks placed in the current prediction's
largest error, at the point of that error farthest from its border (Sakinis et al. 2019; MONAI's
DeepGrow and DeepEdit draw it at random, weighted by the distance to the error's border). The click then
lands where a reviewer's eye goes first, not on an ambiguous edge. A missed part (false negative)
gets a positive click, a spurious part (false positive) a negative one.

The click-training loop and the click benchmark of interactive refinement are to share
:func:`next_click`; nothing here knows the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from magms.sizerules import connected_components

__all__ = ["Click", "next_click"]


@dataclasses.dataclass(frozen=True)
class Click:
    """One click on a region.

    Attributes:
        index: the clicked voxel, as an index into the arrays it was placed on.
        positive: True adds the voxel's surroundings to the region, False removes them.
        depth_mm: distance from the click to the error's border, in the units of the spacing.
    """

    index: tuple[int, int, int]
    positive: bool
    depth_mm: float


def _deepest_point(error: np.ndarray, spacing: Sequence[float]) -> tuple[tuple[int, int, int], float] | None:
    """The voxel of ``error``'s largest connected component farthest from the component's border (the volume's
    edge counts as border), and that distance; None for an empty mask."""
    components = connected_components(error)
    sizes = np.bincount(components.ravel())[1:]
    if sizes.size == 0:
        return None
    largest = components == (int(np.argmax(sizes)) + 1)
    # padded with background so that an error touching the volume's edge is not infinitely deep there
    distance = ndimage.distance_transform_edt(np.pad(largest, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    index = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return (int(index[0]), int(index[1]), int(index[2])), float(distance[index])


def next_click(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Click | None:
    """The click that corrects the larger of the missed and the spurious part of one region.

    The largest connected component of the false negatives and of the false positives are each
    measured by how deep their deepest voxel lies (distance to the component's border); the click goes
    to the deeper one's deepest voxel, positive for a missed part (a tie goes to the missed part).

    Args:
        prediction: (H, W, D) bool, the region as predicted now.
        truth: (H, W, D) bool, the region as it should be.
        spacing: voxel size along the three axes, so that depth is measured in millimetres.
    Returns:
        The click, or None when the prediction equals the truth.
    Raises:
        ValueError: the arrays are not 3-D or differ in shape.
    """
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if prediction.ndim != 3 or prediction.shape != truth.shape:
        raise ValueError(f"next_click needs two 3-D masks of one shape, got {prediction.shape} and {truth.shape}")
    missed = _deepest_point(truth & ~prediction, spacing)
    spurious = _deepest_point(prediction & ~truth, spacing)
    if missed is None and spurious is None:
        return None
    if spurious is None or (missed is not None and missed[1] >= spurious[1]):
        return Click(missed[0], True, missed[1])
    return Click(spurious[0], False, spurious[1])
