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
from magms.errors import ConfigError, MAGMSError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("magms")


DATA_HELP = (
    "the cases: an MSD task folder (dataset.json with 'modality', 4-D imagesTr/, labelsTr/), an nnU-Net v2 raw "
    "data set (dataset.json with 'channel_names', imagesTr/<case>_0000.nii.gz, labelsTr/), a folder of case folders "
    "(modalities guessed from file names, label file named seg, label, OTMultiClass...), or a CSV manifest "
    "case,<slot>,...,label (paths relative to the CSV, an empty cell = modality missing)"
)


def _default_data() -> Path:
    return Path(os.environ.get("MAGMS_TEST_DATA", Path("..") / "shared" / "data"))


def _cmd_demo(args: argparse.Namespace) -> int:
    from magms.demo import run_demo

    args.out.mkdir(parents=True, exist_ok=True)
    progress = _TrainProgress(args.progress)
    try:
        run_demo(args.data, args.out, minutes=args.minutes, device=args.device, spacing=args.spacing, patch=args.patch,
                 channels=tuple(int(c) for c in args.channels.split(",")), progress=progress)
    finally:
        progress.close()
    return 0


class _Progress:
    """Window progress on stderr: a tqdm bar, ``progress DONE/TOTAL`` lines (for the Slicer runner), or nothing."""

    def __init__(self, style: str, label: str) -> None:
        self.style, self.label, self.bar = style, label, None

    def __call__(self, done: int, total: int) -> None:
        if self.style == "lines":
            print(f"progress {done}/{total} {self.label}", file=sys.stderr, flush=True)
        elif self.style == "bar":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=self.label, unit="window", file=sys.stderr, leave=False)
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _parse_inputs(pairs: Sequence[str]) -> dict[str, Path]:
    from magms.modalities import canonical_slot

    inputs: dict[str, Path] = {}
    for pair in pairs:
        slot, sep, path = pair.partition("=")
        if not sep or not slot or not path:
            raise ConfigError(f"--input {pair!r}: expected SLOT=PATH, e.g. flair=case/flair.nii.gz")
        key = canonical_slot(slot)
        if key in inputs:
            raise ConfigError(f"--input: slot {key!r} given twice ({inputs[key]} and {path})")
        inputs[key] = Path(path)
    return inputs


def _write_result(result, info, output: Path, probabilities: Path | None, overwrite: bool) -> None:
    from magms.io import write_labelmap, write_probabilities

    write_labelmap(result.labels, result.reference, output, info.labels, overwrite=overwrite)
    if probabilities is not None:
        write_probabilities(result.probabilities, result.reference, probabilities, overwrite=overwrite)


def _cmd_segment(args: argparse.Namespace) -> int:
    from magms.bundle import read_bundle_info
    from magms.io import check_output_path

    if args.batch is not None:
        return _segment_batch(args)
    if args.output is None:
        raise ConfigError("--output is required (or --batch with --output-dir)")
    if bool(args.input) == bool(args.input_dir):
        raise ConfigError("give the images with --input SLOT=PATH (repeatable) or --input-dir DIR, not both")
    # every check that needs no network comes first: nothing is computed for a run that cannot finish
    check_output_path(args.output, args.overwrite)
    if args.probabilities is not None:
        check_output_path(args.probabilities, args.overwrite, (".nii.gz", ".nii", ".nrrd", ".mha"))
    info = read_bundle_info(args.model)
    if args.input_dir is not None:
        from magms.cases import case_from_folder

        case = case_from_folder(args.input_dir, info.slots)
        for guess in case.guesses:
            print(f"{guess.name}: {guess.slot or 'not used'} ({guess.reason})", file=sys.stderr)
        inputs = dict(case.images)
    else:
        inputs = _parse_inputs(args.input)
    from magms.inference import prepare_inputs

    # every image check before the network is loaded; the checked images are then used as they are
    prepared = prepare_inputs(inputs, info.slots)
    segmenter = _segmenter(args)
    progress = _Progress(args.progress, "+".join(s for s in info.slots if s in inputs))
    try:
        result = segmenter.segment(prepared.images, probabilities=args.probabilities is not None, progress=progress)
    finally:
        progress.close()
    for note in prepared.notes + result.notes:
        print(f"note: {note}", file=sys.stderr)
    _write_result(result, info, args.output, args.probabilities, args.overwrite)
    print(f"{args.output}\t{'+'.join(result.present)}\treference={result.reference_slot}\t{result.seconds:.1f}s")
    return 0


