"""Which post-processing helps a model: size rules and flip TTA measured on its validation cases.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_postprocess.py                       # the built-in model
    python Testing/benchmarks/bench_postprocess.py --model runs/m1 --tta-axes 0,1,2

Every validation case of the bundle (its provenance's ``validation_cases``, found by name in the
sample data) is segmented from every subset of its sequences without any post-processing; each
candidate set of size rules is then applied to those labels (rules cost no network run). Flip TTA
needs its own runs: each subset once more with the flips of ``--tta-axes`` averaged, then the best
rules on top. The table: mean Dice over cases and subsets (WT/TC/ET on the reference grid), the
same with all the model's sequences, and the seconds per segmentation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from magms.bundle import read_bundle_info  # noqa: E402
from magms.config import PostprocessConfig, SizeRule  # noqa: E402
from magms.demo import held_out_cases  # noqa: E402
from magms.inference import Segmenter  # noqa: E402
from magms.labels import map_labels  # noqa: E402
from magms.metrics import case_dice  # noqa: E402
from magms.modalities import subsets_of  # noqa: E402
from magms.sizerules import apply_size_rules  # noqa: E402

DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data"))


def candidates(scheme_key: str) -> dict[str, tuple[SizeRule, ...]]:
    """Rule sets to compare (BraTS schemes: WT specks removed, a tiny enhancing region relabelled)."""
    core = "necrotic_core" if scheme_key in ("brats2021", "brats2023", "msd_task01") else "necrosis"
    return {
        "none": (),
        "wt<0.1ml": (SizeRule("wt", 0.1, "background"),),
        "wt<0.5ml": (SizeRule("wt", 0.5, "background"),),
        "wt<2ml": (SizeRule("wt", 2.0, "background"),),
        "et total<0.5ml": (SizeRule("enhancing", 0.5, core, "total"),),
        "et cc<0.1ml": (SizeRule("enhancing", 0.1, core),),
        "wt<0.5ml + et total<0.5ml": (SizeRule("wt", 0.5, "background"), SizeRule("enhancing", 0.5, core, "total")),
        "wt<2ml + et total<0.5ml": (SizeRule("wt", 2.0, "background"), SizeRule("enhancing", 0.5, core, "total")),
    }


def run_all(segmenter: Segmenter, cases, subsets_wanted) -> tuple[list[dict], list[float]]:
    """Labels of every case x subset, with the truth; and the seconds of each run."""
    runs, seconds = [], []
    scheme = segmenter.info.scheme
    for case in cases:
        truth_img = sitk.ReadImage(str(case.label))
        truth = np.round(sitk.GetArrayFromImage(truth_img)).astype(np.int64)
        if case.scheme and case.scheme != scheme.key:
            truth = map_labels(truth, case.scheme, scheme)
        for subset in subsets_of([s for s in segmenter.slots if s in case.images]):
            if subsets_wanted and "+".join(subset) not in subsets_wanted:
                continue
            start = time.perf_counter()
            result = segmenter.segment({s: case.images[s] for s in subset})
            seconds.append(time.perf_counter() - start)
            runs.append({"case": case.name, "subset": "+".join(subset), "labels": result.labels, "truth": truth,
                         "voxel_ml": float(np.prod(result.reference.GetSpacing())) / 1000})
            print(f"  {case.name} {'+'.join(subset)}: {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    return runs, seconds


def score(runs: list[dict], scheme, rules) -> dict[str, float]:
    per_run = []
    for run in runs:
        labels = apply_size_rules(run["labels"], scheme, rules, run["voxel_ml"])
        per_run.append((run["subset"], case_dice(labels, run["truth"], scheme)))
    fullest = max(s.count("+") for s, _ in per_run)
    out = {}
    for region in ("wt", "tc", "et"):
        out[f"mean {region}"] = statistics.fmean(d[region] for _, d in per_run)
        out[f"all {region}"] = statistics.fmean(d[region] for s, d in per_run if s.count("+") == fullest)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="bundle folder (default: the built-in model)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tta-axes", default="0", help="flip axes for the TTA runs, e.g. 0 or 0,1,2; empty: no TTA runs")
    parser.add_argument("--tta-subsets", default="", help="subsets for the TTA runs, separated by spaces (default: all)")
    parser.add_argument("--half-cases", type=int, default=1,
                        help="also segment the first N cases with the weights rounded to float16 "
                             "(as a float16 bundle stores them) and compare")
    args = parser.parse_args()
    if args.model is None:
        from magms.builtin import builtin_model

        args.model = builtin_model()
    info = read_bundle_info(args.model)
    cases = held_out_cases(args.data, info)
    print(f"model {args.model}; {len(cases)} validation case(s): {', '.join(c.name for c in cases)}", file=sys.stderr)
    segmenter = Segmenter(args.model, device="cpu", postprocessing=PostprocessConfig())
    runs, seconds = run_all(segmenter, cases, None)
    rows = [(name, score(runs, info.scheme, rules), statistics.median(seconds)) for name, rules in candidates(info.scheme.key).items()]
    best_name, best_scores, _ = max(rows, key=lambda r: r[1]["mean wt"] + r[1]["mean tc"] + r[1]["mean et"])
    best_rules = candidates(info.scheme.key)[best_name]
    if args.tta_axes:
        axes = tuple(int(a) for a in args.tta_axes.split(","))
        wanted = set(args.tta_subsets.split()) if args.tta_subsets else None
        tta = Segmenter(args.model, device="cpu", postprocessing=PostprocessConfig(flip_axes=axes))
        tta_runs, tta_seconds = run_all(tta, cases, wanted)
        label = f"flips {args.tta_axes}" + (f" ({len(wanted)} subsets)" if wanted else "")
        rows.append((label, score(tta_runs, info.scheme, ()), statistics.median(tta_seconds)))
        rows.append((f"{label} + {best_name}", score(tta_runs, info.scheme, best_rules), statistics.median(tta_seconds)))
    if args.half_cases:
        half = Segmenter(args.model, device="cpu", postprocessing=PostprocessConfig())
        with torch.no_grad():
            for p in half.predictor.net.parameters():
                p.copy_(p.half().float())
        half_runs, _ = run_all(half, cases[: args.half_cases], None)
        same = [float(np.mean(h["labels"] == f["labels"])) for h, f in zip(half_runs, runs)]
        full = score(runs[: len(half_runs)], info.scheme, ())
        rounded = score(half_runs, info.scheme, ())
        print(f"\nfloat16 weights, {len(half_runs)} runs: labels equal on {100 * min(same):.3f}% of voxels at least "
              f"(mean {100 * statistics.fmean(same):.4f}%); largest mean Dice change "
              f"{max(abs(full[k] - rounded[k]) for k in full):.4f}")
    print(f"\n{len(cases)} case(s) x every subset; Dice on the reference grid; 'all' = the {len(info.slots)} sequences together\n")
    print("| variant | mean WT | mean TC | mean ET | all WT | all TC | all ET | s per run |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s, sec in rows:
        cells = " | ".join(f"{s[k]:.3f}" for k in ("mean wt", "mean tc", "mean et", "all wt", "all tc", "all et"))
        print(f"| {name} | {cells} | {sec:.1f} |")
    print(f"\nbest rules by mean WT+TC+ET: {best_name}")


if __name__ == "__main__":
    main()
