"""Interactive refinement with simulated clicks: Dice after 0, 1, 3, 5 and 10 clicks, NoC@90, and the latency per click.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_clicks.py runs/cross_site/validation.csv --model Resources/Models/brats-glioma-4seq

The manifest is the cross-site validation's (``Resources/Models/brats-glioma-4seq/recipe/cases.py``): cases the model
was not trained on, from several sources. For each case, subset of sequences and region, the case is segmented
automatically (the bundle's post-processing included: 0 clicks is the automatic model), then 10 clicks are
simulated one after the other, as the interactive-segmentation literature does (Sakinis et al. 2019): each at the
deepest point of the largest error of the region as it stands (:func:`magms.clicks.next_click`, on the
reference grid, in mm), positive for a miss, negative for a spurious part, through the same
:class:`~magms.inference.refine.Refiner` the worker runs. Dice is taken on the reference grid against the label.

Tables: mean Dice per subset and region after 0/1/3/5/10 clicks, the mean number of clicks to reach Dice 0.90
(NoC@90; a case that never does counts 10, and how many never did is shown), the same per source; then the
latency of a click from request to reply through a real ``magms serve`` process on pipes (p50, p95, max), the
worker alone on the machine, then the time the Segmenter's logic takes to write each reply's box into the label
segments of a segmentation node (``MAGMSSegmenterLib.refine.RefineSession``, on the real MRML of ``slicer-core``),
and the two added: click to updated segment.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "Testing"))  # conftest: the Slicer-side folders on sys.path, as in Slicer

from bench_cross_site import read_manifest  # noqa: E402

from magms.clicks import next_click  # noqa: E402
from magms.inference.refine import Refiner  # noqa: E402
from magms.labels import get_scheme  # noqa: E402
from magms.protocol import decode_patch, read_message, worker_request  # noqa: E402

SHOWN = (0, 1, 3, 5, 10)
SUBSETS = ("flair", "t1c", "flair+t1+t1c+t2")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def simulate(refiner: Refiner, truth: np.ndarray, values: tuple[int, ...], region: str, clicks: int,
             latencies: list[float]) -> list[float]:
    """Dice after 0..clicks simulated clicks on ``region`` (truth: its mask on the reference grid)."""
    spacing = refiner.reference.GetSpacing()[::-1]
    scores = [dice(np.isin(refiner.labels, values), truth)]
    for _ in range(clicks):
        click = next_click(np.isin(refiner.labels, values), truth, spacing)
        if click is None:
            scores.append(scores[-1])
            continue
        point = refiner.reference.TransformIndexToPhysicalPoint([int(v) for v in click.index[::-1]])
        started = time.perf_counter()
        refiner.click(point, region, click.positive)
        latencies.append(time.perf_counter() - started)
        scores.append(dice(np.isin(refiner.labels, values), truth))
    refiner.clear()
    return scores


def worker_latency(model: Path, case, truth_of, clicks: int) -> tuple[list[float], list[float]]:
    """Seconds from writing a click request to reading its reply, through a real ``magms serve`` process; and the
    seconds the Segmenter's logic then takes to write each reply into the segments."""
    worker = subprocess.Popen([sys.executable, "-m", "magms", "serve", "--model", str(model), "--engine", "eager"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)

    def ask(line: str) -> dict:
        worker.stdin.write(line)
        worker.stdin.flush()
        reply = read_message(worker.stdout.readline(), "reply")
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply

    read_message(worker.stdout.readline(), "ready line")
    ask(worker_request("open", 0, inputs={s: str(p) for s, p in case.images.items()}))
    # the clicks are placed by a Refiner of its own in this process, which follows the worker's labels
    local = Refiner(model, engine="eager")
    local.open(case.images)
    truth, values = truth_of("wt")
    spacing = local.reference.GetSpacing()[::-1]
    seconds, patches = [], []
    automatic = local.labels.copy()
    for number in range(clicks):
        click = next_click(np.isin(local.labels, values), truth, spacing)
        if click is None:
            break
        point = local.reference.TransformIndexToPhysicalPoint([int(v) for v in click.index[::-1]])
        started = time.perf_counter()
        reply = ask(worker_request("click", number + 1, point=list(point), frame="LPS", region="wt", positive=click.positive))
        patches.append(decode_patch(reply["patch"]))
        seconds.append(time.perf_counter() - started)
        local.click(point, "wt", click.positive)
    ask(worker_request("stop", clicks + 1))
    worker.wait(timeout=60)
    return seconds, slicer_write_seconds(model, local, case, automatic, patches)


def slicer_write_seconds(model: Path, refiner: Refiner, case, automatic: np.ndarray, patches) -> list[float]:
    """Seconds to write each patch into a segmentation node made from the automatic labels, as the Segmenter does."""
    import tempfile

    import slicer

    import conftest
    from magms.data.io import write_labelmap
    from MAGMSSegmenterLib.refine import RefineSession
    from MAGMSSegmenterLib.results import importSegmentation

    scene = slicer.vtkMRMLScene()
    slot = next(s for s in refiner.info.slots if s in case.images)
    reference = conftest.load_scene_volume(scene, Path(case.images[slot]), slot)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "automatic.seg.nrrd"
        write_labelmap(automatic, refiner.reference, path, refiner.info.scheme)
        segmentation = importSegmentation(scene, path, reference, refiner.info.scheme, "automatic")
    session = RefineSession(scene, segmentation, [(slot, reference)], model, refiner.info)
    seconds = []
    for patch in patches:
        started = time.perf_counter()
        session._write(patch)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="validation.csv with a source column")
    parser.add_argument("--model", type=Path, required=True, help="bundle folder of a model that takes clicks")
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS), metavar="A+B")
    parser.add_argument("--regions", nargs="+", default=["wt", "tc", "et"])
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--latency-cases", type=int, default=2, help="cases whose clicks are timed through a worker process")
    args = parser.parse_args()

    cases, sources = read_manifest(args.manifest)
    refiner = Refiner(args.model, engine="eager")
    model_scheme = refiner.info.scheme
    curves: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    by_source: dict[tuple[str, str, str], list[list[float]]] = defaultdict(list)
    latencies: list[float] = []
    for case in cases:
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        scheme = get_scheme(case.scheme) if case.scheme else model_scheme
        for subset in args.subsets:
            slots = subset.split("+")
            if not all(s in case.images for s in slots):
                continue
            refiner.open({s: case.images[s] for s in slots})
            for region in args.regions:
                truth = np.isin(label, scheme.region_values(region))
                scores = simulate(refiner, truth, model_scheme.region_values(region), region, args.clicks, latencies)
                curves[(subset, region)].append(scores)
                by_source[(sources[case.name], subset, region)].append(scores)
                print(f"  {case.name} {subset} {region}: " + " ".join(f"{s:.3f}" for s in scores), file=sys.stderr, flush=True)

    def noc(runs: list[list[float]]) -> tuple[float, int]:
        counts = [next((k for k, s in enumerate(r) if s >= 0.90), args.clicks) for r in runs]
        never = sum(1 for r in runs if max(r) < 0.90)
        return statistics.mean(counts), never

    shown = [k for k in SHOWN if k <= args.clicks]
    print(f"\nDice after k simulated clicks ({len(cases)} cases, mean), NoC@90 (clicks to Dice 0.90, at most {args.clicks})\n")
    print("| subset | region | " + " | ".join(f"{k} clicks" for k in shown) + " | NoC@90 | never 0.90 |")
    print("|---|---|" + "---|" * len(shown) + "---|---|")
    for (subset, region), runs in curves.items():
        means = [statistics.mean(r[k] for r in runs) for k in shown]
        n, never = noc(runs)
        print(f"| {subset} | {region.upper()} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {n:.1f} | {never} of {len(runs)} |")
    print("\nPer source: Dice after 0 and 5 clicks\n")
    print("| source | subset | region | cases | 0 clicks | 5 clicks |")
    print("|---|---|---|---|---|---|")
    for (source, subset, region), runs in sorted(by_source.items()):
        print(f"| {source} | {subset} | {region.upper()} | {len(runs)} | {statistics.mean(r[0] for r in runs):.3f} | "
              f"{statistics.mean(r[min(5, args.clicks)] for r in runs):.3f} |")
    if latencies:
        q = np.quantile(latencies, [0.5, 0.95])
        print(f"\nIn-process click (Refiner.click), all {len(latencies)} clicks above: p50 {q[0]:.3f} s, p95 {q[1]:.3f} s")
    del refiner
    worker_seconds, write_seconds = [], []
    full = [c for c in cases if len(c.images) == 4][: args.latency_cases]
    for case in full:
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        scheme = get_scheme(case.scheme) if case.scheme else model_scheme

        def truth_of(region: str, label=label, scheme=scheme):
            return np.isin(label, scheme.region_values(region)), model_scheme.region_values(region)

        replies, writes = worker_latency(args.model, case, truth_of, args.clicks)
        worker_seconds += replies
        write_seconds += writes
    if worker_seconds:
        print(f"\nLatency per click, all four sequences, WT, {len(worker_seconds)} clicks on {len(full)} cases (seconds)\n")
        print("| step | p50 | p95 | max |")
        print("|---|---|---|---|")
        total = [a + b for a, b in zip(worker_seconds, write_seconds)]
        for name, values in (("click to reply through `magms serve` on pipes", worker_seconds),
                             ("reply written into the segments (Segmenter logic, slicer-core)", write_seconds),
                             ("click to updated segment", total)):
            q = np.quantile(values, [0.5, 0.95])
            print(f"| {name} | {q[0]:.3f} | {q[1]:.3f} | {max(values):.3f} |")


if __name__ == "__main__":
    main()
