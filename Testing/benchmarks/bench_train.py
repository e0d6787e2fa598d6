"""Real-data training benchmark: what a few CPU minutes of ``magms train`` buy, per subset policy and loss.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_train.py --minutes 12            # both parts
    python Testing/benchmarks/bench_train.py --part brats --minutes 30

Part ``brats``: train on three of the ``brats_flair_t1c`` cases (BraTS 2013 labels, FLAIR + T1c) and
evaluate on the fourth (``brats_2013_pat0006_1``) for {flair}, {t1c} and {flair, t1c}, for each of
{paper, random_subset} x {distillation, no distillation}, all with the same time budget. Every
run is a fresh ``magms train`` / ``magms evaluate`` subprocess; its peak RSS is that process's
``ru_maxrss``.

Part ``msd``: the six MSD Task01 crops of ``brats_4seq_patches`` (one real patient, 4 sequences,
one-hot labels) are converted to NIfTI with a manifest, the model trains on the four crops whose
slices do not overlap crop 5, and is evaluated on crop 5 for all 15 subsets. The crops come from
one patient, so this shows the 4-modality path works on real contrasts, not how well it generalises.

The tables are printed as markdown; everything is written under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data"))
BRATS_TRAIN = ("brats_2013_pat0003_1", "brats_2013_pat0004_1", "brats_2013_pat0005_1")
BRATS_TEST = "brats_2013_pat0006_1"
CONFIGS = (("paper", True), ("paper", False), ("random_subset", True), ("random_subset", False))
MSD_SLOTS = ("flair", "t1", "t1c", "t2")  # channel order of the crops: FLAIR, T1w, T1gd, T2w
MSD_TEST_CROP = 5


def run_measured(cmd: list[str], log: Path, threads: int) -> tuple[float, float]:
    """Run ``cmd``; returns (wall seconds, peak RSS in GB of that process)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}\nsee {log}")
    return time.perf_counter() - start, usage.ru_maxrss / 2**20


def write_manifest(path: Path, rows: list[dict[str, Path]], slots: tuple[str, ...]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", *slots, "label"])
        for row in rows:
            writer.writerow([row["case"], *(os.path.relpath(row[s], path.parent) for s in slots),
                             os.path.relpath(row["label"], path.parent)])
    return path


def brats_manifests(out: Path) -> tuple[Path, Path]:
    def row(name: str) -> dict:
        folder = DATA / "brats_flair_t1c" / name
        return {"case": name, "flair": folder / "Flair_subtrMeanDivStd.nii.gz", "t1c": folder / "T1c_subtrMeanDivStd.nii.gz",
                "label": folder / "OTMultiClass.nii.gz"}

    slots = ("flair", "t1c")
    return (write_manifest(out / "train.csv", [row(n) for n in BRATS_TRAIN], slots),
            write_manifest(out / "test.csv", [row(BRATS_TEST)], slots))


def msd_manifests(out: Path) -> tuple[Path, Path]:
    """The h5 crops as NIfTI (1 mm, origin from the crop position), label = argmax of the one-hot."""
    import h5py
    import numpy as np
    import SimpleITK as sitk

    rows = []
    for file in sorted((DATA / "brats_4seq_patches" / "BRATS_009").glob("*.h5")):
        k, x, y, z = map(int, re.search(r"_(\d+)_x(\d+)_y(\d+)_z(\d+)\.h5$", file.name).groups())
        with h5py.File(file, "r") as h5:
            images, onehot = h5["x"][()], h5["y"][()]
        folder = out / "crops" / f"crop{k}"
        folder.mkdir(parents=True, exist_ok=True)
        row = {"case": f"crop{k}", "z": z}

        # called only within this iteration: the crop's folder and origin bound here
        def save(array, name: str, pixel, *, folder=folder, x=x, y=y, z=z) -> Path:
            img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)).astype(pixel))  # (x,y,z) -> (z,y,x)
            img.SetOrigin((float(x), float(y), float(z)))
            sitk.WriteImage(img, str(folder / name))
            return folder / name

        for c, slot in enumerate(MSD_SLOTS):
            row[slot] = save(images[c], f"{slot}.nii.gz", np.float32)
        row["label"] = save(onehot.argmax(axis=-1), "label.nii.gz", np.uint8)
        rows.append(row)
    test = next(r for r in rows if r["case"] == f"crop{MSD_TEST_CROP}")
    depth = 16
    train = [r for r in rows if r is not test and (r["z"] + depth <= test["z"] or r["z"] >= test["z"] + depth)]
    return write_manifest(out / "msd_train.csv", train, MSD_SLOTS), write_manifest(out / "msd_test.csv", [test], MSD_SLOTS)


