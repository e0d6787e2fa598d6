"""Simulated clicks: where a user correcting one region would click next.

Interactive models are trained and scored with simulated clicks placed in the current prediction's
largest error, at the point of that error farthest from its border (Sakinis et al. 2019; MONAI's
DeepGrow and DeepEdit draw it at random, weighted by the distance to the error's border). The click then
lands where a reviewer's eye goes first, not on an ambiguous edge. A missed part (false negative)
gets a positive click, a spurious part (false positive) a negative one.

The click-training loop, the click benchmark and the refinement worker share :func:`next_click` and
:func:`click_maps`, the network's view of the clicks; nothing here knows the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from magms.sizerules import connected_components

__all__ = ["Click", "ClickPoint", "CLICK_SIGMA", "click_maps", "neighbourhood", "next_click"]

#: Width (standard deviation, in voxels of the working grid) of the Gaussian that marks a click.
CLICK_SIGMA = 2.0


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
    error = np.nonzero(prediction ^ truth)
    if not error[0].size:
        return None
    # only the errors' box, and a voxel around it, matters: a whole 1 mm head is otherwise seconds of work per click
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in error)
    prediction, truth = prediction[box], truth[box]
    missed = _deepest_point(truth & ~prediction, spacing)
    spurious = _deepest_point(prediction & ~truth, spacing)
    if spurious is None or (missed is not None and missed[1] >= spurious[1]):
        index, depth, positive = missed[0], missed[1], True
    else:
        index, depth, positive = spurious[0], spurious[1], False
    return Click(tuple(int(i + b.start) for i, b in zip(index, box)), positive, depth)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class ClickPoint:
    """A click as the network reads it: where, which sign, which region.

    Attributes:
        index: the point as a (possibly fractional) voxel index into the working grid.
        positive: True for "this belongs to the region", False for "this does not".
        region: index of the region in the label scheme's ``regions``.
    """

    index: tuple[float, float, float]
    positive: bool
    region: int


def click_maps(points: Sequence[ClickPoint], shape: Sequence[int], regions: int, origin: Sequence[int] = (0, 0, 0),
               sigma: float = CLICK_SIGMA) -> np.ndarray:
    """The click maps of a window: a Gaussian at each click, in the positive or negative channel of its region.

    Args:
        points: the clicks, indexed into the whole grid.
        shape: (D, H, W) of the window.
        regions: number of regions; the maps have ``2 * regions`` channels, region r's positive clicks in channel
            ``2 r`` and its negative ones in ``2 r + 1``.
        origin: the window's first voxel in the whole grid; a click outside the window still marks the
            voxels of the window within three ``sigma`` of it.
        sigma: the Gaussian's width in voxels.
    Returns:
        (2 * regions, D, H, W) float32, overlapping clicks added (a click repeated on one spot insists twice as much);
        all zero without a click.
    Raises:
        ValueError: a click names a region outside ``0 .. regions - 1``.
    """
    maps = np.zeros((2 * regions, *shape), np.float32)
    for point in points:
        if not 0 <= point.region < regions:
            raise ValueError(f"click region {point.region} is not one of the {regions} regions")
        near = neighbourhood(np.asarray(point.index, float) - np.asarray(origin, float), 3 * sigma, shape)
        if near is None:
            continue
        box, d2 = near
        maps[(2 * point.region + (0 if point.positive else 1), *box)] += np.exp(-d2 / (2 * sigma**2)).astype(np.float32)
    return maps


def neighbourhood(centre: Sequence[float], reach: float, shape: Sequence[int]) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The box of an array of ``shape`` within ``reach`` voxels of a (fractional) point, and each of its voxels'
    squared distance to the point; None when the box misses the array.
    """
    centre = np.asarray(centre, float)
    steps = int(np.ceil(reach))
    lo = np.maximum(np.floor(centre).astype(int) - steps, 0)
    hi = np.minimum(np.floor(centre).astype(int) + steps + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    axes = [np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)]
    d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), d2
