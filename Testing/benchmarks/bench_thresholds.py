"""Per-region probability thresholds against the argmax: what they gain on a validation, and what an
honest (leave-one-case-out) choice of them would gain on cases it did not choose on.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_thresholds.py runs/cross_site/validation.csv \\
        --model Resources/Models/brats-glioma-4seq --out runs/thresholds.npz

Each case of the manifest (``bench_cross_site.py``'s) is segmented from every subset of its
sequences with the network alone (no size rules, no flips), keeping the class probabilities on the
case's own grid. A region's probability is the sum of its labels' (WT = 1 - background). The
thresholded map is decoded as region-based BraTS models decode theirs: ET where P(ET) > t_ET, else
tumour core where P(TC) > t_TC, else oedema where P(WT) > t_WT, so the regions stay nested. Dice is
measured for every triple of the threshold grid; the table gives the mean over the 15 subsets (mean
over cases first) for:

1. the argmax (what the bundle does today);
2. the triple best on all the cases (chosen on the validation itself: optimistic);
3. leave one case out: each case scored with the triple best on the other cases;
4. as 2 and 3 with one triple for the subsets with T1c and one for those without.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cross_site import read_manifest  # noqa: E402

from magms.config import PostprocessConfig  # noqa: E402
from magms.data.io import read_labelmap  # noqa: E402
from magms.inference import Segmenter  # noqa: E402
from magms.labels import get_scheme, map_labels  # noqa: E402
from magms.metrics import dice  # noqa: E402
from magms.modalities import subsets_of  # noqa: E402

REGIONS = ("wt", "tc", "et")
GRID = np.array([0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7], np.float32)


def threshold_dice(region_p: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Dice of the decoded regions at every threshold of :data:`GRID`: WT (i, j, k), TC (j, k), ET (k,)
    for thresholds ``GRID[i]``, ``GRID[j]``, ``GRID[k]`` on P(WT), P(TC), P(ET)."""
    g, result = len(GRID), {}
    # per voxel and region, how many thresholds of the grid its probability exceeds; then a
    # voxel is in WT at (i, j, k) unless it exceeds at most i, j and k of them: cumulative counts
    exceeds = [np.searchsorted(GRID, region_p[r], side="left").ravel() for r in REGIONS]
    cell = (exceeds[0] * (g + 1) + exceeds[1]) * (g + 1) + exceeds[2]
    for r, axes in (("wt", (0, 1, 2)), ("tc", (1, 2)), ("et", (2,))):
        below = []  # voxels exceeding at most i, j, k thresholds: all of them, and those of the truth
        for weights in (None, truth[r].ravel()):
            hist = np.bincount(cell, weights, minlength=(g + 1) ** 3).reshape((g + 1,) * 3)
            hist = hist.sum(axis=tuple(a for a in range(3) if a not in axes))
            for a in range(hist.ndim):
                hist = hist.cumsum(a)
            below.append(hist[(slice(0, g),) * hist.ndim])
        voxels, in_truth = cell.size, int(truth[r].sum())
        predicted, hit = voxels - below[0], in_truth - below[1]
        total = predicted + in_truth
        result[r] = np.where(total == 0, 1.0, 2.0 * hit / np.maximum(total, 1))
    return result


