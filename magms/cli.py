"""The ``magms`` command line. Results go to stdout, logging and progress to stderr.

Each command's flags are generated from its options record (:mod:`magms.commands`), so the help,
the defaults and the ranges are those of the records; ``--config FILE`` reads the same options
from JSON. A :class:`~magms.errors.MAGMSError` (bad input the user can fix) is printed as one line
on stderr with exit status 2 and no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import magms
from magms.commands import (
    DemoOptions,
    DevicesOptions,
    EvaluateOptions,
    ExportOptions,
    SegmentOptions,
    TrainOptions,
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


def _open_model(options: SegmentOptions | EvaluateOptions | ExportOptions) -> OpenedModel:
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
    from magms.postprocess import as_requested

    recorded = model.info.postprocessing
    segmenter = Segmenter(
        model, device=options.device, sw_batch_size=options.sw_batch_size, amp=options.amp,
        postprocessing=as_requested(recorded, postprocess=options.postprocess, tta=options.tta),
        engine=options.engine, precision=options.precision,
    )
    for note in segmenter.notes:  # once, not per case
        print(f"note: {note}", file=sys.stderr)
    if options.progress == "lines":  # for a parent process (the Segmenter shows what ran)
        print(format_ran(segmenter.ran()), file=sys.stderr, flush=True)
    return segmenter


def _write_result(result, scheme, output: Path, probabilities: Path | None, overwrite: bool) -> None:
    from magms.data.io import write_labelmap, write_probabilities

    write_labelmap(result.labels, result.reference, output, scheme, overwrite=overwrite)
    if probabilities is not None:
        write_probabilities(result.probabilities, result.reference, probabilities, overwrite=overwrite)


def _dicom_requests(rtstruct: Path | None, dicom_seg: Path | None, overwrite: bool) -> list[tuple[str, Path]]:
    """The DICOM objects asked for, as (kind, file), each path checked before any work."""
    from magms.dicom import check_dicom_output

    requests = [(kind, path) for kind, path in (("rtstruct", rtstruct), ("dicom-seg", dicom_seg)) if path is not None]
    for kind, path in requests:
        check_dicom_output(path, overwrite, flag=f"--{kind}")
    return requests


def _reference_series(inputs: dict, reference_slot: str, grid, flags: Sequence[str]):
    """The DICOM series of the reference input, ordered on its grid; a clear refusal when the
    reference input is not a DICOM series folder (an RT object references the images it was drawn on)."""
    from magms.dicom import is_dicom_series, read_series

    source = inputs[reference_slot]
    if isinstance(source, (str, os.PathLike)) and is_dicom_series(source):
        return read_series(Path(source), grid)
    raise ConfigError(
        f"{' and '.join(flags)}: the reference input {reference_slot} ({source}) is not a DICOM series folder; DICOM RT "
        "and SEG objects reference the DICOM images the labels were made on"
    )


def _write_dicom(requests: Sequence[tuple[str, Path]], labels, grid, series, scheme, model: str, overwrite: bool) -> None:
    from magms.dicom import write_dicom_seg, write_rtstruct

    writers = {"rtstruct": write_rtstruct, "dicom-seg": write_dicom_seg}
    for kind, path in requests:
        writers[kind](labels, grid, series, scheme, path, model=model, overwrite=overwrite)
        print(path)


def _result_line(output: Path, result) -> str:
    return f"{output}\t{'+'.join(result.present)}\treference={result.reference_slot}\t{result.seconds:.1f}s"


def _segment_inputs(options: SegmentOptions, slots: Sequence[str]) -> dict[str, Path]:
    """The images of the one case, by slot (guessed from names for ``--input-dir``)."""
    if options.input_dir is None:
        return _parse_inputs(options.input)
    from magms.data.cases import case_from_folder

    case = case_from_folder(options.input_dir, slots)
    for guess in case.guesses:
        print(f"{guess.name}: {guess.slot or 'not used'} ({guess.reason})", file=sys.stderr)
    return dict(case.images)


def _cmd_segment(options: SegmentOptions) -> int:
    from magms.data.io import PROBABILITY_SUFFIXES, check_output_path

    if options.batch is not None:
        return _segment_batch(options)
    if options.output is None:
        raise ConfigError("--output is required (or --batch with --output-dir)")
    if bool(options.input) == bool(options.input_dir):
        raise ConfigError("give the images with --input SLOT=PATH (repeatable) or --input-dir DIR, not both")
    # every check that needs no network comes first: nothing is computed for a run that cannot finish
    check_output_path(options.output, options.overwrite)
    if options.probabilities is not None:
        check_output_path(options.probabilities, options.overwrite, PROBABILITY_SUFFIXES)
    dicom = _dicom_requests(options.rtstruct, options.dicom_seg, options.overwrite)
    _check_review_options(options)
    model = _open_model(options)
    info = model.info
    inputs = _segment_inputs(options, info.slots)
    _check_compared_outputs(options, info, inputs)
    # every image check before the network is loaded; the checked images are then used as they are
    prepared, series = _check_case(inputs, info.slots, dicom, options.preprocess)
    segmenter = _segmenter(options, model)
    progress = ProgressReporter(options.progress, "window", _progress_label(options, info.slots, inputs))
    try:
        result, compared = _segment_compared(segmenter, prepared.images, options, progress)
    finally:
        progress.close()
    _write_outputs(segmenter, prepared, result, series, model.name, options.output, options.probabilities, dicom, options.overwrite)
    _write_review(options, model, info, inputs, result, compared, prepared.notes + result.notes)
    return 0


def _check_case(inputs: dict, slots: Sequence[str], dicom: Sequence[tuple[str, Path]], preprocess: str = "none"):
    """One case's images read, checked and preprocessed as ``--preprocess`` asks (and its reference DICOM
    series when DICOM objects are asked for)."""
    from magms.data.clinical import preprocess_inputs

    prepared = preprocess_inputs(inputs, slots, preprocess)
    series = None
    if dicom:
        series = _reference_series(inputs, prepared.reference_slot, prepared.reference, [f"--{k}" for k, _ in dicom])
    return prepared, series


#: Says a line: to stderr (a note) or to stdout (a result).
Say = Callable[[str, bool], None]


def _print(text: str, error: bool) -> None:
    print(text, file=sys.stderr if error else sys.stdout)


def _write_outputs(segmenter, prepared, result, series, model_name: str, output: Path, probabilities: Path | None,
                   dicom: Sequence[tuple[str, Path]], overwrite: bool, prefix: str = "", say: Say = _print) -> None:
    """One case's notes, labelmap (and probabilities), result line and DICOM objects."""
    for note in prepared.notes + result.notes:
        say(f"note: {prefix}{note}", True)
    scheme = segmenter.info.scheme
    _write_result(result, scheme, output, probabilities, overwrite)
    say(_result_line(output, result), False)
    _write_dicom(dicom, result.labels, result.reference, series, scheme, model_name, overwrite)


