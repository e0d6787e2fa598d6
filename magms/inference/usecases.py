"""What a user does with a model: one case and its outputs, a case with review aids, a batch, DICOM out.

Plain functions over a :class:`~magms.inference.segmenter.Segmenter` (an opened model, its engine
chosen), each taking what it reports through: ``say(text, note)`` for a line (a note for the log, else a
result) and a progress callable. ``magms segment`` parses its options, calls these and prints; nothing
here reads options records or prints.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magms.errors import ConfigError, MAGMSError

if TYPE_CHECKING:
    from magms.bundle import BundleInfo
    from magms.data.cases import Case
    from magms.data.inputs import PreparedInputs
    from magms.dicom import DicomSeries
    from magms.inference.segmenter import Segmentation, Segmenter
    from magms.labels import LabelScheme, Structure
    from magms.targets import TargetRequest

__all__ = [
    "Say", "COMPARED_SUFFIX", "BATCH_CASES_IN_FLIGHT", "CaseOutputs", "dicom_requests", "prepare_case",
    "compared_names", "segment_compared", "each_subset", "check_target_request", "case_brain_of", "write_case",
    "write_rt_outputs", "write_dicom", "grow_case_targets", "write_review", "segment_batch",
]

logger = logging.getLogger(__name__)

#: Says a line: ``say(text, note)``; a note goes to the log (stderr), anything else is a result (stdout).
Say = Callable[[str, bool], None]
#: The file ending of each compared output written with ``--compared-outputs``.
COMPARED_SUFFIX = ".seg.nrrd"
#: Cases of a batch in work at once: one is read, resampled and written while the other's network runs
#: (the Segmenter runs one network call at a time). On 2 cores: 1.85 instead of 2.10 s per case.
BATCH_CASES_IN_FLIGHT = 2
#: A DICOM object asked for: its kind (``rtstruct``, ``dicom-seg``) and file.
DicomRequest = tuple[str, Path]


class CaseOutputs:
    """Where one case's results go: the label map, optionally the probabilities, DICOM objects and radiotherapy targets."""

    def __init__(self, labels: Path, probabilities: Path | None = None, dicom: Sequence[DicomRequest] = (),
                 overwrite: bool = False, targets: TargetRequest | None = None, planning_ct: Path | None = None,
                 drawn: Sequence[Structure] = ()) -> None:
        self.labels, self.probabilities, self.dicom, self.overwrite = labels, probabilities, list(dicom), overwrite
        self.targets, self.planning_ct = targets, planning_ct
        self.drawn = tuple(drawn)  # structures drawn already (``magms export --targets-from``), on the labels' grid


def dicom_requests(rtstruct: Path | None, dicom_seg: Path | None, overwrite: bool) -> list[DicomRequest]:
    """The DICOM objects asked for, as (kind, file), each path checked before any work."""
    from magms.dicom import check_dicom_output

    requests = [(kind, path) for kind, path in (("rtstruct", rtstruct), ("dicom-seg", dicom_seg)) if path is not None]
    for kind, path in requests:
        check_dicom_output(path, overwrite, flag=f"--{kind}")
    return requests


def _reference_series(inputs: Mapping[str, Any], reference_slot: str, grid: Any, flags: Sequence[str]) -> DicomSeries:
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


def prepare_case(inputs: Mapping[str, Any], slots: Sequence[str], dicom: Sequence[DicomRequest],
                 preprocess: str = "none") -> tuple[PreparedInputs, DicomSeries | None]:
    """One case's images read, checked and preprocessed as ``preprocess`` asks (``--preprocess``), and its
    reference DICOM series when DICOM objects are asked for."""
    from magms.data.clinical import preprocess_inputs

    prepared = preprocess_inputs(dict(inputs), slots, preprocess)
    series = None
    if dicom:
        series = _reference_series(inputs, prepared.reference_slot, prepared.reference, [f"--{k}" for k, _ in dicom])
    return prepared, series


def compared_names(compare: str, info: BundleInfo, inputs: Mapping[str, Any]) -> list[str]:
    """The names of the outputs ``compare`` (``subsets``, ``flips``) compares with the fullest one, as the review names them."""
    from magms.inference.postprocess import ALL_FLIPS, flip_combinations, flip_name
    from magms.modalities import subsets_of

    if compare == "subsets":
        return ["+".join(subset) for subset in subsets_of([s for s in info.slots if s in inputs])[:-1]]
    if compare == "flips":
        return [flip_name(flip, info.preprocessing.orientation) for flip in flip_combinations(ALL_FLIPS)]
    return []