def measure(model: Path, manifest: Path) -> dict[str, np.ndarray]:
    """Dice arrays: ``argmax`` (case, subset, region), ``wt`` (case, subset, i, j, k), ``tc`` (case,
    subset, j, k), ``et`` (case, subset, k), and ``t1c`` (subset,) whether the subset has T1c."""
    cases, _ = read_manifest(manifest)
    segmenter = Segmenter(model, device="cpu", postprocessing=PostprocessConfig())
    scheme = segmenter.info.scheme
    classes = {r: list(scheme.region_indices(r)) for r in REGIONS}
    subsets = subsets_of(segmenter.slots)
    n, s, g = len(cases), len(subsets), len(GRID)
    out = {"argmax": np.zeros((n, s, 3)), "wt": np.zeros((n, s, g, g, g)), "tc": np.zeros((n, s, g, g)),
           "et": np.zeros((n, s, g)), "t1c": np.array(["t1c" in sub for sub in subsets])}
    for c, case in enumerate(cases):
        label = read_labelmap(case.label)
        truth_values = map_labels(sitk.GetArrayFromImage(label).astype(np.int64), get_scheme(case.scheme or scheme.key), scheme)
        for k, subset in enumerate(subsets):
            start = time.perf_counter()
            seg = segmenter.segment({m: case.images[m] for m in subset}, probabilities=True)
            probs = seg.probabilities
            box = tuple(slice(lo, hi + 1) for lo, hi in zip(*(lambda w: (w.min(1), w.max(1)))(
                np.array(np.nonzero((probs[0] < 0.95) | (truth_values > 0))))))
            region_p = {r: probs[(classes[r], *box)].sum(0) for r in REGIONS}
            truth = {r: scheme.region_mask(truth_values[box], r) for r in REGIONS}
            # voxels outside the box: no truth and every region probability below 0.05
            for r, ri in zip(REGIONS, range(3)):
                out["argmax"][c, k, ri] = dice(scheme.region_mask(seg.labels[box], r), truth[r])
            for r, dice_grid in threshold_dice(region_p, truth).items():
                out[r][c, k] = dice_grid
            print(f"{case.name} {'+'.join(subset)}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return out


def per_subset(d: dict[str, np.ndarray], cases: np.ndarray, triple: tuple[int, int, int]) -> np.ndarray:
    """(subset, 3): WT, TC, ET Dice with ``triple``'s thresholds, mean over ``cases``."""
    i, j, k = triple
    per = np.stack([d["wt"][:, :, i, j, k], d["tc"][:, :, j, k], d["et"][:, :, k]], -1)  # (case, subset, 3)
    return per[cases].mean(0)


def best_triple(d: dict[str, np.ndarray], cases: np.ndarray, subsets: np.ndarray) -> tuple[int, int, int]:
    """The triple with the highest sum of the WT, TC and ET means over those cases and subsets."""
    g = len(GRID)
    return max(itertools.product(range(g), range(g), range(g)), key=lambda t: per_subset(d, cases, t)[subsets].mean(0).sum())


def chosen_per_subset(d: dict[str, np.ndarray], groups: list[np.ndarray], loo: bool) -> tuple[np.ndarray, set[str]]:
    """(subset, 3) means over the cases, each subset group with its own best triple: chosen on all the cases,
    or (``loo``) for each case on the others; and the triples chosen."""
    n, s = d["argmax"].shape[:2]
    per, names = np.zeros((n, s, 3)), set()
    for c in range(n) if loo else [None]:
        scored = np.arange(n) if c is None else np.array([c])
        chosen_on = np.arange(n) if c is None else np.array([o for o in range(n) if o != c])
        for g, group in enumerate(groups):
            t = best_triple(d, chosen_on, group)
            names.add(f"{'ABCD'[g]}:" + "/".join(f"{GRID[x]:.2f}" for x in t) if len(groups) > 1 else "/".join(f"{GRID[x]:.2f}" for x in t))
            per[np.ix_(scored, group)] = per_subset(d, scored, t)[group]
    return per.mean(0), names


def report(d: dict[str, np.ndarray]) -> None:
    s = d["argmax"].shape[1]
    every = [np.arange(s)]
    by_t1c = [np.nonzero(d["t1c"])[0], np.nonzero(~d["t1c"])[0]]  # A: with T1c, B: without

    def row(what: str, thresholds: str, per: np.ndarray) -> None:
        mean, with_t1c, without = per.mean(0), per[by_t1c[0]].mean(0), per[by_t1c[1]].mean(0)
        print(f"| {what} | {thresholds} | " + " | ".join(f"{x:.3f}" for x in mean) + " | "
              + " / ".join(f"{x:.3f}" for x in with_t1c) + " | " + " / ".join(f"{x:.3f}" for x in without) + " |")

    print("| decode | thresholds WT/TC/ET | WT | TC | ET | with T1c WT/TC/ET | without T1c WT/TC/ET |")
    print("|---|---|---|---|---|---|---|")
    row("argmax (today)", "-", d["argmax"].mean(0))
    half = int(np.argmin(abs(GRID - 0.5)))
    row("regions at 0.5", "0.50/0.50/0.50", per_subset(d, np.arange(d["argmax"].shape[0]), (half, half, half)))
    for groups, what in ((every, "one triple"), (by_t1c, "a triple with T1c (A), one without (B)")):
        per, names = chosen_per_subset(d, groups, loo=False)
        row(f"{what}, chosen on all cases (optimistic)", ", ".join(sorted(names)), per)
        per, names = chosen_per_subset(d, groups, loo=True)
        row(f"{what}, leave one case out", ", ".join(sorted(names)), per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, help="validation.csv (bench_cross_site.py's)")
    parser.add_argument("--model", type=Path, required=True, help="bundle folder")
    parser.add_argument("--out", type=Path, required=True, help="the Dice arrays (.npz): measured once, reported from here")
    args = parser.parse_args()
    if not args.out.exists():
        np.savez(args.out, **measure(args.model, args.manifest))
    report(dict(np.load(args.out)))


if __name__ == "__main__":
    main()