def train_and_evaluate(name: str, train_csv: Path, test_csv: Path, out: Path, train_args: list[str], eval_args: list[str],
                       threads: int) -> dict:
    model = out / name
    cmd = [sys.executable, "-m", "magms", "train", "--data", str(train_csv), "--out", str(model), "--device", "cpu",
           "--progress", "none", "--val-fraction", "0", "--epochs", "100000", *train_args]
    seconds, peak = run_measured(cmd, out / f"{name}.train.log", threads)
    with open(model / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    steps, train_seconds = int(last["step"]), float(last["seconds"])
    cmd = [sys.executable, "-m", "magms", "evaluate", "--model", str(model), "--data", str(test_csv), "--out", str(model / "eval"),
           "--device", "cpu", "--progress", "none", "--overwrite", *eval_args]
    eval_seconds, _ = run_measured(cmd, out / f"{name}.eval.log", threads)
    with open(model / "eval" / "metrics.csv") as f:
        dice = {(r["subset"], r["target"]): float(r["dice"]) for r in csv.DictReader(f)}
    return {"name": name, "steps": steps, "steps_per_s": steps / train_seconds, "train_s": seconds, "peak_gb": peak,
            "eval_s": eval_seconds, "dice": dice}


def table(results: list[dict], subsets: list[str], targets: tuple[str, ...]) -> str:
    lines = ["| run | steps | steps/s | peak RSS GB | " + " | ".join(f"{s} {t}" for s in subsets for t in targets) + " |"]
    lines.append("|" + "---|" * (4 + len(subsets) * len(targets)))
    for r in results:
        cells = [f"{r['dice'].get((s, t), float('nan')):.3f}" for s in subsets for t in targets]
        lines.append(f"| {r['name']} | {r['steps']} | {r['steps_per_s']:.3f} | {r['peak_gb']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("brats", "msd", "both"), default="both")
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget of every run (default 12)")
    parser.add_argument("--msd-minutes", type=float, default=None, help="budget of the MSD run (default: --minutes)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each subprocess (default 2)")
    parser.add_argument("--channels", default="16,32,64,128", help="U-Net channels (default 16,32,64,128)")
    parser.add_argument("--configs", default="all", help="comma-separated policy:distill|nodistill, or all")
    parser.add_argument("--out", type=Path, default=Path("/tmp/magms-bench-train"))
    args = parser.parse_args()
    if not (DATA / "brats_flair_t1c").is_dir():
        sys.exit(f"{DATA}: the shared data is not there (set MAGMS_TEST_DATA)")
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["--channels", args.channels, "--samples-per-case", "4", "--batch-size", "1", "--seed", "0"]
    configs = CONFIGS if args.configs == "all" else [
        (c.split(":")[0], c.split(":")[1] == "distill") for c in args.configs.split(",")]

    if args.part in ("brats", "both"):
        train_csv, test_csv = brats_manifests(args.out)
        results = []
        for policy, distill in configs:
            name = f"brats-{policy}-{'distill' if distill else 'nodistill'}"
            flags = ["--labels", "brats2013", "--policy", policy, "--max-minutes", str(args.minutes), "--spacing", "2", "--patch", "48",
                     *([] if distill else ["--no-distill"]), *common]
            results.append(train_and_evaluate(name, train_csv, test_csv, args.out, flags, ["--subset", "flair", "--subset", "t1c",
                                                                                          "--subset", "flair,t1c"], args.threads))
            print(f"{name}: {results[-1]['steps']} steps, {results[-1]['train_s']:.0f} s", flush=True)
        print(f"\nBraTS 2013, train {', '.join(BRATS_TRAIN)}, test {BRATS_TEST}, {args.minutes:g} min each, Dice:\n")
        print(table(results, ["flair", "t1c", "flair+t1c"], ("wt", "tc", "et")))

    if args.part in ("msd", "both"):
        train_csv, test_csv = msd_manifests(args.out)
        minutes = args.msd_minutes or args.minutes
        flags = ["--labels", "msd_task01", "--max-minutes", str(minutes), "--spacing", "0", "--patch", "64", "64", "16", *common]
        result = train_and_evaluate("msd-paper-distill", train_csv, test_csv, args.out, flags, [], args.threads)
        subsets = sorted({s for s, _ in result["dice"]}, key=lambda s: (s.count("+"), s))
        print(f"\nMSD Task01 crops of BRATS_009, test crop {MSD_TEST_CROP}, {minutes:g} min, "
              f"{result['steps']} steps ({result['steps_per_s']:.3f}/s), peak {result['peak_gb']:.2f} GB:\n")
        print("| subset | WT | TC | ET |\n|---|---|---|---|")
        for s in subsets:
            print(f"| {s} | " + " | ".join(f"{result['dice'].get((s, t), float('nan')):.3f}" for t in ("wt", "tc", "et")) + " |")


if __name__ == "__main__":
    main()