#: Cases of ``--batch`` in work at once: one is read, resampled and written while the other's network
#: runs (the Segmenter runs one network call at a time). On 2 cores: 1.85 instead of 2.10 s per case.
BATCH_CASES_IN_FLIGHT = 2


def _segment_batch(options: SegmentOptions) -> int:
    from magms.data.cases import find_cases

    dicom_folders = _batch_folders(options)
    model = _open_model(options)
    segmenter = _segmenter(options, model)
    cases = find_cases(options.batch, segmenter.slots)

    def segment_case(case) -> tuple[list[tuple[str, bool]], str | None]:
        """One case, in a worker thread: the lines it says (printed in case order), and its failure."""
        lines: list[tuple[str, bool]] = []
        try:
            dicom = _dicom_requests(*(_batch_dicom_file(dicom_folders.get(k), case.name, k) for k in ("rtstruct", "dicom-seg")),
                                    options.overwrite)
            prepared, series = _check_case(case.images, segmenter.slots, dicom, options.preprocess)
            result = segmenter.segment(prepared.images)
            output = options.output_dir / f"{case.name}{options.format}"
            _write_outputs(segmenter, prepared, result, series, model.name, output, None, dicom, options.overwrite, f"{case.name}: ",
                           say=lambda text, error: lines.append((text, error)))
        except MAGMSError as err:
            return lines, f"{case.name}: {err}"
        return lines, None

    progress = ProgressReporter(options.progress, "case", "cases")
    try:
        failures = _two_in_flight(cases, segment_case, progress)
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


def _two_in_flight(cases: Sequence, segment_case: Callable, progress: Callable[[int, int, str], None]) -> list[str]:
    """Run ``segment_case`` over ``cases`` with :data:`BATCH_CASES_IN_FLIGHT` in work at once, printing each
    case's lines in case order; returns the failures."""
    failures: list[str] = []
    pool = ThreadPoolExecutor(BATCH_CASES_IN_FLIGHT, thread_name_prefix="magms-case")
    try:
        # at most BATCH_CASES_IN_FLIGHT cases submitted: an interrupt waits for those only
        waiting = iter(cases)
        working = collections.deque((case, pool.submit(segment_case, case)) for case in itertools.islice(waiting, BATCH_CASES_IN_FLIGHT))
        done = 0
        while working:
            case, future = working.popleft()
            lines, failure = future.result()
            following = next(waiting, None)
            if following is not None:
                working.append((following, pool.submit(segment_case, following)))
            for text, error in lines:
                _print(text, error)
            if failure is not None:
                failures.append(failure)
                logger.error("failed: %s", failure)
            done += 1
            progress(done, len(cases), case.name)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failures


