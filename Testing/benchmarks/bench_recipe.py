"""Which training recipe learns most per CPU minute: four-sequence MAG-MS on the real BraTS 2018 cases.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_recipe.py --minutes 12
    python Testing/benchmarks/bench_recipe.py --minutes 12 --recipes old,budget

Each recipe is one ``magms train`` subprocess on ten of the twelve ``brats18`` cases (FLAIR, T1, T1c,
T2; BraTS 2018 labels), with the same time limit, validating on the two named cases. The table
gives, per recipe: the steps trained, the share of the wall time spent validating, and the final
validation Dice (working grid) as the mean over the 15 subsets and with all four sequences.

    python Testing/benchmarks/bench_recipe.py --minutes 15 --threads 1 --parallel 2 \
        --recipes default,singles1,channels_last,patches1,constant_lr,distill_half

Recipes (``--recipes``), each the defaults of 2026-11-29 (patch 48, validation budget 0.1, batch 2
cases x 2 patches, every single-modality output decoded, cosine schedule, KL and feature weights 1)
but for (``patches1`` learnt most per CPU minute and is the default since):
    old           validate every epoch (``--val-share 1``) and 64-voxel patches: the defaults before
    budget        64-voxel patches (the validation budget alone)
    default       nothing: those defaults (``--samples-per-case 2``)
    singles1      one single-modality output decoded per step (``--singles-per-step 1``), not four
    singles2      two (``--singles-per-step 2``)
    channels_last channels-last 3-D memory layout (``--channels-last``)
    patches1      one patch per case and step (``--samples-per-case 1``): 2 patches per step, not 4
    constant_lr   a constant learning rate after the warm-up (``--lr-schedule constant``)
    distill_half  distillation weights halved (``--kl-weight 0.5 --feature-weight 0.5``)

With ``--parallel 2 --threads 1`` two recipes train at once, one core each: on a 2-core machine every
recipe gets the same CPU time as its neighbour, and the time limit is CPU minutes of one core.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data")) / "brats18"
VALIDATION = ("Brats18_CBICA_AQR_1", "Brats18_TCIA05_396_1")
RECIPES = {
    "old": ["--val-share", "1", "--patch", "64", "--samples-per-case", "2"],
    "budget": ["--patch", "64", "--samples-per-case", "2"],
    "default": ["--samples-per-case", "2"],
    "singles1": ["--samples-per-case", "2", "--singles-per-step", "1"],
    "singles2": ["--samples-per-case", "2", "--singles-per-step", "2"],
    "channels_last": ["--samples-per-case", "2", "--channels-last"],
    "patches1": ["--samples-per-case", "1"],
    "constant_lr": ["--samples-per-case", "2", "--lr-schedule", "constant"],
    "distill_half": ["--samples-per-case", "2", "--kl-weight", "0.5", "--feature-weight", "0.5"],
}


def run(name: str, args: list[str], minutes: float, out: Path, threads: int) -> dict:
    folder = out / name
    command = [sys.executable, "-m", "magms", "train", "--data", str(DATA), "--labels", "brats2021", "--out", str(folder),
               "--slots", "flair,t1,t1c,t2", "--val-cases", ",".join(VALIDATION), "--epochs", "100000",
               "--max-minutes", str(minutes), "--device", "cpu", "--progress", "none", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    wall = time.perf_counter() - start
    info = json.loads((folder / "magms.json").read_text())
    with open(folder / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = info["validation"]
    def mean(target: str) -> float:
        return statistics.fmean(v[f"{target}_dice"] for v in table.values())
    return {
        "recipe": name, "steps": info["training"]["steps"], "epochs": info["training"]["epochs_done"], "wall": wall,
        "val_share": float(rows[-1]["val_seconds"]) / float(rows[-1]["seconds"]),
        "train_seconds": float(rows[-1]["seconds"]) - float(rows[-1]["val_seconds"]),
        "validations": sum(1 for r in rows if r.get("val_dice:flair+t1+t1c+t2:wt")),
        **{f"mean_{t}": mean(t) for t in ("wt", "tc", "et")},
        **{f"all4_{t}": table["flair+t1+t1c+t2"][f"{t}_dice"] for t in ("wt", "tc", "et")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0, help="training time limit of every recipe (default 12)")
    parser.add_argument("--recipes", default="default,singles1,channels_last,patches1,constant_lr,distill_half",
                        help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each training process (default 2)")
    parser.add_argument("--parallel", type=int, default=1, help="recipes trained at once (default 1)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/magms-bench-recipe"))
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: no BraTS 2018 cases (set MAGMS_TEST_DATA)")
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        sys.exit(f"unknown recipe(s) {', '.join(unknown)}: choose from {', '.join(RECIPES)}")
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        results = list(pool.map(lambda name: run(name, RECIPES[name], args.minutes, args.out, args.threads), names))
    print(f"\n{args.minutes:g} minutes each, {args.threads} thread(s), {args.parallel} at once; "
          f"validation Dice on {', '.join(VALIDATION)}\n")
    print("| recipe | steps | s per step | epochs | validations | time validating "
          "| mean of 15 subsets WT/TC/ET | all four WT/TC/ET | wall s |")
    print("|---|---:|---:|---:|---:|---:|---|---|---:|")
    for r in results:
        print(f"| {r['recipe']} | {r['steps']} | {r['train_seconds'] / max(r['steps'], 1):.1f} | {r['epochs']} | "
              f"{r['validations']} | {r['val_share']:.0%} | "
              f"{r['mean_wt']:.2f}/{r['mean_tc']:.2f}/{r['mean_et']:.2f} | "
              f"{r['all4_wt']:.2f}/{r['all4_tc']:.2f}/{r['all4_et']:.2f} | {r['wall']:.0f} |")


if __name__ == "__main__":
    main()
