#!/usr/bin/env bash
# Train the built-in model further on a GPU machine, in short runs that each bring the weights back.
#
# Only the repository travels to a lent GPU machine (64 MiB a call, ignored folders named in `carry`), and a
# call lasts minutes. So the cases travel staged (2 mm, cropped, int16: stage_cases.py), each run starts from
# the weights the one before brought back, and writes its bundle into $OUT, which comes back.
#
# Here, once (from the repository root, with ../shared beside it and the extra cases extracted):
#   python Resources/Models/brats-glioma-4seq/recipe/cases.py ../shared/data MORE EXTRA runs/cross_site
#   python Resources/Models/brats-glioma-4seq/recipe/stage_cases.py runs/cross_site/train.csv runs/staged
# (the 32 training cases: 38 MiB, with the repository's 17 MB under the 64 MiB a call carries)
# There, each call (carry runs/staged, and runs/previous after the first call):
#   bash Resources/Models/brats-glioma-4seq/recipe/gpu_train.sh MINUTES [INIT_BUNDLE]
# INIT_BUNDLE: the bundle the previous call brought back (copy $OUT/bundle to runs/previous here first);
# default: the built-in model. The run's options are finetune.json's with the region loss (the recipe's since
# phase 4), on CUDA, without validation:
# validate what comes back here (Testing/benchmarks/bench_cross_site.py on runs/cross_site/validation.csv).
# What is lost between calls: the optimiser's state (AdamW's moments, 54 MB: more than the 64 MiB a call carries
# allow beside the cases), so each call warms up again.
# Needs: a Python ($PYTHON, default python3) with a CUDA build of torch, MONAI and this checkout's
# dependencies (see KINDS.md of the machine; missing wheels can travel as in the device README).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
MINUTES=${1:?usage: gpu_train.sh MINUTES [INIT_BUNDLE]}
INIT=${2:-$REPO/Resources/Models/brats-glioma-4seq}
OUT_DIR=${OUT:-$REPO/runs/gpu}
PY=${PYTHON:-python3}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
cd "$REPO"
[ -f runs/staged/cases.csv ] || { echo "runs/staged/cases.csv missing: stage the cases here and carry runs/staged" >&2; exit 2; }
"$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || { echo "no CUDA device for $PY" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT_DIR.nvidia-smi.csv" 2>/dev/null || true
rm -rf "$OUT_DIR/bundle"
mkdir -p "$OUT_DIR"
"$PY" -m magms train --config Resources/Models/brats-glioma-4seq/recipe/finetune.json --data runs/staged/cases.csv \
    --out "$OUT_DIR/bundle" --init "$INIT" --seg-loss regions --max-minutes "$MINUTES" --device cuda --progress lines 2>&1 | tee "$OUT_DIR/train.log"
echo "bundle in $OUT_DIR/bundle: carry it back as runs/previous and pass it to the next call"