def _batch_dicom_file(folder: Path | None, case: str, kind: str) -> Path | None:
    return None if folder is None else folder / f"{case}.{'rtstruct' if kind == 'rtstruct' else 'seg'}.dcm"


def _cmd_export(options: ExportOptions) -> int:
    import SimpleITK as sitk

    from magms.data.io import read_labelmap
    from magms.dicom import read_series

    dicom = _dicom_requests(options.rtstruct, options.dicom_seg, options.overwrite)
    if not dicom:
        raise ConfigError("nothing to write: give --rtstruct FILE and/or --dicom-seg FILE")
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
    _write_dicom(dicom, labels, grid, series, scheme, model.name, options.overwrite)
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


#: ``--compared-outputs``: each compared output is written as ``<name>.seg.nrrd``.
COMPARED_SUFFIX = ".seg.nrrd"


def _compared_names(compare: str, info, inputs: Mapping[str, Path]) -> list[str]:
    """The names of the outputs ``--compare`` compares with the fullest one, as the review names them."""
    from magms.modalities import subsets_of
    from magms.postprocess import ALL_FLIPS, flip_combinations, flip_name

    if compare == "subsets":
        return ["+".join(subset) for subset in subsets_of([s for s in info.slots if s in inputs])[:-1]]
    if compare == "flips":
        return [flip_name(flip, info.preprocessing.orientation) for flip in flip_combinations(ALL_FLIPS)]
    return []


def _check_compared_outputs(options: SegmentOptions, info, inputs: Mapping[str, Path]) -> None:
    """Refuse ``--compared-outputs`` files that exist (without ``--overwrite``) before any work."""
    if options.compared_outputs is None:
        return
    existing = [f"{name}{COMPARED_SUFFIX}" for name in _compared_names(options.compare, info, inputs)
                if (options.compared_outputs / f"{name}{COMPARED_SUFFIX}").exists()]
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


def _segment_compared(segmenter, images, options: SegmentOptions, progress: ProgressReporter):
    """The case's segmentation, and the outputs the review compares (by name, the segmentation's first;
    just the segmentation without ``--compare``), from one preparation of the inputs."""
    from magms.postprocess import flip_name

    probabilities = options.probabilities is not None
    if options.compare == "subsets":
        if len(images) < 2:
            raise ConfigError(f"--compare subsets: one input ({', '.join(images)}) has no smaller subset; use --compare flips")
        outputs = segmenter.segment_subsets(images, probabilities=probabilities, progress=progress)
        result = outputs[tuple(images)]  # the images are in the model's slot order, as the subsets' keys
        return result, {"+".join(subset): outputs[subset] for subset in sorted(outputs, key=lambda s: s != result.present)}
    if options.compare == "flips":
        result, flips = segmenter.segment_flips(images, probabilities=probabilities, progress=progress)
        orientation = segmenter.info.preprocessing.orientation
        return result, {"+".join(result.present): result, **{flip_name(flip, orientation): out for flip, out in flips.items()}}
    result = segmenter.segment(images, probabilities=probabilities, progress=progress)
    return result, {"+".join(result.present): result}


def _write_review(options: SegmentOptions, model: OpenedModel, info, inputs: Mapping[str, Path], result, compared,
                  notes: list[str]) -> None:
    """``--disagreement``, ``--report`` and ``--compared-outputs``, their paths printed."""
    if options.disagreement is None and options.report is None and options.compared_outputs is None:
        return
    from magms.data.io import write_labelmap, write_map
    from magms.review import CaseReview, write_report

    review = CaseReview(
        scheme=info.scheme, reference=result.reference, outputs={name: out.labels for name, out in compared.items()},
        fullest="+".join(result.present), inputs={s: str(inputs[s]) for s in info.slots if s in inputs},
        reference_slot=result.reference_slot, model=model.folder, compare=options.compare, weights_sha256=info.weights_sha256,
        output=options.output, disagreement_file=options.disagreement, notes=notes, engine=result.engine,
    )
    if options.disagreement is not None:
        write_map(review.disagreement(), result.reference, options.disagreement, overwrite=options.overwrite)
        print(options.disagreement)
    if options.report is not None:
        for path in write_report(options.report, review, overwrite=options.overwrite):
            print(path)
    if options.compared_outputs is not None:
        options.compared_outputs.mkdir(exist_ok=True)
        for name in review.compared:
            path = options.compared_outputs / f"{name}{COMPARED_SUFFIX}"
            write_labelmap(review.outputs[name], result.reference, path, info.scheme, overwrite=options.overwrite)
            print(path)


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
        print(f"stopped; continue with: magms train ... --out {options.out} --resume", file=sys.stderr)
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
