"""The labelled cases of the built-in model, where each comes from, and the cross-site split.

Every real labelled case MAGMS can reach (37 four-sequence cases and 4 FLAIR + T1c ones):

* ``<shared>/brats18/``: 12 BraTS 2018 cases (``../shared/data``);
* ``<more>/``: 12 BraTS 2018 CBICA cases (``../shared/tools/brats18_more.sh``);
* ``<extra>/``: 13 BraTS 2019-2021 and BRATS 2015 cases (``../shared/tools/brats_extra.sh``);
* ``<shared>/brats_flair_t1c/``: 4 BraTS 2013 cases, FLAIR and T1c only, labels in the 2013 scheme.

:data:`VALIDATION` names the cases kept out of training: spread over the sources, so that their
Dice predicts a hospital the model never saw. None of them was a training case of the model the
new one starts from (its training cases are in its ``magms.json``), so fine-tuning leaks nothing.

Usage: python cases.py SHARED_DATA MORE_CASES EXTRA_CASES OUT_DIR
writes OUT_DIR/train.csv (training cases), OUT_DIR/validation.csv (the validation cases, with a
``source`` column read by ``Testing/benchmarks/bench_cross_site.py``) and OUT_DIR/all.csv (both, for
a run that validates on the validation cases at its end: ``--val-cases`` names them).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

SLOTS = ("flair", "t1", "t1c", "t2")
BRATS_SUFFIX = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}

#: Where a case was acquired, as far as its name tells. BraTS 2021 renamed its cases without the site.
VALIDATION = {
    "Brats18_CBICA_AQR_1": "CBICA (BraTS 2018)",
    "Brats18_CBICA_AMH_1": "CBICA (BraTS 2018)",
    "BraTS19_CBICA_ASK_1": "CBICA (BraTS 2019)",
    "Brats18_TCIA05_396_1": "TCIA (BraTS 2018)",
    "brats_tcia_pat222_2": "TCIA (BRATS 2015)",
    "BraTS20_Training_001": "BraTS 2020",
    "BraTS2021_00000": "BraTS 2021",
    "BraTS2021_00003": "BraTS 2021",
    "BraTS2021_00019": "BraTS 2021",
}
#: Label files in the BraTS 2013/2015 scheme (3 = non-enhancing tumour), mapped through the label registry.
SCHEME_2013 = {"brats_tcia_pat222_2"}


def four_sequence_rows(folder: Path) -> list[list[str]]:
    rows = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [case / f"{case.name}_{BRATS_SUFFIX[s]}.nii.gz" for s in SLOTS]
        scheme = "brats2013" if case.name in SCHEME_2013 else ""
        rows.append([case.name, *map(str, files), str(case / f"{case.name}_seg.nii.gz"), scheme])
    return rows


def brats2013_rows(folder: Path) -> list[list[str]]:
    rows = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        flair, t1c = case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"
        rows.append([case.name, str(flair), "", str(t1c), "", str(case / "OTMultiClass.nii.gz"), "brats2013"])
    return rows


def write_manifest(rows: list[list[str]], target: Path, header: list[str]) -> None:
    rows = [list(r) for r in rows]  # the paths become relative to the CSV here, not in the caller's rows
    for row in rows:
        for i in range(1, 6):
            if row[i]:
                if not Path(row[i]).is_file():
                    sys.exit(f"{row[i]}: no such file")
                row[i] = os.path.relpath(Path(row[i]).resolve(), target.parent.resolve())
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    print(f"{len(rows)} cases in {target}")


def main(shared: str, more: str, extra: str, out: str) -> None:
    rows = (four_sequence_rows(Path(shared) / "brats18") + four_sequence_rows(Path(more)) + four_sequence_rows(Path(extra))
            + brats2013_rows(Path(shared) / "brats_flair_t1c"))
    missing = set(VALIDATION) - {r[0] for r in rows}
    if missing:
        sys.exit(f"validation cases not found: {', '.join(sorted(missing))}")
    header = ["case", *SLOTS, "label", "scheme"]
    write_manifest([r for r in rows if r[0] not in VALIDATION], Path(out) / "train.csv", header)
    write_manifest([[*r, VALIDATION[r[0]]] for r in rows if r[0] in VALIDATION], Path(out) / "validation.csv", [*header, "source"])
    write_manifest(rows, Path(out) / "all.csv", header)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
