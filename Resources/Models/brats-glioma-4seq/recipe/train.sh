#!/usr/bin/env bash
# Reproduce the built-in model from a checkout with ../shared beside it, phase by phase:
#   bash Resources/Models/brats-glioma-4seq/recipe/train.sh MIRRORS [PHASE...]
# MIRRORS: a folder with git snapshots (clone or bare) of the six public repositories the two extraction
# scripts name, as OWNER+NAME/repo (koriavinash1+BioExp/repo, indigoYoshimaru+3d-brain-thesis/repo, ...).
# Phases (default: all eight, each continuing from the one before):
#   1  train.json     2 h from scratch on 25 cases (the version-1 model, 2026-11-29)  -> runs/brats-glioma-4seq/
#   2  finetune.json  45 min on the 32 training cases of the cross-site split         -> runs/cross_site/ft_light/
#   3  continue.json  50 min more, validated on the 9 cross-site cases at its end     -> runs/cross_site/ft2_light/
#   4  regions.json   60 min more with the Dice on the BraTS regions (version 3)      -> runs/cross_site/ft3_regions/
#   5  regions_more.json  100 min more, same options (version 4)                     -> runs/cross_site/ft4_regions/
#   6  regions_more.json  100 min more from phase 5, same options (version 5)        -> runs/cross_site/ft5_regions/
#   7  clicks.json    60 min of click training: phase 6 frozen (packaged as version 5 was, into runs/cross_site/ft5_pkg/),
#                     its click guidance trained with up to 5 simulated clicks     -> runs/cross_site/clicks/
#                     packaged into Resources/Models/brats-glioma-4seq (version 6; then each patch kept all its
#                     sequences, since 2026-12-07 it draws a random subset of them, as in phase 8)
#   8  clicks_subsets.json  80 min more of click training from that bundle, each patch with a random subset of its
#                     sequences (version 7)                                            -> runs/cross_site/clicks_subsets/
#                     packaged into Resources/Models/brats-glioma-4seq
# A phase stops after its max_minutes; one stopped early resumes with `magms train --out RUN --resume`. To train further
# (another sitting, another machine): magms train --config recipe/regions.json --init Resources/Models/brats-glioma-4seq
# --out runs/next (the committed weights); on a GPU machine: recipe/gpu_train.sh.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
recipe=Resources/Models/brats-glioma-4seq/recipe
mirrors=${1:?usage: train.sh MIRRORS [PHASE...]}
shift
phases=${*:-1 2 3 4 5 6 7 8}
[ -d runs/brats18_more ] || bash ../shared/tools/brats18_more.sh "$mirrors/koriavinash1+BioExp/repo" runs/brats18_more
[ -d runs/brats_extra ] || bash ../shared/tools/brats_extra.sh "$mirrors" runs/brats_extra
.venv/bin/python "$recipe/make_manifest.py" ../shared/data runs/brats18_more runs/brats-glioma-4seq/manifest.csv
.venv/bin/python "$recipe/cases.py" ../shared/data runs/brats18_more runs/brats_extra runs/cross_site
for phase in $phases; do
  case $phase in
    1) .venv/bin/magms train --config "$recipe/train.json" ;;
    2) .venv/bin/magms train --config "$recipe/finetune.json" ;;
    3) .venv/bin/magms train --config "$recipe/continue.json" ;;
    4) .venv/bin/magms train --config "$recipe/regions.json" ;;
    5) .venv/bin/magms train --config "$recipe/regions_more.json" ;;
    6) .venv/bin/magms train --config "$recipe/regions_more.json" --init runs/cross_site/ft4_regions \
         --out runs/cross_site/ft5_regions ;;
    7) .venv/bin/python "$recipe/package.py" runs/cross_site/ft5_regions runs/cross_site/ft5_pkg
       .venv/bin/magms train --config "$recipe/clicks.json"
       .venv/bin/python "$recipe/package_clicks.py" runs/cross_site/clicks Resources/Models/brats-glioma-4seq ;;
    8) .venv/bin/magms train --config "$recipe/clicks_subsets.json"
       .venv/bin/python "$recipe/package_clicks.py" runs/cross_site/clicks_subsets Resources/Models/brats-glioma-4seq ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
