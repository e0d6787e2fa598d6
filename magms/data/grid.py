"""The working grid of a case, in SimpleITK: what inference resamples onto and back from.

Training brings its cases onto the bundle's working grid with MONAI's ``Orientation`` and
``Spacing`` (:func:`magms.data.tensors.spatial_transform`). Inference builds the same grid here and
resamples with SimpleITK, which needs neither torch nor MONAI (seconds of start-up) and resamples
only the part of the case it must. The grid is MONAI's:

* **orientation**: the reference's voxel axes permuted and flipped so that they run along the
  bundle's axis codes (``RAS``), each voxel axis taken by the world axis it runs nearest to;
* **spacing**: the same directions and first voxel centre, the bundle's spacing, and
  ``round((n - 1) * old / new) + 1`` voxels along each axis;
* **interpolation**: linear, the nearest voxel beyond the outermost voxel centres (MONAI's border
  padding), and back onto the reference grid linear too.

``Testing/test_grid.py`` keeps the two equal on real and on oblique, anisotropic images.

Arrays here are in MONAI's (X, Y, Z) order along the working grid's axes; SimpleITK's arrays are
(z, y, x), hence the transposes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from magms.config import PreprocessConfig

__all__ = ["ras_affine", "working_grid", "to_working", "to_reference", "reference_region"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# MONAI axis code -> (world axis in RAS, direction)
_CODES = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def ras_affine(image: sitk.Image) -> np.ndarray:
    """The image's voxel -> RAS world affine (4 x 4): MONAI's convention, which
    :func:`magms.data.tensors.sitk_to_metatensor` gives its MetaTensors."""
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin())
    return affine


def _nearest_world_axes(linear: np.ndarray) -> list[int]:
    """The world axis each voxel axis runs nearest to, each world axis taken once: the axis with the
    clearest direction chooses first (as nibabel's ``io_orientation``, which MONAI uses)."""
    unit = np.abs(linear / np.linalg.norm(linear, axis=0))
    taken: list[int | None] = [None] * 3
    free = [True] * 3
    for voxel_axis in np.argsort(-unit.max(axis=0), kind="stable"):
        order = np.argsort(-unit[:, voxel_axis], kind="stable")
        taken[voxel_axis] = next(int(w) for w in order if free[w])
        free[taken[voxel_axis]] = False
    return [int(w) for w in taken]  # type: ignore[arg-type]


def working_grid(reference: sitk.Image, pre: PreprocessConfig) -> sitk.Image:
    """An empty image (one byte per voxel) with the geometry of ``reference``'s working grid.

    Args:
        reference: the case's reference input.
        pre: the bundle's preprocessing: ``orientation`` (axis codes such as ``RAS``) and ``spacing``
            (mm, or None to keep the reference's).
    """
    affine = ras_affine(reference)
    size = np.asarray(reference.GetSize())
    world_of = _nearest_world_axes(affine[:3, :3])
    columns, shape, first = [], [], np.zeros(3)
    for code in pre.orientation.upper():
        world, direction = _CODES[code]
        voxel_axis = world_of.index(world)
        column = affine[:3, voxel_axis]
        if np.sign(column[world]) != direction:  # flipped: the first voxel is the old last one
            column = -column
            first[voxel_axis] = size[voxel_axis] - 1
        columns.append(column)
        shape.append(size[voxel_axis])
    linear = np.stack(columns, axis=1)
    origin = affine[:3, :3] @ first + affine[:3, 3]
    old = np.linalg.norm(linear, axis=0)
    new = old if pre.spacing is None else np.asarray(pre.spacing, dtype=float)
    out_shape = np.round((np.asarray(shape) - 1) * old / new + 1.0).astype(int)
    grid = sitk.Image([int(n) for n in out_shape], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in new])
    grid.SetDirection((_LPS_TO_RAS @ (linear / old)).ravel().tolist())
    grid.SetOrigin((_LPS_TO_RAS @ origin).tolist())
    return grid


def to_working(images: Sequence[sitk.Image], grid: sitk.Image) -> np.ndarray:
    """Each image resampled onto the working grid, linearly (the nearest voxel beyond its own grid).

    Returns:
        (M, X, Y, Z) float32, one channel per image.
    """
    resample = sitk.ResampleImageFilter()
    resample.SetReferenceImage(grid)
    resample.SetInterpolator(sitk.sitkLinear)
    resample.SetOutputPixelType(sitk.sitkFloat32)
    # beyond the outermost voxel centres (half a voxel at most), the nearest voxel: MONAI's border padding
    resample.SetUseNearestNeighborExtrapolator(True)
    resampled = [resample.Execute(image) for image in images]
    # views of images that live until the copy below
    return np.ascontiguousarray(np.stack([sitk.GetArrayViewFromImage(r) for r in resampled]).transpose(0, 3, 2, 1))


