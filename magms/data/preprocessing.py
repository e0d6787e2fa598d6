"""Intensity preprocessing shared by training and inference: foreground, normalisation, crop.

Both sides call these functions, so what the network saw in training is what it sees in use.

Why a foreground rule of our own: MONAI's ``nonzero`` foreground assumes a zero background. Images
that were z-scored before they reach us (the BraTS 2013 ``*_subtrMeanDivStd`` files) fill the
background with a negative constant (-3.16 in one FLAIR), so "nonzero" took the whole volume: the
brain was normalised together with the air, training patches never showed the air, and inference
then ran on it and found "tumour" there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from magms.config import NORMALIZATIONS

__all__ = [
    "FILL_MIN_FRACTION",
    "foreground_mask",
    "normalize",
    "foreground_box",
    "run_in_foreground",
]

#: The minimum of a channel is a background fill value when at least this fraction of voxels holds it.
FILL_MIN_FRACTION = 0.01
# resampling blends equal fill values with rounding error; within this part of the range counts as fill
_FILL_TOLERANCE = 1e-3


def foreground_mask(x: np.ndarray) -> np.ndarray:
    """Voxels above each channel's background fill value.

    The fill value is the channel's minimum when at least :data:`FILL_MIN_FRACTION` of the voxels
    hold it: 0 in raw MRI, a negative constant in images z-scored before. Without such a value every
    voxel is foreground. A constant channel (an absent modality) has no foreground.

    Args:
        x: (C, X, Y, Z) intensities.
    Returns:
        (C, X, Y, Z) bool.
    """
    flat = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    threshold = low + np.float32(_FILL_TOLERANCE) * (high - low)
    mask = flat > threshold[:, None]
    at_fill = 1.0 - mask.mean(axis=1)
    mask[at_fill < FILL_MIN_FRACTION] = True
    mask[high == low] = False
    return mask.reshape(x.shape)


def normalize(x: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalise each channel and find the foreground.

    Args:
        x: (C, X, Y, Z) intensities, one channel per present modality.
        method: one of :data:`NORMALIZATIONS`: ``zscore_foreground`` (mean and sample standard
            deviation of the channel's foreground, 0 elsewhere), ``zscore_nonzero`` (MONAI's
            ``NormalizeIntensity(nonzero=True, channel_wise=True)``: of the non-zero voxels, population
            standard deviation, others left as they are) or ``none``.
    Returns:
        The normalised (C, X, Y, Z) float32 array, and the (X, Y, Z) bool foreground: the union of the
        channels' foregrounds.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {method!r}")
    x = np.asarray(x, dtype=np.float32)
    mask = foreground_mask(x)
    if method == "zscore_foreground":
        out = np.zeros_like(x)
        for c in range(x.shape[0]):
            values = x[c][mask[c]]
            if values.size > 1:
                out[c][mask[c]] = (values - values.mean()) / max(float(values.std(ddof=1)), 1e-8)
        x = out
    elif method == "zscore_nonzero":
        x = x.copy()
        for c in range(x.shape[0]):
            nonzero = x[c] != 0
            if nonzero.any():
                values = x[c][nonzero]
                std = float(values.std())
                x[c][nonzero] = (values - values.mean()) / (std if std != 0 else 1.0)
    return x, mask.any(axis=0)


def foreground_box(foreground: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of a (X, Y, Z) bool foreground as slices (the whole volume when it is empty)."""
    if not foreground.any():
        return tuple(slice(0, n) for n in foreground.shape)  # type: ignore[return-value]
    box = []
    for axis in range(3):
        hit = np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def run_in_foreground(
    x: np.ndarray, foreground: np.ndarray, run: Callable[[np.ndarray], np.ndarray], classes: int
) -> np.ndarray:
    """Run ``run`` on the foreground's bounding box only, as training cropped its cases.

    Args:
        x: (M, X, Y, Z) network input.
        foreground: (X, Y, Z) bool.
        run: maps a (M, x, y, z) crop to (classes, x, y, z) probabilities.
        classes: number of output classes.
    Returns:
        (classes, X, Y, Z) float32 probabilities; outside the box, background with probability 1.
    """
    box = foreground_box(foreground)
    probs = np.zeros((classes, *x.shape[1:]), np.float32)
    probs[0] = 1.0
    probs[(slice(None), *box)] = run(x[(slice(None), *box)])
    return probs
