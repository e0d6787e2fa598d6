"""How well :func:`magms.data.clinical.skull_check` tells skull-stripped images from whole heads, on real images.

Run by hand (never by pytest):

    python Testing/benchmarks/bench_skull_detection.py            # one row per group
    python Testing/benchmarks/bench_skull_detection.py --each     # and one row per image

Stripped: every sequence of the 12 BraTS 2018 cases (``brats18/``), the BraTS 2023 case and the
AURORA case (``brats_unlabelled/``), the 4 BraTS 2013 cases (``brats_flair_t1c/``, z-scored, their
background a negative constant). Unstripped: the whole-head MNI templates T1, T2 and PD
(``mni_avg152/``). Two made-up variants probe the rule's edges: the MNI templates with the air set to
exactly 0 (as some scanners store it: the fill test alone would call them stripped, the volume test
does not), and the MNI templates masked with their brain mask (a stripped image in MNI space, whose
brains are larger than most). Prints the two numbers of the rule, their range per group, and how
many images of each group the rule calls stripped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from magms.data.clinical import STRIPPED_FILL_FRACTION, STRIPPED_MAX_ML, skull_check  # noqa: E402

DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data"))
MNI = ("T1", "T2", "PD")


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path), sitk.sitkFloat32)


def groups() -> dict[str, tuple[bool, list[tuple[str, sitk.Image]]]]:
    """Group name -> (truly stripped, [(image name, image)])."""
    def files(pattern: str) -> list[tuple[str, sitk.Image]]:
        return [(p.name, _read(p)) for p in sorted(DATA.glob(pattern)) if "seg" not in p.name and "brainmask" not in p.name
                and "OTMultiClass" not in p.name]

    mni = [(f"avg152{m}", _read(DATA / "mni_avg152" / f"canonical_avg152{m}.nii.gz")) for m in MNI]
    brain = sitk.GetArrayFromImage(_read(DATA / "mni_avg152" / "toolbox_FieldMap_brainmask.nii.gz")) > 0.5
    zeroed, masked = [], []
    for name, image in mni:
        array = sitk.GetArrayFromImage(image)
        air = array.copy()
        air[air < 0.05 * air.max()] = 0  # the air stored as exact zeros
        inside = np.where(brain, array, 0).astype(np.float32)
        for out, values in ((zeroed, air), (masked, inside)):
            img = sitk.GetImageFromArray(values)
            img.CopyInformation(image)
            out.append((name, img))
    return {
        "BraTS 2018 (12 cases x 4)": (True, files("brats18/*/*.nii.gz")),
        "BraTS 2023 GLI-00001 (4)": (True, files("brats_unlabelled/BraTS-GLI-00001-000/*.nii.gz")),
        "AURORA metastasis (2)": (True, files("brats_unlabelled/AURORA-metastasis/*.nii.gz")),
        "BraTS 2013, z-scored (4 x 2)": (True, files("brats_flair_t1c/*/*_subtrMeanDivStd.nii.gz")),
        "MNI avg152 T1/T2/PD, whole head": (False, mni),
        "MNI, air set to 0 (made up)": (False, zeroed),
        "MNI, brain-masked (made up)": (True, masked),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--each", action="store_true", help="also one row per image")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"no real data in {DATA} (set MAGMS_TEST_DATA)")
    print(f"rule: stripped = fill fraction >= {STRIPPED_FILL_FRACTION:.0%} and tissue <= {STRIPPED_MAX_ML:.0f} ml\n")
    print("| images | truly | fill fraction | tissue (ml) | called stripped | ms per image |")
    print("|---|---|---|---|---|---|")
    rows, wrong = [], 0
    for group, (truth, images) in groups().items():
        start = time.perf_counter()
        checks = [(name, skull_check(image)) for name, image in images]
        ms = 1000 * (time.perf_counter() - start) / max(len(images), 1)
        fills = [c.fill_fraction for _, c in checks]
        mls = [c.tissue_ml for _, c in checks]
        called = sum(c.stripped for _, c in checks)
        wrong += called if not truth else len(checks) - called
        print(f"| {group} | {'stripped' if truth else 'whole head'} | {min(fills):.1%} - {max(fills):.1%} | "
              f"{min(mls):.0f} - {max(mls):.0f} | {called} of {len(checks)} | {ms:.0f} |")
        rows += [(group, name, c) for name, c in checks]
    print(f"\n{wrong} image(s) called wrongly")
    if args.each:
        print("\n| group | image | fill fraction | tissue (ml) | stripped |\n|---|---|---|---|---|")
        for group, name, c in rows:
            print(f"| {group} | {name} | {c.fill_fraction:.2%} | {c.tissue_ml:.0f} | {c.stripped} |")


if __name__ == "__main__":
    main()