def _segment_batch(args: argparse.Namespace) -> int:
    from magms.cases import find_cases

    if args.output_dir is None:
        raise ConfigError("--batch needs --output-dir")
    if args.input or args.input_dir or args.output:
        raise ConfigError("--batch takes its images from the manifest or case folders: drop --input/--input-dir/--output")
    if not args.output_dir.is_dir():
        raise ConfigError(f"{args.output_dir}: output folder does not exist")
    segmenter = _segmenter(args)
    cases = find_cases(args.batch, segmenter.slots)
    failures: list[str] = []
    for case in cases:
        output = args.output_dir / f"{case.name}{args.format}"
        progress = _Progress(args.progress, case.name)
        try:
            result = segmenter.segment(case.images, progress=progress)
            for note in result.notes:
                print(f"note: {case.name}: {note}", file=sys.stderr)
            _write_result(result, segmenter.info, output, None, args.overwrite)
        except MAGMSError as err:
            failures.append(f"{case.name}: {err}")
            logger.error("%s failed: %s", case.name, err)
            continue
        finally:
            progress.close()
        print(f"{output}\t{'+'.join(result.present)}\treference={result.reference_slot}\t{result.seconds:.1f}s")
    if failures:
        print(f"{len(failures)} of {len(cases)} case(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from magms.bundle import read_bundle_info
    from magms.cases import find_cases
    from magms.evaluate import evaluate, write_reports
    from magms.modalities import canonical_slot

    info = read_bundle_info(args.model)
    existing = [n for n in ("metrics.csv", "summary.md", "heatmap.png") if (args.out / n).exists()]
    if existing and not args.overwrite:
        raise ConfigError(f"{args.out}: {', '.join(existing)} exist already (use --overwrite to replace them)")
    subsets = [tuple(canonical_slot(s) for s in group.split(",") if s) for group in args.subset] or None
    cases = find_cases(args.data, info.slots)
    segmenter = _segmenter(args)
    show = (lambda text: print(f"evaluating {text}", file=sys.stderr, flush=True)) if args.progress != "none" else None
    rows = evaluate(segmenter, cases, data_labels=args.labels, subsets=subsets, progress=show)
    for path in write_reports(rows, args.out, info.labels, overwrite=args.overwrite):
        print(path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from magms.cases import find_cases
    from magms.config import PreprocessConfig, as_tuple3
    from magms.labels import get_scheme
    from magms.modalities import canonical_slot
    from magms.training import TrainConfig, train

    get_scheme(args.labels)  # an unknown scheme fails before any data is read
    try:
        config = TrainConfig(
            epochs=args.epochs, max_minutes=args.max_minutes, lr=args.lr, batch_size=args.batch_size,
            samples_per_case=args.samples_per_case, policy=args.policy, distill=not args.no_distill, seed=args.seed,
            kl_weight=args.kl_weight, feature_weight=args.feature_weight,
            val_fraction=args.val_fraction, val_every=args.val_every, amp=not args.no_amp,
            val_cases=tuple(n for n in (args.val_cases or "").split(",") if n),
        )
    except ValueError as err:  # an option out of range: the user's to fix, not a bug
        raise ConfigError(str(err)) from err
    slots = tuple(canonical_slot(s) for s in args.slots.split(",")) if args.slots else None
    cases = find_cases(args.data, slots)
    if slots is None:
        from magms.modalities import MODALITIES

        found = {s for c in cases for s in c.images}
        slots = tuple(s for s in MODALITIES if s in found)
    pre = PreprocessConfig(
        spacing=None if args.spacing <= 0 else (args.spacing,) * 3,
        patch_size=as_tuple3(args.patch[0] if len(args.patch) == 1 else args.patch),
        overlap=args.overlap,
    )
    overrides = {"backbone": args.backbone, "checkpointing": args.checkpointing}
    if args.backbone == "unet" and args.channels:
        overrides["channels"] = tuple(int(c) for c in args.channels.split(","))
    progress = _TrainProgress(args.progress)
    try:
        bundle = train(
            cases, args.out, args.labels, slots, net_overrides=overrides, preprocessing=pre, config=config,
            device=args.device, resume=args.resume, init=args.init, progress=progress,
        )
    finally:
        progress.close()
    if bundle is None and int(os.environ.get("RANK", "0")) != 0:
        return 0  # torchrun: rank 0 reports
    if bundle is None:
        print(f"stopped; continue with: magms train ... --out {args.out} --resume", file=sys.stderr)
        return 0
    print(bundle)
    return 0


class _TrainProgress:
    """Steps on stderr: a tqdm bar or ``progress STEP/TOTAL epoch E/N loss L`` lines."""

    def __init__(self, style: str) -> None:
        self.style, self.bar = style, None

    def __call__(self, info: dict) -> None:
        if self.style == "lines":
            print(f"progress {info['step']}/{info['total_steps']} epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.4f}",
                  file=sys.stderr, flush=True)
        elif self.style == "bar":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=info["total_steps"], initial=info["step"] - 1, unit="step", file=sys.stderr)
            self.bar.set_postfix(epoch=f"{info['epoch']}/{info['epochs']}", loss=f"{info['loss']:.3f}")
            self.bar.update(info["step"] - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the network runs: shared by the commands that segment."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--sw-batch-size", type=int, default=2, help="sliding windows per network call (default: 2)")
    parser.add_argument("--no-amp", action="store_true", help="full precision on CUDA (default: mixed precision)")


def _segmenter(args: argparse.Namespace):
    from magms.inference import Segmenter

    return Segmenter(args.model, device=args.device, sw_batch_size=args.sw_batch_size, amp=not args.no_amp)


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
        help="the main job on the real sample data: train briefly (unless a model exists), then segment",
        description=(
            "Train a light model for a few CPU minutes on the labelled BraTS 2013 sample cases "
            "(FLAIR + T1c), unless OUT/model already holds one, then segment every unlabelled "
            "sample case with the modalities it has, writing OUT/<case>.seg.nrrd and an overlay "
            "OUT/<case>.png. A rough model from three cases: it shows the path, it is not for clinical use."
        ),
    )
    demo.add_argument(
        "--data", type=Path, default=_default_data(),
        help="the sample-data folder with brats_flair_t1c/ and brats_unlabelled/ (default: $MAGMS_TEST_DATA or ../shared/data)",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    demo.add_argument("--minutes", type=float, default=6.0, help="training time limit in minutes (default: 6)")
    demo.add_argument("--spacing", type=float, default=2.0, help="working spacing in mm (default: 2)")
    demo.add_argument("--patch", type=int, default=48, help="training patch edge in voxels (default: 48)")
    demo.add_argument("--channels", default="16,32,64,128", help="U-Net widths (default: 16,32,64,128)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    demo.add_argument("--progress", choices=("bar", "lines", "none"), default="bar", help="training progress on stderr (default: bar)")
    demo.set_defaults(func=_cmd_demo)

    seg = sub.add_parser(
        "segment",
        help="segment a case (or many) from any subset of the model's modalities",
        description=(
            "Segment one case from whichever of the model's modalities you have. Inputs may be on "
            "different grids if they overlap in space: they are resampled onto the reference input "
            "(the first present slot in the model's order), and the output is written on that "
            "input's own grid. Exit status: 0 done, 2 bad input (nothing written), 1 some batch "
            "cases failed."
        ),
    )
    seg.add_argument("--model", type=Path, required=True, help="model bundle folder (model.safetensors + magms.json)")
    seg.add_argument(
        "--input", action="append", default=[], metavar="SLOT=PATH",
        help="one modality: slot (or alias, e.g. t2f) = NIfTI/NRRD/MHA file or DICOM series folder; repeat per modality",
    )
    seg.add_argument("--input-dir", type=Path, help="a case folder: slots guessed from the file names, the mapping printed on stderr")
    seg.add_argument("--output", type=Path, help="labelmap to write: .seg.nrrd (Slicer segmentation with names, colours, terminology), .nii.gz, .nii, .nrrd or .mha")
    seg.add_argument("--probabilities", type=Path, help="also write the class probabilities (one component per class) to this .nii.gz/.nrrd/.mha")
    seg.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse)")
    seg.add_argument("--batch", type=Path, help="many cases: a CSV manifest (case,<slot>,...) or a folder of case folders; goes on past a bad case and lists the failures at the end")
    seg.add_argument("--output-dir", type=Path, help="with --batch: folder for the outputs, named <case><format>")
    seg.add_argument("--format", default=".seg.nrrd", choices=(".seg.nrrd", ".nii.gz", ".nrrd", ".mha"), help="with --batch: output format (default: .seg.nrrd)")
    _add_inference_options(seg)
    seg.add_argument("--progress", choices=("bar", "lines", "none"), default="bar", help="progress on stderr: a bar, 'progress DONE/TOTAL' lines, or none (default: bar)")
    seg.set_defaults(func=_cmd_segment)

    ev = sub.add_parser(
        "evaluate",
        help="Dice and HD95 per label and region for every modality subset, on labelled cases",
        description=(
            "Segment every labelled case with every non-empty subset of the model's modalities "
            "that the case has, and measure Dice and HD95 (mm) per label and per region (WT/TC/ET "
            "for brain-tumour schemes) with MONAI metrics. Writes metrics.csv (one row per case x "
            "subset x label/region), summary.md (mean and sd per subset, the best subset per region) "
            "and heatmap.png (subsets x regions)."
        ),
    )
    ev.add_argument("--model", type=Path, required=True, help="model bundle folder")
    ev.add_argument("--data", type=Path, required=True, help=DATA_HELP)
    ev.add_argument("--out", type=Path, required=True, help="folder for metrics.csv, summary.md and heatmap.png")
    ev.add_argument("--labels", default=None, help="label scheme of the data's label files if it differs from the model's (e.g. brats2013); mapped to the model's scheme")
    ev.add_argument("--subset", action="append", default=[], metavar="SLOT,SLOT", help="only these subsets (repeatable), e.g. --subset flair --subset flair,t1c (default: every subset)")
    ev.add_argument("--overwrite", action="store_true", help="replace existing report files")
    _add_inference_options(ev)
    ev.add_argument("--progress", choices=("lines", "none"), default="lines", help="a line per case and subset on stderr (default: lines)")
    ev.set_defaults(func=_cmd_evaluate)

    tr = sub.add_parser(
        "train",
        help="train one model that segments from any subset of the modalities",
        description=(
            "Train a MAG-MS model on labelled cases (an MSD task folder, an nnU-Net v2 raw data set, "
            "case folders or a CSV manifest: see --data). Every case is checked first and all problems "
            "are reported at once. Writes OUT/checkpoint every epoch, OUT/metrics.csv, and the model "
            "bundle into OUT at the end. Ctrl-C or SIGTERM saves a checkpoint and exits; --resume "
            "continues exactly there."
        ),
    )
    tr.add_argument("--data", type=Path, required=True, help=DATA_HELP)
    tr.add_argument("--labels", required=True, help="label scheme of the label files: brats2013, msd_task01, brats2021, brats2023, brain_tissue")
    tr.add_argument("--out", type=Path, required=True, help="output folder: checkpoint, metrics.csv, then the bundle")
    tr.add_argument("--slots", help="comma-separated modality slots of the model (default: every slot the data has)")
    tr.add_argument("--backbone", choices=("unet", "unetr"), default="unet", help="light U-Net (default) or UNETR")
    tr.add_argument("--channels", help="U-Net widths, e.g. 16,32,64,128 (default)")
    tr.add_argument("--epochs", type=int, default=50, help="epochs (default: 50)")
    tr.add_argument("--max-minutes", type=float, default=None, help="stop cleanly and write the bundle after this many minutes")
    tr.add_argument("--no-distill", action="store_true", help="no self-distillation: DiceCE on every output only (the baseline)")
    tr.add_argument("--kl-weight", type=float, default=1.0, help="weight of each fused -> modality KL term (default: 1)")
    tr.add_argument("--feature-weight", type=float, default=1.0, help="weight of each fused -> modality feature MSE term (default: 1)")
    tr.add_argument("--policy", choices=("paper", "random_subset"), default="paper", help="subset policy (default: paper)")
    tr.add_argument("--spacing", type=float, default=2.0, help="working spacing in mm, 0 keeps each case's (default: 2)")
    tr.add_argument("--patch", type=int, nargs="+", default=[64], help="patch size in working voxels: one or three numbers (default: 64)")
    tr.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap for validation and later inference (default: 0.5)")
    tr.add_argument("--batch-size", type=int, default=2, help="cases per step (default: 2)")
    tr.add_argument("--samples-per-case", type=int, default=2, help="patches per case and step (default: 2)")
    tr.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, cosine schedule (default: 1e-3)")
    tr.add_argument("--val-fraction", type=float, default=0.2, help="fraction of cases held out for validation (default: 0.2)")
    tr.add_argument("--val-cases", metavar="NAME,NAME", help="explicit validation cases by name (overrides --val-fraction)")
    tr.add_argument("--val-every", type=int, default=1, help="validate every N epochs, and after the last (default: 1)")
    tr.add_argument("--seed", type=int, default=0, help="seed of weights, split, order and augmentation (default: 0)")
    tr.add_argument("--checkpointing", action="store_true", help="activation checkpointing: less memory, slower")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    tr.add_argument("--init", type=Path, help="start from this bundle's weights (fine-tuning; same architecture)")
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    tr.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
    tr.add_argument("--progress", choices=("bar", "lines", "none"), default="bar", help="progress on stderr (default: bar)")
    tr.set_defaults(func=_cmd_train)
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
