"""The ``magms`` command line. Results go to stdout, logging and progress to stderr.

Each command's flags are generated from its options record (:mod:`magms.commands`), so the help,
the defaults and the ranges are those of the records; ``--config FILE`` reads the same options
from JSON. A :class:`~magms.errors.MAGMSError` (bad input the user can fix) is printed as one line
on stderr with exit status 2 and no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import magms
from magms.commands import (
    DemoOptions,
    DevicesOptions,
    EvaluateOptions,
    ExportOptions,
    SegmentOptions,
    ServeOptions,
    TrainOptions,
    target_request,
)
from magms.errors import ConfigError, MAGMSError
from magms.options import Options, add_arguments, from_command_line
from magms.protocol import format_progress, format_ran

if TYPE_CHECKING:
    from magms.bundle import OpenedModel

__all__ = ["main", "build_parser", "ProgressReporter"]

logger = logging.getLogger("magms")


class ProgressReporter:
    """Progress on stderr: a tqdm bar, ``progress DONE/TOTAL detail`` lines (the Slicer runner
    reads them, see :mod:`magms.protocol`), or nothing."""

    def __init__(self, style: str, unit: str, label: str = "") -> None:
        self.style, self.unit, self.label, self.bar = style, unit, label, None

    def __call__(self, done: int, total: int, detail: str = "") -> None:
        if self.style == "lines":
            print(format_progress(done, total, detail or self.label), file=sys.stderr, flush=True)
        elif self.style == "bar":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=max(done - 1, 0), desc=self.label or None, unit=self.unit,
                                file=sys.stderr, leave=self.unit == "step")
            if self.bar.total != total:
                self.bar.total = total  # an estimate that follows the time limit
            if detail:
                self.bar.set_postfix_str(detail)
            self.bar.update(done - self.bar.n)

    def training_step(self, info: dict[str, Any]) -> None:
        """Adapter for the trainer's per-step callback: with a time limit, the total is the steps
        the limit allows at the pace so far (so the bar's time left is the limit's)."""
        self(info["step"], expected_steps(info), f"epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def expected_steps(info: dict[str, Any]) -> int:
    """The steps a training run will have done at its end: all of them, or those ``max_seconds`` allows
    at the pace so far, whichever comes first."""
    total, step, seconds, limit = info["total_steps"], info["step"], info.get("seconds"), info.get("max_seconds")
    if limit is None or not seconds:
        return total
    return max(step, min(total, round(step * limit / seconds)))


# --------------------------------------------------------------------------------------------
# segment


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


def _open_model(options: SegmentOptions | EvaluateOptions | ExportOptions | ServeOptions) -> OpenedModel:
    """``--model``, else the default built-in model, opened once: ``magms.json`` read and the weights hashed
    here, and nowhere below (:class:`~magms.bundle.OpenedModel`)."""
    if options.model is not None:
        from magms.bundle import open_model

        return open_model(options.model)
    from magms.builtin import open_builtin_model

    model = open_builtin_model()
    print(f"note: no --model: using the built-in model {model.name} ({model.folder})", file=sys.stderr)
    return model


def _segmenter(options: SegmentOptions | EvaluateOptions, model: OpenedModel):
    from magms.inference import Segmenter
    from magms.inference.postprocess import as_requested

    recorded = model.info.postprocessing
    segmenter = Segmenter(  # one concept, precision: fp32 is float32 on every engine, eager on CUDA included
        model, device=options.device, sw_batch_size=options.sw_batch_size, amp=options.amp and options.precision != "fp32",
        postprocessing=as_requested(recorded, postprocess=options.postprocess, tta=options.tta),
        engine=options.engine, precision=options.precision,
    )
    for note in segmenter.notes:  # once, not per case
        print(f"note: {note}", file=sys.stderr)
    if options.progress == "lines":  # for a parent process (the Segmenter shows what ran)
        print(format_ran(segmenter.ran()), file=sys.stderr, flush=True)
    return segmenter


def _segment_inputs(options: SegmentOptions, slots: Sequence[str]) -> dict[str, Path]:
    """The images of the one case, by slot (guessed from names for ``--input-dir``)."""
    if options.input_dir is None:
        return _parse_inputs(options.input)
    from magms.data.cases import case_from_folder

    case = case_from_folder(options.input_dir, slots)
    for guess in case.guesses:
        print(f"{guess.name}: {guess.slot or 'not used'} ({guess.reason})", file=sys.stderr)
    return dict(case.images)


def _say(text: str, note: bool) -> None:
    """A use case's line: a note to stderr, a result to stdout."""
    print(text, file=sys.stderr if note else sys.stdout)


