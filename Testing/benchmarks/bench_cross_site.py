"""How a model does on hospitals it never saw: Dice per source, lesion-wise WT and false-positive components.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_cross_site.py runs/cross_site/validation.csv \\
        --model Resources/Models/brats-glioma-4seq --model runs/cross_site/ft_strong

The manifest is the one ``Resources/Models/brats-glioma-4seq/recipe/cases.py`` writes: a CSV
``case,flair,t1,t1c,t2,label,scheme,source`` (paths relative to it; ``scheme`` names a label file's
scheme when it is not the model's; ``source`` where the case was acquired). Every case is segmented
from every subset of its sequences (``magms.evaluate.evaluate``: the real pipeline, each case's own
grid, the bundle's post-processing unless ``--no-postprocessing``; with ``--tta`` each model a second
time with flip test-time augmentation over all three axes, named ``MODEL +TTA``; ``--subsets`` to run only
those), then the tables:

1. per model: the mean over the subsets (15 for a four-sequence model), with all its sequences, and with
   each one alone (WT/TC/ET Dice, mean over cases); the BraTS 2023 lesion-wise WT Dice with all; the
   false-positive WT components per case, mean over the cases, for each subset; the median
   seconds per segmentation;
2. per model and source: the mean over the subsets and with all the model's sequences.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from magms.bundle import open_model  # noqa: E402
from magms.data.cases import Case  # noqa: E402
from magms.evaluate import evaluate  # noqa: E402
from magms.inference import Segmenter  # noqa: E402
from magms.inference.postprocess import as_requested  # noqa: E402

REGIONS = ("wt", "tc", "et")


def read_manifest(path: Path) -> tuple[list[Case], dict[str, str]]:
    """The cases of the manifest and each case's source."""
    cases, sources = [], {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            images = {s: (path.parent / row[s]).resolve() for s in ("flair", "t1", "t1c", "t2") if row[s]}
            cases.append(Case(row["case"], images, (path.parent / row["label"]).resolve(), scheme=row["scheme"] or None))
            sources[row["case"]] = row["source"]
    return cases, sources


def run_model(
    model: Path, cases: list[Case], postprocess: bool, tta: bool = False, subsets: list[list[str]] | None = None,
) -> tuple[list[dict], float]:
    """Region rows of every case and subset (``None``: all the case has), and the median seconds per segmentation."""
    opened = open_model(model)
    segmenter = Segmenter(opened, device="cpu", postprocessing=as_requested(opened.info.postprocessing, postprocess, tta))
    rows, seconds = [], []

    def progress(what: str) -> None:
        print(f"  {model.name}: {what}", file=sys.stderr, flush=True)

    for case in cases:  # one case at a time: each with its own label scheme
        started = time.perf_counter()
        case_rows = evaluate(segmenter, [case], data_labels=case.scheme, subsets=subsets, progress=progress)
        runs = len({r["subset"] for r in case_rows})
        seconds += [(time.perf_counter() - started) / runs] * runs
        rows += [r for r in case_rows if r["kind"] == "region"]
    return rows, statistics.median(seconds)


def table(rows: list[dict], subsets: list[str] | None) -> dict[str, float]:
    """Mean Dice per region over the cases (each case's mean over ``subsets``; None: all its subsets)."""
    by_case: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if subsets is None or r["subset"] in subsets:
            by_case[r["case"]][r["target"]].append(float(r["dice"]))
    return {g: statistics.fmean(statistics.fmean(c[g]) for c in by_case.values() if c[g]) for g in REGIONS}


def cells(scores: dict[str, float]) -> str:
    return " | ".join(f"{scores[g]:.3f}" for g in REGIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="validation.csv with a source column")
    parser.add_argument("--model", type=Path, action="append", required=True, help="bundle folder (repeatable)")
    parser.add_argument("--no-postprocessing", action="store_true", help="leave out the bundle's size rules and TTA")
    parser.add_argument("--tta", action="store_true", help="also each model with flip test-time augmentation over all three axes")
    parser.add_argument("--subsets", nargs="+", metavar="A+B", help="only these subsets, e.g. flair t1c flair+t1+t1c+t2 (default: all)")
    args = parser.parse_args()
    cases, sources = read_manifest(args.manifest)
    subsets = [s.split("+") for s in args.subsets] if args.subsets else None
    results = {m.name: run_model(m, cases, not args.no_postprocessing, subsets=subsets) for m in args.model}
    if args.tta:
        results |= {f"{m.name} +TTA": run_model(m, cases, not args.no_postprocessing, True, subsets) for m in args.model}
    # a model's largest subset: all four sequences for the built-in model, FLAIR+T1c for one trained on two
    largest = {m: max({r["subset"] for r in rows}, key=lambda s: s.count("+")) for m, (rows, _) in results.items()}
    print(f"\n{len(cases)} validation cases; Dice on each case's grid, mean over cases; "
          f"post-processing {'off' if args.no_postprocessing else 'as the bundle says'}\n")
    print("| model | mean over subsets WT | TC | ET | all sequences WT | TC | ET | lesion-wise WT, all sequences | s per run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, (rows, sec) in results.items():
        full = largest[model]
        lesion = statistics.fmean(float(r["lesion_dice"]) for r in rows if r["subset"] == full and r["target"] == "wt")
        print(f"| {model} | {cells(table(rows, None))} | {cells(table(rows, [full]))} | {lesion:.3f} | {sec:.1f} |")
    print("\n| model | subset | WT | TC | ET | lesion-wise WT | false-positive WT components per case |")
    print("|---|---|---|---|---|---|---|")
    for model, (rows, _) in results.items():
        for subset in sorted({r["subset"] for r in rows}, key=lambda s: (s.count("+"), s)):
            wt = [r for r in rows if r["subset"] == subset and r["target"] == "wt"]
            fp = statistics.fmean(float(r["false_positives"]) for r in wt)
            lesion = statistics.fmean(float(r["lesion_dice"]) for r in wt)
            print(f"| {model} | {subset} | {cells(table(rows, [subset]))} | {lesion:.3f} | {fp:.1f} |")
    print("\n| model | source | cases | mean over subsets WT | TC | ET | all sequences WT | TC | ET |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, (rows, _) in results.items():
        full = largest[model]
        for source in sorted(set(sources.values())):
            mine = [r for r in rows if sources[r["case"]] == source]
            n = len({r["case"] for r in mine})
            print(f"| {model} | {source} | {n} | {cells(table(mine, None))} | {cells(table(mine, [full]))} |")


if __name__ == "__main__":
    main()
