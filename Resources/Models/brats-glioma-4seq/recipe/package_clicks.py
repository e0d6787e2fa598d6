"""Package a click-training run (``magms train --max-clicks N --init BUNDLE``) into the built-in bundle it started from.

Usage (from the repository root):
  python Resources/Models/brats-glioma-4seq/recipe/package_clicks.py RUN_DIR BUNDLE_DIR

The run froze the bundle's network and trained only its click guidance, so with no click the new bundle gives
the bundle's results exactly: this checks that every weight but the guidance's is the bundle's own, then writes
the run's network into BUNDLE_DIR with the bundle's training record (the click run's added as ``click_training``),
its validation and post-processing, half-precision weights as before, and the click run's curve beside it.
A run that started from this bundle's own click guidance (``--init BUNDLE_DIR``) keeps the earlier click run's
record under ``continued``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from magms.bundle import load_bundle, save_bundle
from magms.protocol import METRICS_FILE


def main(run: str, bundle: str) -> None:
    guided, info = load_bundle(run)
    automatic, base = load_bundle(bundle)
    weights = guided.state_dict()
    for name, value in automatic.state_dict().items():
        if not name.startswith("guidance.") and not torch.equal(weights[name], value):
            sys.exit(f"{run}: weight {name} differs from {bundle}'s: not a click run of that bundle")
    clicks = dict(info.training)
    init = info.training.get("init")
    if "click_training" in base.training and init is not None and Path(init).resolve() == Path(bundle).resolve():
        clicks["continued"] = base.training["click_training"]
    saved = save_bundle(
        bundle, guided, info.network, base.scheme, base.preprocessing, training={**base.training, "click_training": clicks},
        validation=base.validation, overwrite=True, postprocessing=base.postprocessing, weights_dtype="float16",
    )
    shutil.copyfile(Path(run) / METRICS_FILE, Path(bundle) / "click_training_metrics.csv")
    print(f"{bundle}: weights sha256 {saved.weights_sha256}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