def _cmd_segment(options: SegmentOptions) -> int:
    from magms.data.io import PROBABILITY_SUFFIXES, check_output_path
    from magms.inference import usecases

    if options.batch is not None:
        if options.targets is not None or options.planning_ct is not None:
            raise ConfigError("--targets and --planning-ct work on one case: not with --batch (run magms segment per case)")
        return _segment_batch(options)
    if options.output is None:
        raise ConfigError("--output is required (or --batch with --output-dir)")
    if bool(options.input) == bool(options.input_dir):
        raise ConfigError("give the images with --input SLOT=PATH (repeatable) or --input-dir DIR, not both")
    # every check that needs no network comes first: nothing is computed for a run that cannot finish
    check_output_path(options.output, options.overwrite)
    if options.probabilities is not None:
        check_output_path(options.probabilities, options.overwrite, PROBABILITY_SUFFIXES)
    dicom = usecases.dicom_requests(options.rtstruct, options.dicom_seg, options.overwrite)
    targets = target_request(options)
    usecases.check_target_request(targets, dicom, options.planning_ct)
    clicks = _read_clicks(options)
    _check_review_options(options)
    model = _open_model(options)
    info = model.info
    inputs = _segment_inputs(options, info.slots)
    _check_compared_outputs(options, info, inputs)
    # every image check before the network is loaded; the checked images are then used as they are
    # with a planning CT the DICOM objects reference the CT: the MR need not be a DICOM series
    prepared, series = usecases.prepare_case(inputs, info.slots, [] if options.planning_ct else dicom, options.preprocess)
    brain = usecases.case_brain_of(prepared, targets, options.planning_ct)
    segmenter = _segmenter(options, model)
    progress = ProgressReporter(options.progress, "window", _progress_label(options, info.slots, inputs))
    try:
        if clicks is not None:
            result, compared = usecases.segment_with_clicks(segmenter, prepared.images, clicks, _say)
        else:
            result, compared = usecases.segment_compared(segmenter, prepared.images, options.compare,
                                                         options.probabilities is not None, progress)
    finally:
        progress.close()
    outputs = usecases.CaseOutputs(options.output, options.probabilities, dicom, options.overwrite, targets, options.planning_ct)
    usecases.write_case(segmenter, prepared, result, series, outputs, _say, brain=brain)
    usecases.write_review(segmenter, inputs, result, compared, prepared.notes + result.notes, _say, options.compare, options.output,
                          options.disagreement, options.report, options.compared_outputs, options.overwrite)
    return 0


def _read_clicks(options: SegmentOptions) -> list | None:
    """``--clicks``, read and checked before anything runs; None without it."""
    if options.clicks is None:
        return None
    if options.compare != "none" or options.probabilities is not None:
        raise ConfigError("--clicks corrects one segmentation: not with --compare or --probabilities")
    from magms.inference.refine import read_clicks

    return read_clicks(options.clicks)


def _cmd_serve(options: ServeOptions) -> int:
    from magms.inference.refine import Refiner
    from magms.inference.worker import serve

    # the replies keep standard output to themselves: anything else written there (a library's print, a native
    # log line on file descriptor 1) goes to stderr instead of breaking the protocol
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    model = _open_model(options)
    with replies:
        return serve(Refiner(model, device=options.device, engine=options.engine), sys.stdin, replies, options.preprocess)


