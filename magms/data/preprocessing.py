"""Intensity preprocessing shared by training and inference: foreground, normalisation, crop.

Both sides call these functions, so what the network saw in training is what it sees in use.

Why a foreground rule of our own: MONAI's ``nonzero`` foreground assumes a zero background. Images
that were z-scored before they reach us (the BraTS 2013 ``*_subtrMeanDivStd`` files) fill the
background with a negative constant (-3.16 in one FLAIR), so "nonzero" took the whole volume: the
brain was normalised together with the air, training patches never showed the air, and inference
then ran on it and found "tumour" there.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, NormalizeIntensity

from magms.config import NORMALIZATIONS

__all__ = [
    "FILL_MIN_FRACTION",
    "foreground_mask",
    "normalize",
    "foreground_box",
    "run_in_foreground",
    "NormalizeForegroundd",
]

#: The minimum of a channel is a background fill value when at least this fraction of voxels holds it.
FILL_MIN_FRACTION = 0.01
# resampling blends equal fill values with rounding error; within this part of the range counts as fill
_FILL_TOLERANCE = 1e-3


def foreground_mask(x: torch.Tensor) -> torch.Tensor:
    """Voxels above each channel's background fill value.

    The fill value is the channel's minimum when at least :data:`FILL_MIN_FRACTION` of the voxels
    hold it: 0 in raw MRI, a negative constant in images z-scored before. Without such a value every
    voxel is foreground. A constant channel (an absent modality) has no foreground.

    Args:
        x: (C, X, Y, Z) intensities.
    Returns:
        (C, X, Y, Z) bool.
    """
    flat = x.reshape(x.shape[0], -1).float()
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    threshold = low + _FILL_TOLERANCE * (high - low)
    at_fill = (flat <= threshold[:, None]).float().mean(dim=1)
    mask = flat > threshold[:, None]
    mask[at_fill < FILL_MIN_FRACTION] = True
    mask[high == low] = False
    return mask.reshape(x.shape)


def normalize(x: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise each channel and find the foreground.

    Args:
        x: (C, X, Y, Z) intensities, one channel per present modality.
        method: one of :data:`NORMALIZATIONS`.
    Returns:
        The normalised (C, X, Y, Z) float tensor, and the (X, Y, Z) bool foreground: the union of the
        channels' foregrounds.
    """
    x = x.float()
    mask = foreground_mask(x)
    if method == "zscore_foreground":
        out = torch.zeros_like(x)
        for c in range(x.shape[0]):
            values = x[c][mask[c]]
            if values.numel() > 1:
                out[c][mask[c]] = (values - values.mean()) / values.std().clamp_min(1e-8)
        x = out
    elif method == "zscore_nonzero":
        x = NormalizeIntensity(nonzero=True, channel_wise=True)(x)
    elif method != "none":
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {method!r}")
    return x, mask.any(dim=0)


def foreground_box(foreground: torch.Tensor) -> tuple[slice, slice, slice]:
    """Bounding box of a (X, Y, Z) bool foreground as slices (the whole volume when it is empty)."""
    if not bool(foreground.any()):
        return tuple(slice(0, n) for n in foreground.shape)  # type: ignore[return-value]
    box = []
    for axis in range(3):
        hit = foreground.any(dim=tuple(a for a in range(3) if a != axis)).nonzero()
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def run_in_foreground(
    x: torch.Tensor, foreground: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], classes: int
) -> torch.Tensor:
    """Run ``run`` on the foreground's bounding box only, as training cropped its cases.

    Args:
        x: (B, M, X, Y, Z) network input.
        foreground: (X, Y, Z) bool.
        run: maps a (B, M, x, y, z) crop to (B, classes, x, y, z) probabilities.
        classes: number of output classes.
    Returns:
        (B, classes, X, Y, Z) probabilities on the CPU; outside the box, background with probability 1.
    """
    box = foreground_box(foreground)
    inside = run(x[(slice(None), slice(None), *box)]).float().cpu()
    probs = torch.zeros(x.shape[0], classes, *x.shape[2:])
    probs[:, 0] = 1.0
    probs[(slice(None), slice(None), *box)] = inside
    return probs


class NormalizeForegroundd(MapTransform):
    """Dictionary version of :func:`normalize` for training: ``image`` normalised in place, the
    foreground added as ``foreground`` (1, X, Y, Z) float, for cropping and patch sampling."""

    def __init__(self, method: str, image_key: str = "image", foreground_key: str = "foreground") -> None:
        super().__init__(keys=[image_key])
        self.method, self.image_key, self.foreground_key = method, image_key, foreground_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        affine = image.affine if isinstance(image, MetaTensor) else None
        normalised, foreground = normalize(image.as_tensor() if isinstance(image, MetaTensor) else image, self.method)
        d[self.image_key] = MetaTensor(normalised, affine=affine)
        d[self.foreground_key] = MetaTensor(foreground[None].float(), affine=affine)
        return d
