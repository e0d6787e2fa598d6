"""Sliding-window inference in numpy: the windows, their blending weights, the stitching.

The same windows and weights as MONAI's ``sliding_window_inference`` (``Testing/test_windows.py``
keeps them equal), without torch: a run whose network is an exported graph then never imports it.

* **Windows**: a volume smaller than the window along an axis is padded with zeros (half before,
  half after); windows start every ``window * (1 - overlap)`` voxels, the last one moved back to end
  at the volume's end.
* **Weights**: ``constant`` (1) or ``gaussian`` (a separable Gaussian of sigma 0.125 of the window,
  at least 0.001), each voxel's probabilities the weighted mean of its windows'.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["BLEND_MODES", "SIGMA_SCALE", "window_starts", "window_count", "blend_weights", "sliding_window", "window_padding"]

#: Blending of overlapping windows.
BLEND_MODES = ("constant", "gaussian")
#: Sigma of the Gaussian weights, as a fraction of the window (MONAI's default).
SIGMA_SCALE = 0.125

#: (windows done, windows in all)
Progress = Callable[[int, int], None]


def _axis_starts(size: int, window: int, overlap: float) -> list[int]:
    if window == size:
        return [0]
    interval = max(int(window * (1 - overlap)), 1)
    count = next(k for k in range(math.ceil(size / interval)) if k * interval + window >= size) + 1
    return [k * interval - max(k * interval + window - size, 0) for k in range(count)]


def window_starts(shape: Sequence[int], window: Sequence[int], overlap: float) -> list[tuple[int, int, int]]:
    """The first voxel of every window over a volume of ``shape`` (after padding it to ``window``).

    Args:
        shape: (X, Y, Z) of the volume.
        window: (x, y, z) of a window.
        overlap: the fraction of a window that the next one shares, in [0, 1).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    padded = [max(s, w) for s, w in zip(shape, window)]
    axes = [_axis_starts(s, w, overlap) for s, w in zip(padded, window)]
    return [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]


def window_count(shape: Sequence[int], window: Sequence[int], overlap: float) -> int:
    """How many windows :func:`sliding_window` runs over a volume of ``shape``."""
    return len(window_starts(shape, window, overlap))


def blend_weights(window: Sequence[int], mode: str) -> np.ndarray:
    """(x, y, z) float32 weight of each voxel of a window's prediction in the blend."""
    if mode == "constant":
        return np.ones(tuple(window), np.float32)
    if mode != "gaussian":
        raise ValueError(f"blend mode must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
    weights = np.ones((), np.float32)
    for n in window:
        x = np.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x**2 / np.float32(-2 * (n * SIGMA_SCALE) ** 2)).astype(np.float32)
        weights = weights[..., None] * g
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def window_padding(shape: Sequence[int], window: Sequence[int]) -> list[tuple[int, int]]:
    """Zeros (before, after) per axis that bring a volume smaller than the window up to it: half before, half after."""
    return [((max(w - s, 0)) // 2, max(w - s, 0) - max(w - s, 0) // 2) for s, w in zip(shape, window)]


def sliding_window(
    x: np.ndarray,
    window: Sequence[int],
    predict: Callable[[np.ndarray], np.ndarray],
    overlap: float = 0.5,
    mode: str = "gaussian",
    batch: int = 2,
    progress: Progress | None = None,
) -> np.ndarray:
    """Probabilities over a whole volume from a network that sees one window at a time.

    Args:
        x: (M, X, Y, Z) float32 network input.
        window: (x, y, z) window the network takes.
        predict: (B, M, x, y, z) windows -> (B, C, x, y, z) float32 probabilities.
        overlap: see :func:`window_starts`.
        mode: blending, one of :data:`BLEND_MODES`.
        batch: windows per ``predict`` call.
        progress: called with (windows done, windows in all) after each call.
    Returns:
        (C, X, Y, Z) float32 probabilities.
    """
    window = tuple(int(w) for w in window)
    shape = x.shape[1:]
    pad = [(0, 0), *window_padding(shape, window)]
    padded = np.pad(x, pad) if any(p for pair in pad for p in pair) else x
    starts = window_starts(shape, window, overlap)
    weights = blend_weights(window, mode)
    total: np.ndarray | None = None
    weight_sum = np.zeros(padded.shape[1:], np.float32)
    for first in range(0, len(starts), batch):
        boxes = [tuple(slice(s, s + w) for s, w in zip(start, window)) for start in starts[first : first + batch]]
        probabilities = predict(np.stack([padded[(slice(None), *box)] for box in boxes]))
        if total is None:
            total = np.zeros((probabilities.shape[1], *padded.shape[1:]), np.float32)
        for p, box in zip(probabilities, boxes):
            total[(slice(None), *box)] += p * weights
            weight_sum[box] += weights
        if progress is not None:
            progress(min(first + batch, len(starts)), len(starts))
    assert total is not None
    total /= weight_sum
    crop = tuple(slice(before, before + s) for (before, _), s in zip(pad[1:], shape))
    return np.ascontiguousarray(total[(slice(None), *crop)])