def segment_compared(segmenter: Segmenter, images: Mapping[str, Any], compare: str = "none", probabilities: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> tuple[Segmentation, dict[str, Segmentation]]:
    """The case's segmentation, and the outputs the review compares (by name, the segmentation's first;
    just the segmentation when ``compare`` is ``none``), from one preparation of the inputs."""
    from magms.inference.postprocess import flip_name

    if compare == "subsets":
        if len(images) < 2:
            raise ConfigError(f"--compare subsets: one input ({', '.join(images)}) has no smaller subset; use --compare flips")
        outputs = segmenter.segment_subsets(images, probabilities=probabilities, progress=progress)
        result = outputs[tuple(images)]  # the images are in the model's slot order, as the subsets' keys
        return result, {"+".join(subset): outputs[subset] for subset in sorted(outputs, key=lambda s: s != result.present)}
    if compare == "flips":
        result, flips = segmenter.segment_flips(images, probabilities=probabilities, progress=progress)
        orientation = segmenter.info.preprocessing.orientation
        return result, {"+".join(result.present): result, **{flip_name(flip, orientation): out for flip, out in flips.items()}}
    result = segmenter.segment(images, probabilities=probabilities, progress=progress)
    return result, {"+".join(result.present): result}


def segment_with_clicks(segmenter: Segmenter, images: Mapping[str, Any], clicks: Sequence[Any], say: Say
                        ) -> tuple[Segmentation, dict[str, Segmentation]]:
    """The case's segmentation corrected by ``clicks`` (:class:`~magms.inference.refine.ClickRequest`, in order),
    with a note per click; the model must take clicks."""
    from magms.inference.refine import Refiner

    refiner = Refiner(segmenter)
    result = refiner.open(images)
    for number, click in enumerate(clicks, 1):
        try:
            patch = refiner.click(click.point, click.region, click.positive)
        except ConfigError as err:
            raise ConfigError(f"--clicks: click {number}: {err}") from None
        say(f"click {number}: {'+' if click.positive else '-'}{click.region} at LPS {tuple(round(v, 1) for v in click.point)}: "
            f"labels of a {'x'.join(map(str, patch.labels.shape[::-1]))}-voxel box recomputed", True)
    return result, {"+".join(result.present): result}


def each_subset(segmenter: Segmenter, images: Mapping[str, Any], subsets: Sequence[Sequence[str]] | None = None,
                announce: Callable[[str], None] | None = None) -> Iterator[tuple[str, Segmentation]]:
    """Segment a case from each subset of its images, one at a time: every non-empty subset of the model's slots
    it has (smallest first), or those of ``subsets`` it has; each named as its slots in the model's order
    (``flair+t1c``), ``announce(name)`` called before it runs. The demo and ``magms evaluate`` go through this."""
    from magms.modalities import subsets_of

    available = [s for s in segmenter.slots if s in images]
    # in the model's slot order, so a subset has one name however it was asked for
    todo = [tuple(s for s in segmenter.slots if s in subset) for subset in subsets] if subsets else subsets_of(available)
    for subset in (s for s in todo if set(s) <= set(available)):
        name = "+".join(subset)
        if announce is not None:
            announce(name)
        yield name, segmenter.segment({s: images[s] for s in subset})


def check_target_request(request: TargetRequest | None, dicom: Sequence[DicomRequest], planning_ct: Path | None = None) -> None:
    """Refuse ``--targets`` with nowhere to write them, and ``--planning-ct`` without a DICOM object, before any work."""
    if request is not None and not dicom and request.folder is None:
        raise ConfigError("--targets: nothing to write the targets into: give --rtstruct, --dicom-seg and/or --targets-dir")
    if planning_ct is not None and not dicom:
        raise ConfigError(f"--planning-ct {planning_ct}: give --rtstruct and/or --dicom-seg: the objects that reference the CT")


def case_brain_of(prepared: PreparedInputs, request: TargetRequest | None, planning_ct: Path | None = None) -> tuple[Any, str] | None:
    """The brain mask the CTVs keep to and the planning CT's registration is checked with, and where it came from;
    None when neither is asked for. Found before the network runs, so that a case without one is refused at once."""
    if request is None and planning_ct is None:
        return None
    from magms.targets import case_brain

    return case_brain(prepared.images, prepared.names, None if request is None else request.brain_file,
                      getattr(prepared, "brain_mask", None), str(getattr(prepared, "mask_source", "")),
                      hint=", or extract it with --preprocess strip")


@dataclasses.dataclass
class _Planned:
    """What the DICOM objects are drawn on: the labels, their grid and series, the brain and barrier there."""

    labels: Any
    grid: Any
    series: DicomSeries | None
    brain: tuple[Any, str] | None
    barrier: Any = None


def _on_planning_grid(outputs: CaseOutputs, labels: Any, grid: Any, series: DicomSeries | None, brain: tuple[Any, str] | None,
                      say: Say) -> _Planned:
    """The case as the DICOM objects are drawn: as it is, or moved onto the planning CT (``--planning-ct``), with the
    registration said and its picture written beside the first DICOM object."""
    request = outputs.targets
    barrier = None
    if request is not None and request.barrier_file is not None:
        from magms.targets import read_mask_on

        barrier = read_mask_on(request.barrier_file, grid, "--barrier")
    if outputs.planning_ct is None:
        return _Planned(labels, grid, series, brain, barrier)
    from magms.planning import move_to_planning_ct, write_registration_picture

    assert brain is not None  # case_brain_of found it before the network ran
    moved = move_to_planning_ct(outputs.planning_ct, grid, labels, brain[0], barrier)
    say(f"note: {moved.registration.describe()}", True)
    picture = outputs.dicom[0][1].with_suffix(".registration.png")
    say(str(write_registration_picture(moved.grid, moved.brain, picture)), False)
    return _Planned(moved.labels, moved.grid, moved.series, (moved.brain, brain[1]), moved.barrier)


def grow_case_targets(request: TargetRequest | None, planned: _Planned, scheme: LabelScheme, overwrite: bool,
                      say: Say) -> tuple[Structure, ...]:
    """The targets ``request`` asks for, grown on the planned grid; their masks written to ``--targets-dir`` (each path said)."""
    if request is None or planned.brain is None:
        return ()
    from magms.targets import case_targets, volume_ml, write_targets

    found = case_targets(planned.labels, planned.grid, scheme, request, *planned.brain, barrier=planned.barrier)
    for structure in found:
        say(f"note: {structure.description}: {volume_ml(structure, planned.grid):.1f} ml", True)
    if request.folder is not None:
        for path in write_targets(found, planned.grid, request.folder, request.protocol, overwrite):
            say(str(path), False)
    return found


def write_rt_outputs(outputs: CaseOutputs, labels: Any, grid: Any, series: DicomSeries | None, brain: tuple[Any, str] | None,
                     scheme: LabelScheme, model: str, say: Say) -> None:
    """The radiotherapy outputs of a label map: moved onto the planning CT when asked, the targets grown, the DICOM objects."""
    planned = _on_planning_grid(outputs, labels, grid, series, brain, say)
    targets = grow_case_targets(outputs.targets, planned, scheme, outputs.overwrite, say) + outputs.drawn
    write_dicom(outputs.dicom, planned.labels, planned.grid, planned.series, scheme, model, outputs.overwrite, say, targets)


def write_case(segmenter: Segmenter, prepared: PreparedInputs, result: Segmentation, series: DicomSeries | None,
               outputs: CaseOutputs, say: Say, prefix: str = "", brain: tuple[Any, str] | None = None) -> None:
    """One case's notes, label map (and probabilities), result line, and its radiotherapy outputs."""
    from magms.data.io import write_labelmap, write_probabilities

    for note in prepared.notes + result.notes:
        say(f"note: {prefix}{note}", True)
    scheme = segmenter.info.scheme
    write_labelmap(result.labels, result.reference, outputs.labels, scheme, overwrite=outputs.overwrite)
    if outputs.probabilities is not None:
        write_probabilities(result.probabilities, result.reference, outputs.probabilities, overwrite=outputs.overwrite)
    say(f"{outputs.labels}\t{'+'.join(result.present)}\treference={result.reference_slot}\t{result.seconds:.1f}s", False)
    write_rt_outputs(outputs, result.labels, result.reference, series, brain, scheme, segmenter.model.name, say)


def write_dicom(requests: Sequence[DicomRequest], labels: Any, grid: Any, series: DicomSeries | None, scheme: LabelScheme,
                model: str, overwrite: bool, say: Say, targets: Sequence[Structure] = ()) -> None:
    """The DICOM objects asked for (RT Structure Set, SEG) of a label map on ``series``' grid, with ``targets``
    after its labels and regions; each path said."""
    from magms.dicom import write_dicom_seg, write_rtstruct

    writers = {"rtstruct": write_rtstruct, "dicom-seg": write_dicom_seg}
    for kind, path in requests:
        writers[kind](labels, grid, series, scheme, path, model=model, overwrite=overwrite, targets=targets)
        say(str(path), False)


def write_review(segmenter: Segmenter, inputs: Mapping[str, Any], result: Segmentation, compared: Mapping[str, Segmentation],
                 notes: Sequence[str], say: Say, compare: str = "none", output: Path | None = None,
                 disagreement: Path | None = None, report: Path | None = None, compared_outputs: Path | None = None,
                 overwrite: bool = False) -> None:
    """The review aids asked for: the disagreement map, the one-page report, every compared output; each path said."""
    if disagreement is None and report is None and compared_outputs is None:
        return
    from magms.data.io import write_labelmap, write_map
    from magms.review import CaseReview, write_report

    info = segmenter.info
    review = CaseReview(
        scheme=info.scheme, reference=result.reference, outputs={name: out.labels for name, out in compared.items()},
        fullest="+".join(result.present), inputs={s: str(inputs[s]) for s in info.slots if s in inputs},
        reference_slot=result.reference_slot, model=segmenter.model.folder, compare=compare, weights_sha256=info.weights_sha256,
        output=output, disagreement_file=disagreement, notes=list(notes), engine=result.engine,
    )
    if disagreement is not None:
        write_map(review.disagreement(), result.reference, disagreement, overwrite=overwrite)
        say(str(disagreement), False)
    if report is not None:
        for path in write_report(report, review, overwrite=overwrite):
            say(str(path), False)
    if compared_outputs is not None:
        compared_outputs.mkdir(exist_ok=True)
        for name in review.compared:
            path = compared_outputs / f"{name}{COMPARED_SUFFIX}"
            write_labelmap(review.outputs[name], result.reference, path, info.scheme, overwrite=overwrite)
            say(str(path), False)


def segment_batch(segmenter: Segmenter, cases: Sequence[Case], output_dir: Path, suffix: str, say: Say,
                  progress: Callable[[int, int, str], None], dicom_folders: Mapping[str, Path] | None = None,
                  overwrite: bool = False, preprocess: str = "none") -> list[str]:
    """Every case, :data:`BATCH_CASES_IN_FLIGHT` in work at once, each case's lines said in case order; a bad
    case is reported and the batch goes on. Returns the failures, one line each.

    Args:
        output_dir: ``<case><suffix>`` is written here for each case.
        dicom_folders: by kind (``rtstruct``, ``dicom-seg``), a folder for ``<case>.rtstruct.dcm`` / ``<case>.seg.dcm``.
        progress: ``progress(done, total, case name)`` after each case.
    """
    dicom_folders = dict(dicom_folders or {})

    def segment_case(case: Case) -> tuple[list[tuple[str, bool]], str | None]:
        """One case, in a worker thread: the lines it says (said in case order), and its failure."""
        lines: list[tuple[str, bool]] = []
        try:
            files = (_batch_dicom_file(dicom_folders.get(k), case.name, k) for k in ("rtstruct", "dicom-seg"))
            dicom = dicom_requests(*files, overwrite)
            prepared, series = prepare_case(case.images, segmenter.slots, dicom, preprocess)
            result = segmenter.segment(prepared.images)
            outputs = CaseOutputs(output_dir / f"{case.name}{suffix}", None, dicom, overwrite)
            write_case(segmenter, prepared, result, series, outputs, lambda text, note: lines.append((text, note)), f"{case.name}: ")
        except MAGMSError as err:
            return lines, f"{case.name}: {err}"
        return lines, None

    return _in_flight(cases, segment_case, say, progress)


def _batch_dicom_file(folder: Path | None, case: str, kind: str) -> Path | None:
    return None if folder is None else folder / f"{case}{'.rtstruct.dcm' if kind == 'rtstruct' else '.seg.dcm'}"


def _in_flight(cases: Sequence[Case], segment_case: Callable, say: Say, progress: Callable[[int, int, str], None]) -> list[str]:
    """``segment_case`` over ``cases``, :data:`BATCH_CASES_IN_FLIGHT` submitted at a time (an interrupt waits for
    those only), each case's lines said in case order; the failures."""
    failures: list[str] = []
    pool = ThreadPoolExecutor(BATCH_CASES_IN_FLIGHT, thread_name_prefix="magms-case")
    try:
        waiting = iter(cases)
        working = collections.deque((case, pool.submit(segment_case, case)) for case in itertools.islice(waiting, BATCH_CASES_IN_FLIGHT))
        done = 0
        while working:
            case, future = working.popleft()
            lines, failure = future.result()
            following = next(waiting, None)
            if following is not None:
                working.append((following, pool.submit(segment_case, following)))
            for text, note in lines:
                say(text, note)
            if failure is not None:
                failures.append(failure)
                logger.error("failed: %s", failure)
            done += 1
            progress(done, len(cases), case.name)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failures