def _segment_batch(options: SegmentOptions) -> int:
    from magms.data.cases import find_cases
    from magms.inference import usecases

    dicom_folders = _batch_folders(options)
    model = _open_model(options)
    segmenter = _segmenter(options, model)
    cases = find_cases(options.batch, segmenter.slots)

    progress = ProgressReporter(options.progress, "case", "cases")
    try:
        failures = usecases.segment_batch(segmenter, cases, options.output_dir, options.format, _say, progress, dicom_folders,
                                          options.overwrite, options.preprocess)
    finally:
        progress.close()
    if failures:
        print(f"{len(failures)} of {len(cases)} case(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _batch_folders(options: SegmentOptions) -> dict[str, Path]:
    """Check a ``--batch`` run's options; the DICOM output folders asked for, by option name."""
    if options.output_dir is None:
        raise ConfigError("--batch needs --output-dir")
    _refuse_review_options_in_batch(options)
    if options.input or options.input_dir or options.output:
        raise ConfigError("--batch takes its images from the manifest or case folders: drop --input/--input-dir/--output")
    if not options.output_dir.is_dir():
        raise ConfigError(f"{options.output_dir}: output folder does not exist")
    folders = {kind: folder for kind, folder in (("rtstruct", options.rtstruct), ("dicom-seg", options.dicom_seg)) if folder is not None}
    for kind, folder in folders.items():
        if not folder.is_dir():
            raise ConfigError(f"--{kind} {folder}: with --batch, a folder that exists (one file per case)")
    return folders


def _drawn_structures(options: ExportOptions, grid) -> tuple:
    """The structures of ``--targets-from``, on the labels' grid (none without it)."""
    if options.targets_from is None:
        return ()
    from magms.targets import read_targets

    return read_targets(options.targets_from, grid)


def _cmd_export(options: ExportOptions) -> int:
    import SimpleITK as sitk

    from magms.data.io import read_labelmap
    from magms.dicom import read_series
    from magms.inference import usecases

    dicom = usecases.dicom_requests(options.rtstruct, options.dicom_seg, options.overwrite)
    targets = target_request(options)
    if options.targets_from is not None and (targets is not None or options.planning_ct is not None):
        raise ConfigError("--targets-from exports targets drawn already: not with --targets (which grows them) or --planning-ct")
    if not dicom and (targets is None or targets.folder is None):
        raise ConfigError("nothing to write: give --rtstruct FILE and/or --dicom-seg FILE" + (" (or --targets-dir)" if targets else ""))
    usecases.check_target_request(targets, dicom, options.planning_ct)
    if not options.series:
        raise ConfigError("--series is required: the DICOM series folder (or its files) the labels were made on")
    model = _open_model(options)
    scheme = model.info.scheme
    grid = read_labelmap(options.labels)
    labels = sitk.GetArrayFromImage(grid)
    unknown = scheme.unknown_values(labels)
    if unknown:
        raise ConfigError(f"{options.labels}: holds values {unknown} that are not labels of {model.name} ({scheme.name}: "
                          f"{', '.join(map(str, scheme.values))})")
    source = options.series[0] if len(options.series) == 1 and options.series[0].is_dir() else list(options.series)
    series = read_series(source, grid)
    image = grid
    brain = None
    if targets is not None or options.planning_ct is not None:
        from magms.targets import case_brain

        image = sitk.ReadImage([str(p) for p in series.files], sitk.sitkFloat32)  # the MR: the series' pixels
        image.CopyInformation(grid)  # read_series found its slices on the labels' grid
        brain = case_brain({"series": image}, {"series": str(series.source)}, None if targets is None else targets.brain_file)
    outputs = usecases.CaseOutputs(options.labels, dicom=dicom, overwrite=options.overwrite, targets=targets,
                                   planning_ct=options.planning_ct, drawn=_drawn_structures(options, image))
    usecases.write_rt_outputs(outputs, labels, image, series, brain, scheme, model.name, _say)
    return 0


# --------------------------------------------------------------------------------------------
# segment: review aids (--compare, --disagreement, --report; magms.review)


def _check_review_options(options: SegmentOptions) -> None:
    """Refuse review options that cannot be honoured, and check their outputs, before any work."""
    from magms.data.io import MAP_SUFFIXES, check_output_path
    from magms.review import check_report_folder

    if options.disagreement is not None:
        if options.compare == "none":
            raise ConfigError("--disagreement needs --compare subsets or --compare flips: the outputs it counts disagreements between")
        if options.disagreement in (options.output, options.probabilities):
            raise ConfigError(f"--disagreement {options.disagreement}: the same file as another output")
        check_output_path(options.disagreement, options.overwrite, MAP_SUFFIXES)
    if options.report is not None:
        check_report_folder(options.report, options.overwrite)
    if options.compared_outputs is not None:
        if options.compare == "none":
            raise ConfigError("--compared-outputs needs --compare subsets or --compare flips: the outputs it writes")
        if options.compared_outputs.exists() and not options.compared_outputs.is_dir():
            raise ConfigError(f"--compared-outputs {options.compared_outputs}: exists and is not a folder")
        if not options.compared_outputs.parent.is_dir():
            raise ConfigError(f"--compared-outputs {options.compared_outputs}: the folder {options.compared_outputs.parent} does not exist")
    if options.compare != "none" and options.disagreement is None and options.report is None and options.compared_outputs is None:
        raise ConfigError(f"--compare {options.compare}: give --disagreement FILE, --report DIR or --compared-outputs DIR, "
                          "where its results go")


def _check_compared_outputs(options: SegmentOptions, info, inputs: Mapping[str, Path]) -> None:
    """Refuse ``--compared-outputs`` files that exist (without ``--overwrite``) before any work."""
    if options.compared_outputs is None:
        return
    from magms.inference import usecases

    suffix = usecases.COMPARED_SUFFIX
    existing = [f"{name}{suffix}" for name in usecases.compared_names(options.compare, info, inputs)
                if (options.compared_outputs / f"{name}{suffix}").exists()]
    if existing and not options.overwrite:
        raise ConfigError(f"--compared-outputs {options.compared_outputs}: {', '.join(existing)} exist already "
                          "(use --overwrite to replace them)")


def _refuse_review_options_in_batch(options: SegmentOptions) -> None:
    given = [flag for flag, on in (("--compare", options.compare != "none"), ("--disagreement", options.disagreement is not None),
                                   ("--report", options.report is not None),
                                   ("--compared-outputs", options.compared_outputs is not None)) if on]
    if given:
        raise ConfigError(f"{', '.join(given)}: review aids for one case, not with --batch")


def _progress_label(options: SegmentOptions, slots: Sequence[str], inputs: Mapping[str, Path]) -> str:
    used = "+".join(s for s in slots if s in inputs)
    if options.compare == "subsets":
        return f"{used} and its {2 ** len(inputs) - 2} smaller subsets"
    return f"{used} and its 8 flips" if options.compare == "flips" else used


# --------------------------------------------------------------------------------------------
# evaluate, train, demo


def _cmd_evaluate(options: EvaluateOptions) -> int:
    from magms.data.cases import find_cases
    from magms.evaluate import REPORT_FILES, evaluate, write_reports
    from magms.modalities import canonical_slot

    model = _open_model(options)
    info = model.info
    existing = [n for n in REPORT_FILES if (options.out / n).exists()]
    if existing and not options.overwrite:
        raise ConfigError(f"{options.out}: {', '.join(existing)} exist already (use --overwrite to replace them)")
    subsets = [tuple(canonical_slot(s) for s in group.split(",") if s) for group in options.subset] or None
    cases = find_cases(options.data, info.slots)
    segmenter = _segmenter(options, model)
    show = (lambda text: print(f"evaluating {text}", file=sys.stderr, flush=True)) if options.progress != "none" else None
    rows = evaluate(segmenter, cases, data_labels=options.labels, subsets=subsets, progress=show)
    for path in write_reports(rows, options.out, info.scheme, overwrite=options.overwrite):
        print(path)
    return 0


def _cmd_train(options: TrainOptions) -> int:
    if options.check_only:
        from magms.data.checks import check_data

        slots, count = check_data(options.data, options.labels, options.slots or None)
        print(f"{count} case(s) are fine; slots {', '.join(slots)}")
        return 0
    from magms.training import train_from_options

    progress = ProgressReporter(options.progress, "step")
    try:
        bundle = train_from_options(options, progress=progress.training_step)
    finally:
        progress.close()
    if bundle is None and int(os.environ.get("RANK", "0")) != 0:
        return 0  # torchrun: rank 0 reports
    if bundle is None:
        print(f"stopped; continue with: magms train --out {options.out} --resume", file=sys.stderr)
        return 0
    print(bundle)
    return 0


def _cmd_demo(options: DemoOptions) -> int:
    from magms.demo import run_demo, train_sample_model

    if options.train and options.model is not None:
        raise ConfigError("--train makes the model: give --train or --model, not both")
    options.out.mkdir(parents=True, exist_ok=True)
    model = options.model
    if options.train:
        progress = ProgressReporter(options.progress, "step")
        try:
            model = train_sample_model(options.data, options.out / "model", options.minutes, device=options.device, spacing=options.spacing,
                                       patch=options.patch, channels=options.channels, progress=progress.training_step)
        finally:
            progress.close()
    elif model is None:
        from magms.builtin import open_builtin_model

        model = open_builtin_model()
    run_demo(options.data, options.out, model, device=options.device, engine=options.engine, precision=options.precision)
    return 0


def _cmd_devices(options: DevicesOptions) -> int:
    import json

    from magms.devices import describe_devices, installed_versions
    from magms.files import atomic_write_text

    report = {"devices": [{"key": d.key, "description": d.description} for d in describe_devices()], "versions": installed_versions()}
    text = json.dumps(report, indent=1)
    if options.output is None:
        print(text)
    else:
        atomic_write_text(options.output, text + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# the parser

_COMMANDS: tuple[tuple[type[Options], Callable[[Any], int], str, str], ...] = (
    (DemoOptions, _cmd_demo,
     "the main job on the real sample data: segment every case from every subset of its sequences with the built-in model",
     "Segment every sample case with the built-in model (or --model, or a model trained here first with --train) from "
     "every subset of the model's sequences the case has: the unlabelled cases, and the labelled cases the model was "
     "validated on, not trained on. Writes OUT/<case>/<subset>.seg.nrrd and an overlay .png per run, and the Dice "
     "of each subset on the labelled cases in OUT/evaluation/ (summary.md, heatmap.png, metrics.csv). For research, "
     "not for clinical use."),
    (SegmentOptions, _cmd_segment,
     "segment a case (or many) from any subset of the model's modalities",
     "Segment one case from whichever of the model's modalities you have; without --model, with the built-in model "
     "(Resources/Models/models.json names it and the sha256 of its weights). Inputs may be on different grids if they "
     "overlap in space: they are resampled onto the reference input (the first present slot in the model's order), "
     "and the output is written on that input's own grid. Exit status: 0 done, 2 bad input (nothing written), 1 "
     "some batch cases failed."),
    (ExportOptions, _cmd_export,
     "write a label map as DICOM RT Structure Set and DICOM Segmentation referencing its DICOM series",
     "Write a label map that lies on a DICOM series' grid (a magms segment output, or one edited in Slicer) as a "
     "DICOM RT Structure Set (for treatment planning) and/or a DICOM Segmentation (for archives), referencing that "
     "series slice by slice: one structure per label and per region, named, coloured and coded (SNOMED CT) as in "
     "the model's label scheme. Needs the optional packages rt-utils and highdicom (pip install "
     "'magms-slicer[dicom]')."),
    (EvaluateOptions, _cmd_evaluate,
     "Dice and HD95 per label and region for every modality subset, on labelled cases",
     "Segment every labelled case with every non-empty subset of the model's modalities that the case has (the "
     "built-in model without --model), and "
     "measure Dice and HD95 (mm) per label and per region (WT/TC/ET for brain-tumour schemes) with MONAI metrics, "
     "and per region the BraTS 2023 lesion-wise Dice and HD95. "
     "Writes metrics.csv (one row per case x subset x label/region), summary.md (mean and sd per subset, lesion-wise "
     "beside whole-image, the best subset per region) and heatmap.png (subsets x regions)."),
    (TrainOptions, _cmd_train,
     "train one model that segments from any subset of the modalities",
     "Train a MAG-MS model on labelled cases (an MSD task folder, an nnU-Net v2 raw data set, case folders or a CSV "
     "manifest: see --data). Every case is checked first and all problems are reported at once. Writes "
     "OUT/checkpoint every epoch, OUT/metrics.csv, and the model bundle into OUT at the end. Ctrl-C or SIGTERM "
     "saves a checkpoint and exits; --resume continues exactly there. --check-only checks the data and stops."),
    (ServeOptions, _cmd_serve,
     "the refinement worker: the model stays loaded, clicks correct a case within a second (for the Slicer module)",
     "Load a model that takes clicks and answer requests on standard input, one JSON object per line, each with "
     "one JSON line on standard output: open a case, click (a physical point in RAS or LPS, a region, a sign), undo, "
     "clear, stop. A click re-runs the network on the window around it only and answers with the labels of the box "
     "that changed. A bad request is answered with an error and the worker goes on. The protocol is in "
     "magms.protocol; docs/refine.md shows it."),
    (DevicesOptions, _cmd_devices,
     "the devices (CUDA GPUs, CPU) and package versions this Python would run with, as JSON",
     "List the CUDA devices and the CPU that --device can name, and the installed versions of magms, torch and "
     "MONAI, as JSON. The Slicer modules run it in a child process, so that Slicer itself never imports torch."),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magms",
        description="MAGMS: modality-agnostic brain-tumour segmentation (MAG-MS, He et al., ISBI 2024).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {magms.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (slot guesses, timings) on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for options, run, summary, description in _COMMANDS:
        command = sub.add_parser(options.command, help=summary, description=description)
        add_arguments(command, options)
        command.set_defaults(options=options, run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(from_command_line(args.options, args)))
    except MAGMSError as err:
        print(f"magms {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
