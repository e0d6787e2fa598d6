"""Render ``preprocess.png``: what ``--preprocess auto`` does to raw inputs, on real images.

Top row: the whole-head MNI T1 template (``mni_avg152``), found unstripped by the skull check,
and the brain that deepbet extracts from it. Bottom row: a real BraTS 2018 T1c moved by a rigid
motion and resampled onto a coarser oblique grid, as a separate clinical series would be, drawn
as edges over the FLAIR before and after ``magms.data.clinical`` registers it back.

    python Resources/Screenshots/render_preprocess.py [--data ../shared/data] [--out PNG]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from magms.data.clinical import preprocess_inputs, skull_check  # noqa: E402
from magms.data.io import resample_like  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CASE = "Brats18_CBICA_AQR_1"


def moved_series(image: sitk.Image) -> sitk.Image:
    """``image`` seen through a rigid motion (8, -5, 6 degrees; 12, -8, 6 mm) on a 1.2 x 1.2 x 3 mm grid."""
    motion = sitk.Euler3DTransform()
    motion.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    motion.SetRotation(*(math.radians(a) for a in (8, -5, 6)))
    motion.SetTranslation((12, -8, 6))
    spacing = (1.2, 1.2, 3.0)
    size = [int(n * s / t) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetOrigin(image.GetOrigin())
    grid.SetDirection(image.GetDirection())
    return sitk.Resample(image, grid, motion, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def lps(image: sitk.Image) -> np.ndarray:
    """The (z, y, x) array in LPS order: an axial slice shows anterior up, the patient's right on the left."""
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def edges(image: sitk.Image) -> np.ndarray:
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), 1.0)
    return lps(sitk.CannyEdgeDetection(smooth, 20.0, 60.0)) > 0


def axial(array: np.ndarray, k: int) -> np.ndarray:
    return array[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("preprocess.png"))
    args = parser.parse_args()

    head = sitk.ReadImage(str(args.data / "mni_avg152" / "canonical_avg152T1.nii.gz"), sitk.sitkFloat32)
    check = skull_check(head)
    stripped = preprocess_inputs({"t1": head}, ("flair", "t1", "t1c", "t2"), mode="auto")
    brain = lps(stripped.images["t1"])

    folder = args.data / "brats18" / CASE
    flair = sitk.ReadImage(str(folder / f"{CASE}_flair.nii.gz"), sitk.sitkFloat32)
    moved = moved_series(sitk.ReadImage(str(folder / f"{CASE}_t1ce.nii.gz"), sitk.sitkFloat32))
    registered = preprocess_inputs({"flair": flair, "t1c": moved}, ("flair", "t1", "t1c", "t2"), mode="auto")
    result = registered.registrations["t1c"]
    before = edges(resample_like(moved, flair))
    after = edges(registered.images["t1c"])
    grey = lps(flair)

    fig, axes = plt.subplots(2, 2, figsize=(9, 9.4), facecolor="black")
    k = head.GetSize()[2] // 2 + 8
    head_array = lps(head)
    panels = [
        (axes[0, 0], axial(head_array, k), None, f"MNI T1 as loaded: {check.describe()}"),
        (axes[0, 1], axial(brain, k), None, f"--preprocess auto: the brain, {stripped.mask_source}"),
        (axes[1, 0], axial(grey, grey.shape[0] // 2), axial(before, grey.shape[0] // 2), "moved T1c (edges) on FLAIR, by the headers"),
        (axes[1, 1], axial(grey, grey.shape[0] // 2), axial(after, grey.shape[0] // 2), f"registered: {result.describe()}"),
    ]
    for ax, image, outline, title in panels:
        ax.imshow(image, cmap="gray", interpolation="bilinear")
        if outline is not None:
            ax.imshow(np.ma.masked_equal(outline.astype(np.uint8), 0), cmap="autumn", interpolation="nearest")
        ax.set_title("\n".join(_wrap(title, 48)), color="white", fontsize=9)
        ax.axis("off")
    fig.suptitle("Raw inputs: brain extraction (top) and co-registration (bottom)", color="white", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(args.out, dpi=90, facecolor="black")
    print(args.out)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]


if __name__ == "__main__":
    main()
