"""How long growing radiotherapy targets takes: magms.targets.grow_targets on real cases, per protocol.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_targets.py [--repeats 5]

Each BraTS 2018 case of the sample data (1 mm, about 140 x 170 x 140 voxels) with its own label map
and the brain of its FLAIR and T1c; the same case resampled to 1 x 1 x 5 mm (a clinical thick-slice
grid) as well. The table: median seconds per case and protocol, and the CTV volume.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from magms.labels import get_scheme  # noqa: E402
from magms.targets import PROTOCOLS, brain_mask, grow_targets  # noqa: E402

DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data"))


def thick(image: sitk.Image, interpolator) -> sitk.Image:
    spacing = (image.GetSpacing()[0], image.GetSpacing()[1], 5.0)
    size = [image.GetSize()[0], image.GetSize()[1], int(image.GetSize()[2] * image.GetSpacing()[2] / 5.0)]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing, image.GetDirection(), 0,
                         image.GetPixelID())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    scheme = get_scheme("brats2021")
    rows = []
    for case in sorted((DATA / "brats18").iterdir())[:4]:
        stem = case / case.name
        seg = sitk.ReadImage(f"{stem}_seg.nii.gz")
        images = [sitk.ReadImage(f"{stem}_{k}.nii.gz", sitk.sitkFloat32) for k in ("flair", "t1ce")]
        thick_images = [thick(i, sitk.sitkLinear) for i in images]
        for grid_name, labels_image, imgs in (("1 mm", seg, images), ("1x1x5 mm", thick(seg, sitk.sitkNearestNeighbor), thick_images)):
            labels = sitk.GetArrayFromImage(labels_image)
            brain = brain_mask(imgs)
            for key, protocol in PROTOCOLS.items():
                seconds = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    targets = grow_targets(labels, labels_image, scheme, protocol, brain)
                    seconds.append(time.perf_counter() - start)
                ctv = next(t for t in targets if t.spec.kind == "CTV")
                ml = ctv.mask.sum() * np.prod(labels_image.GetSpacing()) / 1000
                rows.append((case.name, grid_name, key, statistics.median(seconds), ml))
                print(f"  {case.name} {grid_name} {key}: {statistics.median(seconds):.2f} s", file=sys.stderr, flush=True)
    print("| case | grid | protocol | median s | first CTV ml |")
    print("|---|---|---|---|---|")
    for name, grid_name, key, sec, ml in rows:
        print(f"| {name} | {grid_name} | {key} | {sec:.2f} | {ml:.0f} |")
    for grid_name in ("1 mm", "1x1x5 mm"):
        print(f"\nmedian over cases and protocols, {grid_name}: {statistics.median(r[3] for r in rows if r[1] == grid_name):.2f} s")


if __name__ == "__main__":
    main()
