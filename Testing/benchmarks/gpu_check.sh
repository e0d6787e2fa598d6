#!/usr/bin/env bash
# The checks that need a CUDA GPU, in at most 8 minutes (each step has its own time limit; they add up
# to 465 s). Run from anywhere:
#
#   bash Testing/benchmarks/gpu_check.sh [RESULTS_DIR]      # default: $OUT, else ./gpu_check_results
#
# Needs: a Python ($PYTHON, default python3) with a CUDA build of torch and this checkout importable
# (pip install -e ., or this script puts the checkout on PYTHONPATH); real data in $MAGMS_TEST_DATA
# (default ../shared/data): brats18/ with Brats18_CBICA_AQR_1 and a few more labelled cases (four
# cases, about 32 MB, are enough: copy them into an ignored folder of the checkout to carry them).
# Optional: the reference package magms==2.2 (import name magnet) for the UNETR comparison, e.g.
# pip install --no-deps --target ref/ magms==2.2 torchmanager, then PYTHONPATH=ref.
#
# Steps (a log each in RESULTS_DIR, one line each in RESULTS_DIR/summary.txt):
#   devices          magms devices: the device choice and the versions, as JSON
#   cuda-tests       pytest -m cuda: AMP against the CPU, out-of-memory fallback under a memory cap
#                    (torch.cuda.set_per_process_memory_fraction), the engine on CUDA (eager)
#   torchrun-nccl    a few steps of magms train under torchrun, one rank, DDP over NCCL (gpu_nccl_train.py)
#   reference-unetr  bench_reference.py --backbone unetr --device cuda: ours vs the reference, equality and
#                    the training step (skipped with a line when magnet is not importable)
#   inference-times  bench_engines.py --device cuda: whole-case magms segment and network times with the
#                    built-in model, AMP and full precision; the table goes to RESULTS_DIR/inference_times.md
# Exit status: 0 when every step that ran passed, 1 otherwise.

set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS=${1:-${OUT:-$PWD/gpu_check_results}}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MAGMS_TEST_DATA=${MAGMS_TEST_DATA:-$REPO/../shared/data}
export MAGMS_ENGINE_CACHE="$RESULTS/engines"
DATA=$MAGMS_TEST_DATA
cd "$REPO" || exit 1
: > "$RESULTS/summary.txt"
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to RESULTS/NAME.log
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (at most ${limit} s)"
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$RESULTS/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc after $(( $(date +%s) - start )) s$([ "$rc" -eq 124 ] && echo ' (time limit)')" | tee -a "$RESULTS/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device for $PY: nothing to check" | tee -a "$RESULTS/summary.txt"
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$RESULTS/nvidia-smi.csv" 2>&1 || true

step devices 20 "$PY" -m magms devices --output "$RESULTS/devices.json"
step cuda-tests 110 "$PY" -m pytest -q -p no:cacheprovider -rs -m cuda Testing/test_cuda.py
rm -rf "$RESULTS/nccl_train"
step torchrun-nccl 70 "$PY" -m torch.distributed.run --nproc_per_node=1 --master_port=29531 \
    Testing/benchmarks/gpu_nccl_train.py --data "$DATA/brats18" --out "$RESULTS/nccl_train" --device cuda
if "$PY" -c "import magnet" > /dev/null 2>&1; then
    step reference-unetr 75 "$PY" Testing/benchmarks/bench_reference.py --backbone unetr --device cuda --repeats 3 \
        --json "$RESULTS/reference_unetr.json"
else
    echo "reference-unetr: skipped, the reference package (magms==2.2, import name magnet) is not importable" | tee -a "$RESULTS/summary.txt"
fi
step inference-times 190 "$PY" Testing/benchmarks/bench_engines.py --device cuda --part e2e,network \
    --variants eager:amp,eager:fp32 --repeats 3 --skip-startup --output "$RESULTS/inference_times.md"

echo "results in $RESULTS (summary.txt, *.log, devices.json, inference_times.md)"
exit $status
