#!/usr/bin/env bash
# Reproduce the built-in model from a checkout with ../shared beside it:
#   bash Resources/Models/brats-glioma-4seq/recipe/train.sh GIT_DIR_OF_BioExp
# GIT_DIR_OF_BioExp: a snapshot of github.com/koriavinash1/BioExp (clone or bare), for the 12 more
# BraTS 2018 cases. The run writes runs/brats-glioma-4seq/ (checkpoint, metrics.csv, the bundle);
# it stops after train.json's max_minutes and resumes with --resume.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
recipe=Resources/Models/brats-glioma-4seq/recipe
more=runs/brats18_more
[ -d "$more" ] || bash ../shared/tools/brats18_more.sh "${1:?usage: train.sh GIT_DIR_OF_BioExp}" "$more"
.venv/bin/python "$recipe/make_manifest.py" ../shared/data "$more" runs/brats-glioma-4seq/manifest.csv
.venv/bin/magms train --config "$recipe/train.json" "${@:2}"
