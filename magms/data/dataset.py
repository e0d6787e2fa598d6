"""From labelled cases to training patches: the MONAI transforms.

:func:`case_transforms` is the deterministic part (cached once per run), :func:`patch_transforms`
the random part (patches, then the augmentation). The cases were checked before
(:func:`magms.data.checks.check_cases`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import (
    CropForegroundd,
    DeleteItemsd,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    Spacingd,
    SpatialPadd,
)

from magms.config import PreprocessConfig
from magms.data.augment import augmentation_transforms
from magms.data.inputs import prepare_inputs
from magms.data.io import resample_like, same_grid
from magms.data.preprocessing import normalize
from magms.data.tensors import RAS_AXES, sitk_to_metatensor
from magms.labels import LabelScheme, map_labels

__all__ = ["LoadCased", "NormalizeForegroundd", "case_transforms", "patch_transforms"]


class NormalizeForegroundd(MapTransform):
    """:func:`~magms.data.preprocessing.normalize` as a dictionary transform: ``image`` normalised in
    place, the foreground added as ``foreground`` (1, X, Y, Z) float, for cropping and patch sampling."""

    def __init__(self, method: str, image_key: str = "image", foreground_key: str = "foreground") -> None:
        super().__init__(keys=[image_key])
        self.method, self.image_key, self.foreground_key = method, image_key, foreground_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        affine = image.affine if isinstance(image, MetaTensor) else None
        array = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        normalised, foreground = normalize(array.numpy(), self.method)
        d[self.image_key] = MetaTensor(torch.from_numpy(normalised), affine=affine)
        d[self.foreground_key] = MetaTensor(torch.from_numpy(foreground[None].astype(np.float32)), affine=affine)
        return d


class LoadCased(MapTransform):
    """Load one case: images onto the reference grid, zeros for absent slots, label as class indices.

    Input dict keys: ``images`` (slot -> path), ``label`` (path), optionally ``scheme`` (the label
    file's scheme when it is not ``scheme``: mapped through the registry). Output keys: ``image``
    (M, X, Y, Z) MetaTensor, ``label`` (1, X, Y, Z), ``present`` (M,) bool.
    """

    def __init__(self, slots: Sequence[str], scheme: LabelScheme) -> None:
        super().__init__(keys=["image", "label"])
        self.slots, self.scheme = tuple(slots), scheme

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        prepared = prepare_inputs({s: Path(p) for s, p in data["images"].items()}, self.slots)
        volumes = {slot: sitk_to_metatensor(img) for slot, img in prepared.images.items()}
        ref = volumes[prepared.reference_slot]
        image = torch.zeros(len(self.slots), *ref.shape[1:])
        for slot, volume in volumes.items():
            image[self.slots.index(slot)] = volume[0]
        label = sitk.ReadImage(str(data["label"]))
        if not same_grid(label, prepared.reference):
            label = resample_like(label, prepared.reference, sitk.sitkNearestNeighbor)
        values = np.round(sitk.GetArrayFromImage(label)).astype(np.int64)
        if data.get("scheme") not in (None, self.scheme.key):
            values = map_labels(values, data["scheme"], self.scheme)
        indices = self.scheme.encode(values)
        label_t = torch.from_numpy(np.ascontiguousarray(indices.transpose(2, 1, 0)).astype(np.float32))  # (x, y, z)
        present = torch.tensor([s in prepared.images for s in self.slots])
        return {
            "name": data["name"],
            "image": MetaTensor(image, affine=ref.affine),
            "label": MetaTensor(label_t[None], affine=ref.affine),
            "present": present,
        }


def case_transforms(slots: Sequence[str], scheme: LabelScheme, pre: PreprocessConfig) -> list:
    steps: list = [LoadCased(slots, scheme), Orientationd(keys=["image", "label"], axcodes=pre.orientation, labels=RAS_AXES)]
    if pre.spacing is not None:
        steps.append(Spacingd(keys=["image", "label"], pixdim=pre.spacing, mode=("bilinear", "nearest")))
    steps.append(NormalizeForegroundd(pre.normalization))
    return steps


def patch_transforms(pre: PreprocessConfig, samples: int, augmentation: str = "light") -> list:
    """Patches cropped from a cached case, then augmented by preset ``augmentation`` (:mod:`magms.data.augment`)."""
    return [
        # the crop inference repeats (run_in_foreground); negative patches are centred in the foreground
        CropForegroundd(keys=["image", "label", "foreground"], source_key="foreground", allow_smaller=True),
        SpatialPadd(keys=["image", "label", "foreground"], spatial_size=pre.patch_size),
        RandCropByPosNegLabeld(
            keys=["image", "label"], label_key="label", spatial_size=pre.patch_size, pos=1, neg=1,
            num_samples=samples, image_key="foreground", image_threshold=0.5,
        ),
        DeleteItemsd(keys="foreground"),  # case-sized: it would not stack with another case's in a batch
        *augmentation_transforms(augmentation),
    ]
