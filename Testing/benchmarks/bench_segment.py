"""Seconds and peak memory of ``magms segment`` per real 240x240x155 case, by number of modalities.

Run by hand (never by pytest), on an otherwise idle machine:

    python Testing/benchmarks/bench_segment.py                      # light U-Net and UNETR, medians of 3
    python Testing/benchmarks/bench_segment.py --backbone unet --repeats 1 --spacing 1.5

The bundles have random weights (timing does not depend on them), and they carry the
preprocessing given here. Each measurement runs in a fresh subprocess, so the peak RSS
(``ru_maxrss``) belongs to that one run. The whole case is read, checked, resampled to the working
spacing and run with sliding windows, then written back on its own grid. The result is printed as
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data"))
CASE = DATA / "brats_unlabelled" / "BraTS-GLI-00001-000"
SLOTS = ("flair", "t1", "t1c", "t2")
SUBSETS = (("flair",), ("flair", "t1c"), ("flair", "t1c", "t2"), SLOTS)


def _child(spec: dict) -> dict:
    import torch

    from magms.data.cases import case_from_folder
    from magms.data.io import write_labelmap
    from magms.inference import Segmenter

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    case = case_from_folder(CASE, SLOTS)
    inputs = {s: case.images[s] for s in spec["subset"]}
    segmenter = Segmenter(spec["bundle"], device=spec["device"], sw_batch_size=spec["sw_batch_size"])
    windows = []
    start = time.perf_counter()
    result = segmenter.segment(inputs, progress=lambda done, total: windows.append(total))
    with tempfile.TemporaryDirectory() as tmp:
        write_labelmap(result.labels, result.reference, Path(tmp) / "out.seg.nrrd", segmenter.info.labels)
    seconds = time.perf_counter() - start
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "seconds": seconds,
        "network_seconds": result.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": peak_gpu,
        "windows": windows[-1] if windows else 0,
    }


def _make_bundle(folder: Path, backbone: str, spacing: float, patch: int, overlap: float) -> None:
    import torch

    from magms.bundle import save_bundle
    from magms.config import NetConfig, PreprocessConfig
    from magms.labels import get_scheme
    from magms.networks import build_network

    torch.manual_seed(0)
    scheme = get_scheme("brats2023")
    net = NetConfig(slots=SLOTS, out_channels=len(scheme.labels), backbone=backbone, img_size=(patch,) * 3)
    pre = PreprocessConfig(spacing=(spacing,) * 3, patch_size=(patch,) * 3, overlap=overlap)
    save_bundle(folder, build_network(net), net, scheme, pre, training={"data": "random weights (benchmark)"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=("unet", "unetr", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--spacing", type=float, default=2.0, help="working spacing in mm recorded in the bundle (default 2)")
    parser.add_argument("--patch", type=int, default=96, help="window edge in voxels (default 96)")
    parser.add_argument("--overlap", type=float, default=0.5, help="window overlap (default 0.5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--sw-batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    if not CASE.is_dir():
        print(f"no real data at {CASE} (set MAGMS_TEST_DATA)", file=sys.stderr)
        return 2
    rows = []
    backbones = ("unet", "unetr") if args.backbone == "both" else (args.backbone,)
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in backbones:
            bundle = Path(tmp) / backbone
            _make_bundle(bundle, backbone, args.spacing, args.patch, args.overlap)
            for subset in SUBSETS:
                runs = []
                for _ in range(args.repeats):
                    spec = {"bundle": str(bundle), "subset": subset, "device": args.device,
                            "sw_batch_size": args.sw_batch_size, "threads": args.threads}
                    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
                    if out.returncode:
                        print(out.stderr, file=sys.stderr)
                        return 1
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                row = {
                    "backbone": backbone, "modalities": len(subset), "subset": "+".join(subset),
                    "median_s": statistics.median(r["seconds"] for r in runs),
                    "network_s": statistics.median(r["network_seconds"] for r in runs),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                    "peak_gpu_mb": max((r["peak_gpu_mb"] or 0) for r in runs) or None,
                    "windows": runs[0]["windows"], "runs": [round(r["seconds"], 2) for r in runs],
                }
                rows.append(row)
                print(f"{backbone} {row['subset']}: {row['runs']}", file=sys.stderr)
    print(f"\ncase {CASE.name} (240x240x155, 1 mm), working spacing {args.spacing} mm, windows {args.patch}^3, "
          f"overlap {args.overlap}, device {args.device}, {args.repeats} run(s) each, torch threads {args.threads or 'default'}\n")
    print("| backbone | modalities | subset | median s (whole case) | network s | windows "
          "| peak RSS MB | peak GPU MB | ratio to 1 modality |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        one = next(r for r in rows if r["backbone"] == row["backbone"] and r["modalities"] == 1)
        gpu = f"{row['peak_gpu_mb']:.0f}" if row["peak_gpu_mb"] else "-"
        print(f"| {row['backbone']} | {row['modalities']} | {row['subset']} | {row['median_s']:.1f} | {row['network_s']:.1f} | "
              f"{row['windows']} | {row['peak_rss_mb']:.0f} | {gpu} | {row['median_s'] / one['median_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
