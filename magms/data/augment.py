"""Training augmentation of patches: the ``light`` and ``strong`` presets of ``magms train --augmentation``.

``light`` is what MAGMS trained with first: mirroring and a small intensity scale and shift. ``strong``
follows the small-data segmenters (nnU-Net's default augmentation: rotation and scaling, Gaussian noise
and blur, brightness, contrast, gamma, simulated low resolution, mirroring) and adds thick slices,
since clinical series are often 5 mm apart. Elastic deformation is left out, as nnU-Net's default
leaves it out: on a CPU it costs more than the network step. Every transform is MONAI's except
:class:`RandThickSlicesd`. Intensity transforms act on all channels at once; an absent modality's
channel is ignored by the network whatever it holds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)

from magms.config import AUGMENTATIONS

__all__ = ["AUGMENTATIONS", "RandThickSlicesd", "augmentation_transforms"]



class RandThickSlicesd(RandomizableTransform, MapTransform):
    """Simulate a series acquired with thick slices along one random axis: the image averaged over
    ``factor`` neighbouring voxels along that axis (slabs), then interpolated back to its grid.

    On the 2 mm working grid a factor of 2-3 is a 4-6 mm series, the usual clinical thickness. The
    label is left as it is: the network learns the fine contour from the coarse image.

    Args:
        keys: the image keys, each (C, X, Y, Z).
        prob: the chance to act.
        factors: the slab sizes in voxels to draw from.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.2, factors: tuple[int, ...] = (2, 3)) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.factors = factors
        self._axis, self._factor = 0, factors[0]

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._axis = int(self.R.randint(3))
        self._factor = int(self.R.choice(self.factors))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = _thick_slices(d[key], self._axis, self._factor)
        return d


def _thick_slices(image: torch.Tensor, axis: int, factor: int) -> torch.Tensor:
    """``image`` (C, X, Y, Z) averaged in slabs of ``factor`` voxels along spatial ``axis``, back on its grid."""
    size = image.shape[1 + axis]
    kernel = [1, 1, 1]
    kernel[axis] = factor
    padded = list(image.shape[1:])
    padded[axis] = math.ceil(size / factor) * factor
    x = torch.as_tensor(image)[None].float()
    pad = [0, 0, 0, 0, 0, 0]
    pad[2 * (2 - axis) + 1] = padded[axis] - size  # F.pad counts from the last axis
    slabs = F.avg_pool3d(F.pad(x, pad, mode="replicate"), kernel_size=kernel, stride=kernel)
    back = F.interpolate(slabs, size=tuple(padded), mode="trilinear", align_corners=False)
    back = back[:, :, : image.shape[1], : image.shape[2], : image.shape[3]][0]
    out = image.clone() if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    out[...] = back.to(out.dtype)
    return out


def _mirroring() -> list:
    return [RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=axis) for axis in range(3)]


def augmentation_transforms(name: str) -> list:
    """The random transforms of preset ``name`` for patches with keys ``image`` (M, X, Y, Z) and ``label``
    (1, X, Y, Z); spatial ones move both, the label with nearest-neighbour interpolation."""
    if name == "light":
        return [*_mirroring(), RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
                RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5)]
    if name != "strong":
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")
    return [
        RandAffined(keys=["image", "label"], prob=0.3, rotate_range=(math.radians(15),) * 3, scale_range=(0.15,) * 3,
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandGaussianNoised(keys="image", prob=0.15, std=0.1),
        RandGaussianSmoothd(keys="image", prob=0.15, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        RandScaleIntensityd(keys="image", factors=0.25, prob=0.3),  # brightness and contrast
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.3),
        RandAdjustContrastd(keys="image", prob=0.2, gamma=(0.7, 1.5), retain_stats=True),
        RandSimulateLowResolutiond(keys="image", prob=0.15, zoom_range=(0.5, 1.0)),
        RandThickSlicesd(keys="image", prob=0.2),
        *_mirroring(),
    ]
