"""The ``magms`` command line. Results go to stdout, logging and progress to stderr.

A :class:`~magms.errors.MAGMSError` (bad input the user can fix) is printed as one line on
stderr with exit status 2 and no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import magms
from magms.errors import MAGMSError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("magms")


def _default_data() -> Path:
    return Path(os.environ.get("MAGMS_TEST_DATA", Path("..") / "shared" / "data"))


def _cmd_demo(args: argparse.Namespace) -> int:
    from magms.demo import DEFAULT_CASE, run_demo

    case = args.case if args.case is not None else args.data / DEFAULT_CASE
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    run_demo(case, backbone=args.backbone, size=args.size, device=device, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magms",
        description="MAGMS: modality-agnostic brain-tumour segmentation (MAG-MS, He et al., ISBI 2024).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {magms.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (slot guesses, timings) on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run an untrained network on a real case for every modality subset (a smoke test of the core)",
        description=(
            "Build a MAG-MS network and run it on one real case for every non-empty subset of the "
            "modalities found in the case folder (slots guessed from the file names). Prints a "
            "table of output shapes and seconds. The network is untrained: this checks the "
            "pipeline, it does not segment."
        ),
    )
    demo.add_argument(
        "--data", type=Path, default=_default_data(),
        help="the sample-data folder (default: $MAGMS_TEST_DATA or ../shared/data); the case used is "
        "brats_unlabelled/BraTS-GLI-00001-000 inside it",
    )
    demo.add_argument("--case", type=Path, default=None, help="a case folder with one image file per modality (overrides --data)")
    demo.add_argument("--backbone", choices=("unet", "unetr"), default="unet", help="network backbone (default: unet)")
    demo.add_argument("--size", type=int, default=96, help="edge of the cube cropped around the brain, in voxels (default: 96)")
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except MAGMSError as err:
        print(f"magms {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