def _box_images(probabilities: np.ndarray, box: Sequence[slice], grid: sitk.Image) -> list[sitk.Image]:
    """(K, x, y, z) probabilities of foreground classes over ``box`` of the working grid, with one voxel
    of 0 around them (what lies outside the box), as one image per class placed where the box is
    (SimpleITK resamples scalar images on all cores, vector images about half as fast)."""
    padded = np.zeros((probabilities.shape[0], *(n + 2 for n in probabilities.shape[1:])), np.float32)
    padded[:, 1:-1, 1:-1, 1:-1] = probabilities
    origin = grid.TransformIndexToPhysicalPoint([b.start - 1 for b in box])
    images = []
    for channel in padded:
        image = sitk.GetImageFromArray(channel.transpose(2, 1, 0))
        image.SetSpacing(grid.GetSpacing())
        image.SetDirection(grid.GetDirection())
        image.SetOrigin(origin)
        images.append(image)
    return images


def reference_region(box: Sequence[slice], grid: sitk.Image, reference: sitk.Image) -> tuple[slice, slice, slice] | None:
    """The (z, y, x) part of the reference grid that the box (and its margin) covers, or None."""
    corners = [
        grid.TransformContinuousIndexToPhysicalPoint([float(b.start - 1.5 if high == 0 else b.stop + 0.5) for b, high in zip(box, bits)])
        for bits in np.ndindex(2, 2, 2)
    ]
    index = np.array([reference.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    low = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, reference.GetSize())
    if np.any(high <= low):
        return None
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low[::-1], high[::-1]))  # type: ignore[return-value]


def to_reference(
    probabilities: np.ndarray, box: Sequence[slice], grid: sitk.Image, reference: sitk.Image, keep: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities of the working grid's ``box`` brought back onto the reference grid, linearly.

    Only the part of the reference grid near the box is resampled; elsewhere is background.

    Args:
        probabilities: (C, x, y, z) over ``box``; outside it, background (class 0) with probability 1.
        box: the working-grid box (three slices, X Y Z).
        grid: the working grid (:func:`working_grid`).
        reference: the reference input, whose grid the result lies on.
        keep: also return the probabilities on the whole reference grid.
    Returns:
        (z, y, x) class index of the highest probability (uint8, the first class on a tie, as ``argmax``),
        and (C, z, y, x) float32 probabilities when ``keep``, else None.
    """
    classes = probabilities.shape[0]
    if classes > 256:
        raise ValueError(f"{classes} classes: at most 256 fit the uint8 class indices")
    size = reference.GetSize()[::-1]
    indices = np.zeros(size, np.uint8)
    full = None
    if keep:
        full = np.zeros((classes, *size), np.float32)
        full[0] = 1.0
    region = reference_region(box, grid, reference)
    if region is None:
        return indices, full
    resample = sitk.ResampleImageFilter()  # onto the region only: no copy of the reference's pixels
    resample.SetOutputSpacing(reference.GetSpacing())
    resample.SetOutputDirection(reference.GetDirection())
    resample.SetOutputOrigin(reference.TransformIndexToPhysicalPoint([r.start for r in region[::-1]]))
    resample.SetSize([r.stop - r.start for r in region[::-1]])
    resample.SetInterpolator(sitk.sitkLinear)
    resample.SetOutputPixelType(sitk.sitkFloat32)
    # the foreground classes only: linear weights sum to 1, so background is 1 minus their sum (also
    # beyond the box, where they resample to 0)
    part = [sitk.GetArrayFromImage(resample.Execute(image)) for image in _box_images(probabilities[1:], box, grid)]
    background = np.zeros(tuple(r.stop - r.start for r in region), np.float32)
    for p in part:
        background += p
    np.subtract(np.float32(1), background, out=background)
    # argmax over classes one class at a time: contiguous passes, 10x faster than argmax(axis=0)
    best, index = background.copy(), np.zeros(background.shape, np.uint8)
    for c, p in enumerate(part, start=1):
        index[p > best] = c
        np.maximum(best, p, out=best)
    indices[region] = index
    if full is not None:
        full[(slice(None), *region)] = np.stack([background, *part])
    return indices, full
