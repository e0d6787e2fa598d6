"""Package a finished training run as the built-in bundle: half-precision weights, the measured
post-processing, the cross-site validation, the training curve beside it.

Usage (from the repository root):
  python Resources/Models/brats-glioma-4seq/recipe/package.py RUN_DIR BUNDLE_DIR [BENCH_TABLE.md MODEL_NAME]

RUN_DIR: the ``magms train`` output; BUNDLE_DIR: Resources/Models/brats-glioma-4seq. The post-processing is read
from ``postprocessing.json`` beside this script (chosen with Testing/benchmarks/bench_postprocess.py and
bench_cross_site.py). With a ``Testing/benchmarks/bench_cross_site.py`` table and the model's name in it, the
bundle's validation is that table's per-subset Dice on the cross-site validation cases (``cases.py``'s
``VALIDATION``, recorded as the validation cases), in place of the run's own.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from cases import VALIDATION  # beside this file

from magms.bundle import load_bundle, save_bundle
from magms.config import PostprocessConfig
from magms.protocol import METRICS_FILE

HERE = Path(__file__).resolve().parent


def bench_validation(table: Path, model: str) -> dict[str, dict[str, float]]:
    """subset -> ``<region>_dice`` from the per-subset rows ``| model | subset | WT | TC | ET | ...`` of a bench table."""
    found = {}
    for line in table.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] == model and all(part.isalnum() for part in cells[1].split("+")):
            found[cells[1]] = {"wt_dice": float(cells[2]), "tc_dice": float(cells[3]), "et_dice": float(cells[4])}
    if len(found) != 15:
        sys.exit(f"{table}: {len(found)} subset rows for {model!r}, expected 15")
    return found


def main(run: str, bundle: str, table: str | None = None, name: str | None = None) -> None:
    model, info = load_bundle(run)
    post = PostprocessConfig.from_dict(json.loads((HERE / "postprocessing.json").read_text(encoding="utf-8")))
    training, validation = dict(info.training), info.validation
    if table is not None:
        validation = bench_validation(Path(table), name or Path(run).name)
        training["validation_cases"] = list(VALIDATION)
        training["validation_sources"] = dict(VALIDATION)
    target = Path(bundle)
    saved = save_bundle(
        target, model, info.network, info.scheme, info.preprocessing, training=training, validation=validation,
        overwrite=True, postprocessing=post, weights_dtype="float16",
    )
    shutil.copyfile(Path(run) / METRICS_FILE, target / "training_metrics.csv")
    print(f"{target}: weights sha256 {saved.weights_sha256}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
