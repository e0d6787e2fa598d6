"""Eager PyTorch vs the exported engines (OpenVINO, ONNX Runtime) with the built-in model on real cases.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_engines.py                   # every part, medians of 3 (about an hour on 2 cores)
    python Testing/benchmarks/bench_engines.py --quick           # one run each, 3 batch cases: checks that it works
    python Testing/benchmarks/bench_engines.py --part agreement  # labels and Dice only (timing-free)

Variants (``--variants ENGINE:PRECISION,...``): eager fp32, onnxruntime fp32, openvino fp32 and
openvino auto (bf16 on CPUs with bf16 instructions), those installed. With ``--device cuda`` (the GPU
check, ``gpu_check.sh``): ``eager:amp`` (mixed precision, the default on CUDA) and ``eager:fp32``
(``--no-amp``). The graphs are exported once into a temporary cache
(``$MAGMS_ENGINE_CACHE``) before any timing; the export's own time is printed. Parts, printed as
markdown tables:

* **e2e**: ``magms segment`` of one BraTS 2018 case (``--case``) as a subprocess, from process start to
  the file written, from one sequence (``--one``) and from all four (with ``--baseline REF``, first
  the same commands of magms at that commit, and each variant's speed-up over it), and the start-up
  share: the imports before any work of a run on cached graphs (``magms.inference``, ``openvino``)
  against the whole command, what the eager engine adds (torch, MONAI), and the largest packages of
  ``python -X importtime``.
* **network**: the network part of the same runs (:attr:`Segmentation.seconds`), in one process per variant.
* **batch**: ``magms segment --batch`` of ``--batch-cases`` cases in one process, seconds per case.
* **agreement**: on the three validation cases of the built-in model, every one of the 15 subsets:
  the share of voxels whose label equals eager fp32's, and WT/TC/ET Dice against the truth, mean over
  cases and subsets, with the difference to eager.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data"))
BRATS18 = DATA / "brats18"
SLOTS = ("flair", "t1", "t1c", "t2")
FILES = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}
VALIDATION = ("Brats18_CBICA_AQR_1", "Brats18_TCIA05_396_1", "Brats18_CBICA_AMH_1")
VARIANTS = (("eager", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "auto"))
PARTS = ("e2e", "network", "batch", "agreement")


def _images(case: str) -> dict[str, Path]:
    return {slot: BRATS18 / case / f"{case}_{FILES[slot]}.nii.gz" for slot in SLOTS}


def _env(cache: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               MAGMS_ENGINE_CACHE=str(cache))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _timed(command: list[str], env: dict[str, str], cwd: Path = REPO) -> float:
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return seconds


BASELINE = "baseline"


def _engine_flags(engine: str, precision: str, device: str) -> list[str]:
    # eager's precision is AMP on CUDA (amp) or not (fp32); the exported engines' is --precision
    if engine == BASELINE:  # an older magms, before --engine
        return ["--device", device]
    if engine == "eager":
        return ["--device", device, "--engine", "eager"] + (["--no-amp"] if precision == "fp32" else [])
    return ["--device", device, "--engine", engine, "--precision", precision]


def _segment_command(inputs: dict[str, Path], output: Path, engine: str, precision: str, device: str) -> list[str]:
    args = [sys.executable, "-m", "magms", "segment"]
    for slot, path in inputs.items():
        args += ["--input", f"{slot}={path}"]
    return args + ["--output", str(output), "--overwrite", "--progress", "none", *_engine_flags(engine, precision, device)]


def _segmenter(spec: dict):
    import torch

    from magms.builtin import builtin_model
    from magms.inference import Segmenter

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    eager = spec["engine"] == "eager"
    return Segmenter(builtin_model(), device=spec.get("device", "cpu"), engine=spec["engine"],
                     precision="fp32" if eager else spec["precision"], amp=not (eager and spec["precision"] == "fp32"))


def _name(engine: str, precision: str) -> str:
    return f"{engine} {precision}" if engine != BASELINE else f"magms at {precision} (eager)"


def _where(engine: str, precision: str, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """The environment and folder a variant's commands run in: the baseline's worktree for it."""
    if engine != BASELINE:
        return env, REPO
    folder = Path(env["MAGMS_BASELINE_TREE"])
    return dict(env, PYTHONPATH=str(folder)), folder


def _baseline_tree(ref: str, tmp: Path) -> Path:
    """A checkout of ``ref`` (e.g. main before a change) to time its ``magms segment`` side by side."""
    folder = tmp / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), ref], check=True, capture_output=True)
    return folder


# --------------------------------------------------------------------------------------------
# children: each variant in its own process


def _child_network(spec: dict) -> dict:
    segmenter = _segmenter(spec)
    images = _images(spec["case"])
    out: dict = {"engine": None}
    for key, subset in (("one", [spec["one"]]), ("all", SLOTS)):
        windows: list[int] = []
        seconds = []
        for _ in range(spec["repeats"]):
            # progress runs within this iteration's segment(): bound to this subset's list
            result = segmenter.segment({s: images[s] for s in subset},
                                       progress=lambda done, total, windows=windows: windows.append(total))
            seconds.append(result.seconds)
        out[key] = seconds
        out[f"{key}_windows"] = windows[-1]
        out["engine"] = result.engine
    return out


def _child_agreement(spec: dict) -> dict:
    import numpy as np

    segmenter = _segmenter(spec)
    engine = None
    for case in spec["cases"]:
        outputs = segmenter.segment_subsets(_images(case))
        arrays = {"+".join(subset): result.labels.astype(np.uint8) for subset, result in outputs.items()}
        engine = next(iter(outputs.values())).engine
        np.savez_compressed(Path(spec["out"]) / f"{case}.npz", **arrays)
    return {"engine": engine}


def _run_child(part: str, spec: dict, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", part, json.dumps(spec)], env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"{part} child failed for {spec.get('engine')}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# parts


STARTUP = {
    "cli": "import magms.cli",
    "fast": "import magms.inference, openvino",  # what a run on cached graphs imports before its work
    "eager": "import magms.inference, magms.networks",  # what the eager engine adds: torch and MONAI
}


def _startup(env: dict[str, str], repeats: int) -> dict:
    times: dict = {key: statistics.median(_timed([sys.executable, "-c", code], env) for _ in range(repeats))
                   for key, code in STARTUP.items()}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", STARTUP["fast"]], env=env, capture_output=True, text=True, cwd=REPO)
    packages: dict[str, float] = {}
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].strip()
            if "." not in name:  # a top-level package: its cumulative time includes what it imports first
                packages[name] = max(packages.get(name, 0.0), int(parts[1]) / 1e6)
    times["largest"] = sorted(packages.items(), key=lambda kv: -kv[1])[:8]
    return times


def part_e2e(variants, args, cache, env) -> list[str]:
    images = _images(args.case)
    startup = None if args.skip_startup else _startup(env, args.repeats)
    lines = [f"### e2e: `magms segment` of {args.case}, process start to file written (median of {args.repeats})", "",
             "| engine | 1 sequence s | 4 sequences s |" + (" faster than baseline, 1 | 4 |" if args.baseline else ""),
             "|---|---|---|" + ("---|---|" if args.baseline else "")]
    full = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine, precision in variants:
            row = []
            for subset in ([args.one], SLOTS):
                command = _segment_command({s: images[s] for s in subset}, Path(tmp) / "out.nii.gz", engine, precision, args.device)
                where = _where(engine, precision, env)
                _timed(command, *where)  # warm: the file cache, OpenVINO's compiled graphs
                row.append(statistics.median(_timed(command, *where) for _ in range(args.repeats)))
            full[(engine, precision)] = row
            base = next((times for (e, _), times in full.items() if e == BASELINE), None)
            ratio = f" | {base[0] / row[0]:.1f}x | {base[1] / row[1]:.1f}x" if base else ""
            lines.append(f"| {_name(engine, precision)} | {row[0]:.1f} | {row[1]:.1f}{ratio} |")
            print(lines[-1], file=sys.stderr, flush=True)
    if startup is None:
        return lines
    fast = full.get(("openvino", "auto"), next(iter(full.values())))
    lines += ["", f"Start-up, imports before any work (median of {args.repeats}):", ""]
    lines.append(f"- `python -c '{STARTUP['cli']}'`: {startup['cli']:.2f} s")
    lines.append(f"- `python -c '{STARTUP['fast']}'` (a run on cached graphs): {startup['fast']:.2f} s = "
                 f"{100 * startup['fast'] / fast[0]:.0f} % of the openvino auto 1-sequence command, "
                 f"{100 * startup['fast'] / fast[1]:.0f} % of the 4-sequence one")
    lines.append(f"- `python -c '{STARTUP['eager']}'` (the eager engine's torch and MONAI): {startup['eager']:.2f} s")
    lines.append("- largest packages of `python -X importtime -c '" + STARTUP["fast"] + "'` (cumulative s): "
                 + ", ".join(f"{name} {seconds:.2f}" for name, seconds in startup["largest"]))
    return lines


def part_network(variants, args, cache, env) -> list[str]:
    lines = [f"### network: the network part of {args.case} (`Segmentation.seconds`, median of {args.repeats}, one process per engine)",
             "", "| engine | ran | 1 sequence s | 4 sequences s | windows |", "|---|---|---|---|---|"]
    for engine, precision in variants:
        spec = {"engine": engine, "precision": precision, "case": args.case, "one": args.one, "repeats": args.repeats,
                "threads": args.threads, "device": args.device}
        out = _run_child("network", spec, env)
        lines.append(f"| {_name(engine, precision)} | {out['engine']} | {statistics.median(out['one']):.2f} | "
                     f"{statistics.median(out['all']):.2f} | {out['all_windows']} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def part_batch(variants, args, cache, env) -> list[str]:
    cases = sorted(p.name for p in BRATS18.iterdir() if p.is_dir())[: args.batch_cases]
    lines = [f"### batch: `magms segment --batch` of {len(cases)} cases, 4 sequences, one process (median of {args.repeats})", "",
             "| engine | s per case | whole batch s |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "cases.csv"
        with open(manifest, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["case", *SLOTS])
            for case in cases:
                writer.writerow([case, *(str(p) for p in _images(case).values())])
        (Path(tmp) / "out").mkdir()
        for engine, precision in variants:
            command = [sys.executable, "-m", "magms", "segment", "--batch", str(manifest), "--output-dir", str(Path(tmp) / "out"),
                       "--format", ".nii.gz", "--overwrite", "--progress", "none", *_engine_flags(engine, precision, args.device)]
            seconds = statistics.median(_timed(command, *_where(engine, precision, env)) for _ in range(args.repeats))
            lines.append(f"| {_name(engine, precision)} | {seconds / len(cases):.2f} | {seconds:.1f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def part_agreement(variants, args, cache, env) -> list[str]:
    import numpy as np
    import SimpleITK as sitk

    from magms.builtin import builtin_model
    from magms.bundle import read_bundle_info
    from magms.metrics import dice

    scheme = read_bundle_info(builtin_model()).scheme
    regions = ("wt", "tc", "et")
    lines = ["### agreement: 3 validation cases x 15 subsets, vs eager fp32 and vs the truth (mean over cases and subsets)", "",
             "| engine | ran | labels equal to eager | least equal (case, subset) | WT Dice | TC Dice | ET Dice | "
             "largest Dice change vs eager |", "|---|---|---|---|---|---|---|---|"]
    scores: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine, precision in variants:
            folder = Path(tmp) / f"{engine}-{precision}"
            folder.mkdir()
            spec = {"engine": engine, "precision": precision, "cases": list(VALIDATION), "out": str(folder), "threads": args.threads,
                    "device": args.device}
            ran = _run_child("agreement", spec, env)["engine"]
            labels = {case: dict(np.load(folder / f"{case}.npz", allow_pickle=False)) for case in VALIDATION}
            scores[_name(engine, precision)] = {"ran": ran, "labels": labels}
        reference = scores.get("eager fp32")
        truth = {case: sitk.GetArrayFromImage(sitk.ReadImage(str(BRATS18 / case / f"{case}_seg.nii.gz"))) for case in VALIDATION}
        for name, score in scores.items():
            dices = {r: [] for r in regions}
            equal, least, change = [], (2.0, ""), 0.0
            for case in VALIDATION:
                for subset, pred in score["labels"][case].items():
                    for r in regions:
                        d = dice(scheme.region_mask(pred, r), scheme.region_mask(truth[case], r))
                        dices[r].append(d)
                        if reference is not None:
                            base = dice(scheme.region_mask(reference["labels"][case][subset], r), scheme.region_mask(truth[case], r))
                            change = max(change, abs(d - base))
                    if reference is not None:
                        share = float(np.mean(pred == reference["labels"][case][subset]))
                        equal.append(share)
                        least = min(least, (share, f"{case}, {subset}"))
            score["dice"] = {r: float(np.mean(v)) for r, v in dices.items()}
            base = reference["dice"] if reference is not None and "dice" in reference else None
            cells = [f"{score['dice'][r]:.4f}" + (f" ({score['dice'][r] - base[r]:+.4f})" if base else "") for r in regions]
            same = f"{np.mean(equal):.6f}" if equal else "-"
            lines.append(f"| {name} | {score['ran']} | {same} | {least[0]:.6f} ({least[1]}) | {' | '.join(cells)} | {change:.4f} |"
                         if equal else f"| {name} | {score['ran']} | - | - | {' | '.join(cells)} | - |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def _export_seconds(cache: Path) -> float:
    from magms.builtin import builtin_model
    from magms.bundle import load_bundle
    from magms.inference.graphs import cached_graphs

    bundle = builtin_model()
    net, info = load_bundle(bundle)
    os.environ["MAGMS_ENGINE_CACHE"] = str(cache)
    start = time.perf_counter()
    cached_graphs(info, bundle, lambda: net)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median reported; default 3)")
    parser.add_argument("--case", default=VALIDATION[0], help=f"the e2e and network case (default {VALIDATION[0]})")
    parser.add_argument("--one", default="flair", choices=SLOTS, help="the one sequence of the 1-sequence runs (default flair)")
    parser.add_argument("--batch-cases", type=int, default=10, help="cases of the batch part (default 10)")
    parser.add_argument("--variants", default=",".join(f"{e}:{p}" for e, p in VARIANTS),
                        help="engine:precision pairs (default: all four; those not installed are skipped)")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS / torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="one run per timing, 3 batch cases: checks that it works")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; on CUDA give --variants eager:amp,eager:fp32")
    parser.add_argument("--skip-startup", action="store_true", help="e2e without the import timings")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    parser.add_argument("--baseline", metavar="REF",
                        help="also time the e2e and batch parts of magms at this git commit (e.g. main before a change), eager, first")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        part, spec = args.child
        print(json.dumps({"network": _child_network, "agreement": _child_agreement}[part](json.loads(spec))))
        return 0
    if not BRATS18.is_dir():
        print(f"no real data at {BRATS18} (set MAGMS_TEST_DATA)", file=sys.stderr)
        return 2
    if args.quick:
        args.repeats, args.batch_cases = 1, 3
    parts = [p for p in args.part.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}")
    variants = []
    for pair in args.variants.split(","):
        engine, _, precision = pair.partition(":")
        if engine != "eager" and importlib.util.find_spec(engine) is None:
            print(f"skipped {pair}: {engine} is not installed", file=sys.stderr)
            continue
        variants.append((engine, precision or "fp32"))
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "engines"
        env = _env(cache, args.threads)
        if args.baseline:
            env["MAGMS_BASELINE_TREE"] = str(_baseline_tree(args.baseline, Path(tmp)))
        export = _export_seconds(cache) if any(e != "eager" for e, _ in variants) else None
        out = [f"## bench_engines: device {args.device}, {os.cpu_count()} CPU(s), threads {args.threads or 'all'}, load average before "
               f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {args.repeats} run(s) per timing", ""]
        if export is not None:
            out += [f"Export of the 5 graphs (once per model): {export:.1f} s", ""]
        functions = {"e2e": part_e2e, "network": part_network, "batch": part_batch, "agreement": part_agreement}
        for part in parts:
            timed_side_by_side = part in ("e2e", "batch") and args.baseline
            out += functions[part]([(BASELINE, args.baseline), *variants] if timed_side_by_side else variants, args, cache, env) + [""]
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", env["MAGMS_BASELINE_TREE"]], capture_output=True)
    load = os.getloadavg()
    out.append(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("\n".join(out))
    if args.output is not None:
        args.output.write_text("\n".join(out) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
