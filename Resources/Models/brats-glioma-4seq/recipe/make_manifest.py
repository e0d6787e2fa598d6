"""The manifest of the built-in model's first phase (2026-11-29, version 1): 28 real labelled cases.

* ``<shared>/brats18/``: 12 BraTS 2018 cases, FLAIR, T1, T1c, T2, labels in the BraTS 2018-2021 scheme;
* ``<more>/``: the 12 BraTS 2018 cases ``../shared/tools/brats18_more.sh`` extracts;
* ``<shared>/brats_flair_t1c/``: 4 BraTS 2013 cases, FLAIR and T1c only, labels in the BraTS 2013
  scheme (the manifest's ``scheme`` column: mapped into the 2018 scheme through the label registry).

Later phases read ``cases.py``'s manifests (41 cases, the cross-site split). Paths in the manifest are
relative to it, as ``magms train`` reads them.

Usage: python make_manifest.py SHARED_DATA MORE_CASES OUT.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

from cases import SLOTS, brats2013_rows, four_sequence_rows, write_manifest  # beside this file


def main(shared: str, more: str, out: str) -> None:
    rows = four_sequence_rows(Path(shared) / "brats18") + four_sequence_rows(Path(more)) + brats2013_rows(Path(shared) / "brats_flair_t1c")
    write_manifest(rows, Path(out), ["case", *SLOTS, "label", "scheme"])


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
