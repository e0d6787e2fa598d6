"""Stage the training cases small enough to travel to a GPU machine (only the repository travels, 64 MiB a call).

Each case of a manifest (``cases.py``'s ``train.csv``) is brought onto its reference image's grid as training
reads it, resampled to the model's 2 mm working grid, cropped to the box of its foreground (the brain) plus
4 voxels, and written as int16 NIfTI: each sequence mapped linearly so that its minimum (the background
fill) becomes 0 and its maximum 32000, which the foreground z-score undoes; the label as uint8 in the
manifest's scheme. A manifest ``cases.csv`` beside them lists the cases (paths relative to it, the
``scheme`` column kept). Training on the staged cases sees what it sees on the originals, up to the int16
rounding and one resampling.

Usage (from the repository root): python Resources/Models/brats-glioma-4seq/recipe/stage_cases.py MANIFEST OUT_DIR
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from magms.config import PreprocessConfig
from magms.data.grid import working_grid
from magms.data.inputs import prepare_inputs
from magms.data.io import resample_like
from magms.data.preprocessing import foreground_box, foreground_mask

SLOTS = ("flair", "t1", "t1c", "t2")
SPACING = (2.0, 2.0, 2.0)
MARGIN = 4


def _crop_box(images: list[sitk.Image]) -> tuple[list[int], list[int]]:
    """Index and size (x, y, z) of the box of the voxels above the background in any image, plus a margin."""
    union = foreground_mask(np.stack([sitk.GetArrayViewFromImage(i) for i in images])).any(axis=0)
    box = foreground_box(union)  # (z, y, x) slices, as inference crops
    low = [max(b.start - MARGIN, 0) for b in box][::-1]
    high = [min(b.stop + MARGIN, n) for b, n in zip(box, union.shape)][::-1]
    return low, [h - v for h, v in zip(high, low)]


def _as_int16(image: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    low, high = array.min(), array.max()
    scaled = np.round((array - low) / max(high - low, 1e-12) * 32000).astype(np.int16)
    out = sitk.GetImageFromArray(scaled)
    out.CopyInformation(image)
    return out


def stage_case(row: dict[str, str], base: Path, out: Path) -> list[str]:
    """Write one case; returns its manifest row (case, each slot's file or "", label, scheme)."""
    inputs = {s: base / row[s] for s in SLOTS if row.get(s)}
    prepared = prepare_inputs(inputs, SLOTS)
    grid = working_grid(prepared.reference, PreprocessConfig(spacing=SPACING))  # the grid inference works on
    moved = {s: resample_like(image, grid, sitk.sitkLinear) for s, image in prepared.images.items()}
    label = resample_like(sitk.ReadImage(str(base / row["label"])), grid, sitk.sitkNearestNeighbor)
    index, size = _crop_box(list(moved.values()))
    folder = out / row["case"]
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for slot, image in moved.items():
        files[slot] = f"{row['case']}/{slot}.nii.gz"
        sitk.WriteImage(_as_int16(sitk.RegionOfInterest(image, size, index)), str(out / files[slot]), True)
    sitk.WriteImage(sitk.Cast(sitk.RegionOfInterest(label, size, index), sitk.sitkUInt8), str(folder / "label.nii.gz"), True)
    return [row["case"], *(files.get(s, "") for s in SLOTS), f"{row['case']}/label.nii.gz", row.get("scheme", "")]


def main(manifest: str, out_dir: str) -> None:
    source, out = Path(manifest), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    staged = [stage_case(row, source.parent, out) for row in rows]
    with open(out / "cases.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["case", *SLOTS, "label", "scheme"], *staged])
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{len(staged)} cases in {out}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
