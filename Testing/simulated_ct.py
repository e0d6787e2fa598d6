"""A planning CT simulated from a real MR, moved by a known rigid transform: for the planning-CT tests.

No public repository here holds a CT and an MR of one patient, so the CT is made from the MNI
avg152 T1 template and its tissue maps (``../shared/data/mni_avg152``, real averaged anatomy): brain
in HU from the CSF, grey and white matter probabilities (8, 38 and 28 HU), the dark band between
brain and scalp as bone (1000 HU), the rest of the head soft tissue (40 HU), air -1000 HU, Gaussian
noise of 4 HU. It is resampled onto its own grid (1 x 1 x 2.5 mm, another origin) through a known
rigid transform, which a registration must recover. Test support only.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

__all__ = ["mni_images", "simulated_ct"]


def mni_images(folder):
    """The template T1 (float), its brain mask (bool image) and the tissue maps, on their 2 mm grid."""
    t1 = sitk.ReadImage(str(folder / "canonical_avg152T1.nii.gz"), sitk.sitkFloat32)
    brain = sitk.ReadImage(str(folder / "toolbox_FieldMap_brainmask.nii.gz"), sitk.sitkFloat32) > 0.5
    tissues = {k: sitk.ReadImage(str(folder / f"toolbox_OldSeg_{k}.nii.gz"), sitk.sitkFloat32) for k in ("csf", "grey", "white")}
    for image in (brain, *tissues.values()):
        image.CopyInformation(t1)
    return t1, brain, tissues


def _hounsfield(t1: sitk.Image, brain: sitk.Image, tissues: dict, seed: int) -> sitk.Image:
    a = sitk.GetArrayFromImage(t1)
    b = sitk.GetArrayFromImage(brain).astype(bool)
    head = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray((a > 0.2 * a.max()).astype(np.uint8)))).astype(bool)
    head |= b
    csf, grey, white = (sitk.GetArrayFromImage(tissues[k]) for k in ("csf", "grey", "white"))
    hu = np.full(a.shape, -1000.0, np.float32)
    hu[head] = 40.0
    skull = head & ~b & (a < 0.35 * a.max())
    hu[skull] = 1000.0
    weight = csf + grey + white + 1e-3
    hu[b] = ((8 * csf + 38 * grey + 28 * white) / weight)[b]
    hu += np.random.default_rng(seed).normal(0, 4, hu.shape).astype(np.float32)
    out = sitk.GetImageFromArray(hu)
    out.CopyInformation(t1)
    return out


def simulated_ct(t1: sitk.Image, brain: sitk.Image, tissues: dict, angles_deg=(3.0, -4.0, 5.0),
                 translation_mm=(15.0, -10.0, 25.0), seed: int = 0) -> tuple[sitk.Image, sitk.Euler3DTransform]:
    """The simulated CT and the true transform (CT points -> MR points)."""
    hu = _hounsfield(t1, brain, tissues, seed)
    centre = np.mean([t1.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]])
                      for p in np.argwhere(sitk.GetArrayViewFromImage(brain))[::50]], axis=0)
    truth = sitk.Euler3DTransform()
    truth.SetCenter(tuple(centre))
    truth.SetRotation(*np.radians(angles_deg))
    truth.SetTranslation(translation_mm)
    spacing = np.array((1.0, 1.0, 2.5))
    inverse = truth.GetInverse()  # the MR's box in CT space: the CT covers it, with a margin
    corners = [inverse.TransformPoint(t1.TransformIndexToPhysicalPoint([i * (n - 1) for i, n in zip(c, t1.GetSize())]))
               for c in np.ndindex(2, 2, 2)]
    low, high = np.min(corners, axis=0) - 10, np.max(corners, axis=0) + 10
    grid = sitk.Image([int(v) for v in np.ceil((high - low) / spacing)], sitk.sitkFloat32)
    grid.SetSpacing(tuple(spacing))
    grid.SetOrigin(tuple(low))
    ct = sitk.Resample(hu, grid, truth, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    return ct, truth
