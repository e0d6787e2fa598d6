"""SimpleITK images as MONAI MetaTensors, and the invertible spatial part of the preprocessing."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Orientation, Spacing

from magms.config import PreprocessConfig
from magms.data.grid import ras_affine

__all__ = ["RAS_AXES", "sitk_to_metatensor", "spatial_transform"]

#: MONAI's axis labels for an affine in RAS, the convention of :func:`sitk_to_metatensor`.
RAS_AXES = (("L", "R"), ("P", "A"), ("I", "S"))
def sitk_to_metatensor(img: sitk.Image) -> MetaTensor:
    """A SimpleITK image as a (1, X, Y, Z) MetaTensor with its RAS affine (MONAI's convention)."""
    array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.from_numpy(ras_affine(img)))


def spatial_transform(pre: PreprocessConfig) -> Compose:
    """The invertible part of the preprocessing: reorientation and resampling to the working grid."""
    steps = [Orientation(axcodes=pre.orientation, labels=RAS_AXES)]
    if pre.spacing is not None:
        steps.append(Spacing(pixdim=pre.spacing, mode="bilinear"))
    return Compose(steps)
