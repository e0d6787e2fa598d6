"""Package a finished training run as the built-in bundle: half-precision weights, the measured
post-processing, the training curve beside it.

Usage (from the repository root): python Resources/Models/brats-glioma-4seq/recipe/package.py RUN_DIR BUNDLE_DIR

RUN_DIR: the ``magms train`` output (runs/brats-glioma-4seq); BUNDLE_DIR: Resources/Models/brats-glioma-4seq.
The post-processing is read from ``postprocessing.json`` beside this script (chosen with
Testing/benchmarks/bench_postprocess.py on the validation cases).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from magms.bundle import load_bundle, save_bundle
from magms.config import PostprocessConfig
from magms.protocol import METRICS_FILE

HERE = Path(__file__).resolve().parent


def main(run: str, bundle: str) -> None:
    model, info = load_bundle(run)
    post = PostprocessConfig.from_dict(json.loads((HERE / "postprocessing.json").read_text(encoding="utf-8")))
    target = Path(bundle)
    saved = save_bundle(
        target, model, info.network, info.scheme, info.preprocessing, training=info.training, validation=info.validation,
        overwrite=True, postprocessing=post, weights_dtype="float16",
    )
    shutil.copyfile(Path(run) / METRICS_FILE, target / "training_metrics.csv")
    print(f"{target}: weights sha256 {saved.weights_sha256}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
