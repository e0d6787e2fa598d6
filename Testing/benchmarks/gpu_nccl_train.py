"""A few steps of ``magms train`` under ``torchrun`` on one GPU, through the DDP code path over NCCL.

With one rank ``magms train`` skips DDP (``Ranks.is_distributed`` is False), and two NCCL ranks need two
GPUs. To exercise the distributed path on one GPU anyway, this script makes the run's ``Ranks`` join a
one-rank NCCL process group and report itself distributed: the model is wrapped in
``DistributedDataParallel``, the sampler is a ``DistributedSampler``, and the stop flags and barriers
are NCCL collectives. Everything else is the real ``magms train`` (AMP on CUDA, a tiny U-Net).

    python -m torch.distributed.run --nproc_per_node=1 Testing/benchmarks/gpu_nccl_train.py \\
        --data ../shared/data/brats18 --out /tmp/nccl_train

``--device cpu`` uses gloo instead (to check the script without a GPU). Prints one JSON line: the
backend, the world size and the steps the bundle records. Exit status 0 when a bundle was written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from magms.training import distributed


class _OneRankDistributed(distributed.Ranks):
    """A rank of a process group of one, treated as distributed."""

    @property
    def is_distributed(self) -> bool:
        return True


def _join(device: torch.device) -> distributed.Ranks:
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    print(f"joined a {torch.distributed.get_backend()} group of {torch.distributed.get_world_size()} rank(s) on {device}",
          file=sys.stderr, flush=True)
    return _OneRankDistributed(torch.distributed.get_rank(), torch.distributed.get_world_size(), device, True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="labelled cases (e.g. brats18/, BraTS 2018 labels)")
    parser.add_argument("--out", type=Path, required=True, help="output folder of the run (must not hold a run)")
    parser.add_argument("--labels", default="brats2021", help="label scheme of the label files (default brats2021)")
    parser.add_argument("--device", default="cuda", help="cuda (NCCL, default) or cpu (gloo)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if "WORLD_SIZE" not in os.environ:
        parser.error("run it under torchrun: python -m torch.distributed.run --nproc_per_node=1 ...")
    distributed.Ranks.from_environment = staticmethod(_join)  # what the trainer calls to find its rank
    from magms.bundle import read_bundle_info
    from magms.cli import main as magms_main

    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    status = magms_main([
        "train", "--data", str(args.data), "--labels", args.labels, "--out", str(args.out), "--epochs", str(args.epochs),
        "--spacing", "3", "--patch", "32", "--channels", "8,16,32", "--batch-size", "2", "--samples-per-case", "1",
        "--val-fraction", "0", "--device", args.device, "--progress", "none",
    ])
    if status != 0 or not (args.out / "magms.json").is_file():
        print(json.dumps({"backend": backend, "status": status, "bundle": None}))
        return 1
    info = read_bundle_info(args.out)
    print(json.dumps({"backend": backend, "world": 1, "status": status, "steps": info.training.get("steps"), "bundle": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
