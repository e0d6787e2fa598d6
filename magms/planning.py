"""The planning CT: the MR the contours were made on registered to it, the structures resampled onto it.

A radiotherapy plan is computed on a CT. With ``--planning-ct DIR`` the RT Structure Set and the SEG
reference the CT series and its frame of reference instead of the MR:

1. :func:`register_mr_to_ct`: the MR reference image registered rigidly to the CT (Euler 3-D, Mattes
   mutual information, three resolutions; :func:`magms.data.clinical.register_rigid`, the method of
   ``--preprocess register``), the CT windowed to -150..250 HU so that the brain's contrast fills the
   histogram, from the better of two starts (the headers; the head's and the MR's centres of mass).
   The motion between two scanners is not limited, but the result must pass its own quality check:
   the optimiser converged, the images share information, the end is no worse than the start, and
   the MR's brain lands on the CT's soft tissue (at least :data:`MIN_BRAIN_ON_SOFT_TISSUE` of its
   voxels at -30..100 HU; an offset of a few millimetres puts the brain's edge on bone or air). A
   failure is an :class:`~magms.errors.ImageError` saying which check failed.
2. :func:`onto_ct`: the label map and the brain (and a barrier) resampled onto the CT grid
   (nearest neighbour) through that transform; the targets are then grown on the CT grid, so their
   margins are exact there.
3. :func:`write_registration_picture`: the CT in three planes with the registered MR's brain
   outlined, for the reviewer to check the fit.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from magms.errors import ConfigError, ImageError

__all__ = ["CT_WINDOW_HU", "SOFT_TISSUE_HU", "MIN_BRAIN_ON_SOFT_TISSUE", "CtRegistration", "register_mr_to_ct", "onto_ct",
           "write_registration_picture", "OnPlanningCt", "read_planning_ct", "move_to_planning_ct", "brain_on_soft_tissue",
           "rotation_angle_deg"]

#: The CT's intensities the registration sees: brain, blood, fat and the skull's edge; air and dense bone clipped.
CT_WINDOW_HU = (-150.0, 250.0)
#: Brain tissue, CSF and blood on a CT.
SOFT_TISSUE_HU = (-30.0, 100.0)
#: The share of the MR's brain voxels that must land on the CT's soft tissue. On the simulated CT of
#: ``Testing/simulated_ct.py``: 0.97 at the true fit, 0.93-0.94 5 mm off, 0.90 10 mm off, 0.87 15 mm off.
MIN_BRAIN_ON_SOFT_TISSUE = 0.92


@dataclasses.dataclass(frozen=True)
class CtRegistration:
    """The MR registered to the planning CT.

    Attributes:
        transform: maps the CT's points to the MR's (as :func:`sitk.Resample` takes it).
        angle_deg: the rotation, in degrees.
        translation_mm: the translation (x, y, z), mm.
        mutual_information: Mattes mutual information at the end, nats.
        brain_on_soft_tissue: share of the MR's brain voxels on CT soft tissue (the quality check).
    """

    transform: sitk.Euler3DTransform
    angle_deg: float
    translation_mm: tuple[float, float, float]
    mutual_information: float
    brain_on_soft_tissue: float

    def describe(self) -> str:
        return (f"MR registered to the planning CT: rotation {self.angle_deg:.1f} degrees, translation "
                f"{np.linalg.norm(self.translation_mm):.1f} mm, mutual information {self.mutual_information:.3f}, "
                f"{self.brain_on_soft_tissue:.0%} of the brain on CT soft tissue")


def _windowed(ct: sitk.Image) -> sitk.Image:
    """The CT clamped to :data:`CT_WINDOW_HU`, shifted to start at 0 (air weighs nothing in the centre of mass)."""
    return sitk.Clamp(sitk.Cast(ct, sitk.sitkFloat32), sitk.sitkFloat32, *CT_WINDOW_HU) - CT_WINDOW_HU[0]


def brain_on_soft_tissue(ct: sitk.Image, brain: sitk.Image, transform: sitk.Transform) -> float:
    """The share of ``brain``'s voxels (on the MR grid) that ``transform`` (CT -> MR points) puts on CT soft tissue."""
    points = np.argwhere(sitk.GetArrayViewFromImage(brain) > 0)[:, ::-1]  # (x, y, z) indices
    if len(points) == 0:
        return 0.0
    step = max(1, len(points) // 20000)
    inverse = transform.GetInverse()
    ct_array = sitk.GetArrayViewFromImage(ct)
    inside = 0
    for index in points[::step]:
        ct_point = inverse.TransformPoint(brain.TransformIndexToPhysicalPoint([int(i) for i in index]))
        continuous = ct.TransformPhysicalPointToContinuousIndex(ct_point)
        x, y, z = (int(round(c)) for c in continuous)
        if 0 <= x < ct.GetSize()[0] and 0 <= y < ct.GetSize()[1] and 0 <= z < ct.GetSize()[2]:
            inside += SOFT_TISSUE_HU[0] <= ct_array[z, y, x] <= SOFT_TISSUE_HU[1]
    return inside / len(points[::step])


def register_mr_to_ct(ct: sitk.Image, mr: sitk.Image, brain: sitk.Image, ct_name: str = "planning CT",
                      mr_name: str = "MR") -> CtRegistration:
    """Register the MR rigidly to the planning CT and check the result (see the module docstring).

    Args:
        ct: the planning CT, in HU.
        mr: the MR reference image the contours are on.
        brain: the MR's brain mask (on ``mr``'s grid), for the quality check.
    Raises:
        ImageError: the registration failed a check; the message names the CT and the check.
    """
    from magms.data.clinical import register_rigid

    try:
        found = register_rigid(_windowed(ct), mr, "planning CT", mr_name, ct_name, within_session=False)
    except ImageError as err:
        raise ImageError(f"--planning-ct {ct_name}: {err}") from err
    share = brain_on_soft_tissue(ct, brain, found.transform)
    if share < MIN_BRAIN_ON_SOFT_TISSUE:
        raise ImageError(
            f"--planning-ct {ct_name}: the registration failed its check: only {share:.0%} of the MR's brain lands on the CT's soft "
            f"tissue ({SOFT_TISSUE_HU[0]:.0f}..{SOFT_TISSUE_HU[1]:.0f} HU; at least {MIN_BRAIN_ON_SOFT_TISSUE:.0%} expected): "
            "is it the same patient, and the whole head?"
        )
    return CtRegistration(found.transform, found.angle_deg, found.translation_mm, found.mi_final, share)


def onto_ct(mask_or_labels: np.ndarray, mr_grid: sitk.Image, ct: sitk.Image, transform: sitk.Transform) -> np.ndarray:
    """A (z, y, x) label map or mask on the MR grid, resampled (nearest neighbour) onto the CT grid."""
    image = sitk.GetImageFromArray(np.asarray(mask_or_labels).astype(np.uint16))
    image.CopyInformation(mr_grid)
    moved = sitk.Resample(image, ct, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    out = sitk.GetArrayFromImage(moved)
    return out.astype(bool) if np.asarray(mask_or_labels).dtype == bool else out.astype(np.asarray(mask_or_labels).dtype)


def write_registration_picture(ct: sitk.Image, brain_on_ct: np.ndarray, path: str | os.PathLike[str],
                               title: str = "MR brain (outline) on the planning CT") -> Path:
    """The CT (brain window) in its three middle planes through the brain, the registered brain outlined in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from magms.files import atomic_write

    array = sitk.GetArrayFromImage(ct).astype(np.float32)
    centre = [int(round(c)) for c in np.argwhere(brain_on_ct).mean(axis=0)] if brain_on_ct.any() else [s // 2 for s in array.shape]
    spacing = ct.GetSpacing()[::-1]
    planes: Sequence[tuple[str, np.ndarray, np.ndarray, float]] = (
        ("axial", array[centre[0]], brain_on_ct[centre[0]], spacing[1] / spacing[2]),
        ("coronal", array[:, centre[1]][::-1], brain_on_ct[:, centre[1]][::-1], spacing[0] / spacing[2]),
        ("sagittal", array[:, :, centre[2]][::-1], brain_on_ct[:, :, centre[2]][::-1], spacing[0] / spacing[1]),
    )
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, (name, image, mask, aspect) in zip(axes, planes):
        axis.imshow(image, cmap="gray", vmin=-20, vmax=100, aspect=aspect)
        if mask.any():
            axis.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        axis.set_title(name)
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    out = Path(path)
    atomic_write(out, lambda tmp: figure.savefig(tmp, dpi=100), suffix=".png")
    plt.close(figure)
    return out


def rotation_angle_deg(matrix: Sequence[float]) -> float:
    """The angle of a 3x3 rotation matrix (row-major), in degrees."""
    m = np.asarray(matrix, dtype=float).reshape(3, 3)
    return math.degrees(math.acos(float(np.clip((np.trace(m) - 1) / 2, -1.0, 1.0))))


@dataclasses.dataclass(frozen=True)
class OnPlanningCt:
    """One case's structures moved onto the planning CT.

    Attributes:
        labels: (z, y, x) label values on the CT grid.
        grid: the CT image (its grid is the DICOM objects' grid).
        series: the CT's DICOM series, ordered on ``grid``.
        brain: (z, y, x) bool brain mask on the CT grid.
        barrier: the barrier mask on the CT grid, or None.
        registration: the MR-to-CT registration.
    """

    labels: np.ndarray
    grid: sitk.Image
    series: Any
    brain: np.ndarray
    barrier: np.ndarray | None
    registration: CtRegistration


def read_planning_ct(folder: str | os.PathLike[str]) -> tuple[sitk.Image, Any]:
    """The planning CT (in HU) and its DICOM series, ordered on its grid.

    Raises:
        ConfigError: not a DICOM series folder.
        ImageError: unreadable, or a series of another modality than CT (named).
    """
    from magms.data.io import read_image
    from magms.dicom import is_dicom_series, read_series

    if not is_dicom_series(folder):
        raise ConfigError(f"--planning-ct {folder}: not a DICOM series folder (the planning CT's slices)")
    ct = read_image(folder)
    series = read_series(Path(folder), ct)
    modality = str(series.first.get("Modality", ""))
    if modality != "CT":
        raise ImageError(f"--planning-ct {folder}: a {modality or 'modality-less'} series, not a CT")
    return ct, series


def move_to_planning_ct(folder: str | os.PathLike[str], mr: sitk.Image, labels: np.ndarray, brain: np.ndarray,
                        barrier: np.ndarray | None = None) -> OnPlanningCt:
    """Register the MR to the planning CT in ``folder`` and resample the labels, the brain and the barrier onto it.

    Args:
        mr: the MR reference image (the labels' grid).
        labels: (z, y, x) label values on ``mr``.
        brain: (z, y, x) bool brain mask on ``mr``.
        barrier: (z, y, x) bool barrier mask on ``mr``, or None.
    Raises:
        ConfigError, ImageError: as :func:`read_planning_ct` and :func:`register_mr_to_ct`.
    """
    ct, series = read_planning_ct(folder)
    brain_image = sitk.GetImageFromArray(brain.astype(np.uint8))
    brain_image.CopyInformation(mr)
    registration = register_mr_to_ct(ct, mr, brain_image, str(folder))
    transform = registration.transform
    moved_barrier = None if barrier is None else onto_ct(barrier, mr, ct, transform)
    return OnPlanningCt(onto_ct(labels, mr, ct, transform), ct, series, onto_ct(brain, mr, ct, transform), moved_barrier, registration)
