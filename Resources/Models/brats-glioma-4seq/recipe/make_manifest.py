"""Write the training manifest of the built-in model: every real labelled case MAGMS can reach.

* ``<shared>/brats18/``: 12 BraTS 2018 cases, FLAIR, T1, T1c, T2, labels in the BraTS 2018-2021 scheme;
* ``<more>/``: the 12 BraTS 2018 cases ``../shared/tools/brats18_more.sh`` extracts;
* ``<shared>/brats_flair_t1c/``: 4 BraTS 2013 cases, FLAIR and T1c only, labels in the BraTS 2013
  scheme (the manifest's ``scheme`` column: mapped into the 2018 scheme through the label registry).

Paths in the manifest are relative to it, as ``magms train`` reads them.

Usage: python make_manifest.py SHARED_DATA MORE_CASES OUT.csv
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

SLOTS = ("flair", "t1", "t1c", "t2")
BRATS18_SUFFIX = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}


def brats18_rows(folder: Path) -> list[list[str]]:
    rows = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [case / f"{case.name}_{BRATS18_SUFFIX[s]}.nii.gz" for s in SLOTS]
        rows.append([case.name, *map(str, files), str(case / f"{case.name}_seg.nii.gz"), ""])
    return rows


def brats2013_rows(folder: Path) -> list[list[str]]:
    rows = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        flair, t1c = case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"
        rows.append([case.name, str(flair), "", str(t1c), "", str(case / "OTMultiClass.nii.gz"), "brats2013"])
    return rows


def main(shared: str, more: str, out: str) -> None:
    target = Path(out).resolve()
    rows = brats18_rows(Path(shared) / "brats18") + brats18_rows(Path(more)) + brats2013_rows(Path(shared) / "brats_flair_t1c")
    for row in rows:
        for i in range(1, 6):
            if row[i]:
                if not Path(row[i]).is_file():
                    sys.exit(f"{row[i]}: no such file")
                row[i] = os.path.relpath(Path(row[i]).resolve(), target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["case", *SLOTS, "label", "scheme"], *rows])
    print(f"{len(rows)} cases in {target}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
