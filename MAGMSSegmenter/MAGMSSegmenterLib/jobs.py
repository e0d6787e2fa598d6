"""The segmentation as a child job: the mapped volumes written to a temporary folder, ``magms segment`` run on
them (once, once per subset, or one compare run), the results added to the scene only when every run succeeded.

MRML only, no Qt (tested with ``slicer-core``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import slicer

from magms.bundle import BundleInfo, read_bundle_info
from magms.errors import ConfigError
from magms.modalities import subsets_of
from magms.protocol import PREPROCESS_MODES, EngineChoice
from MAGMSCommonLib.childjob import ChildJob
from MAGMSCommonLib.runner import ProcessRunner, RunState
from MAGMSCommonLib.signal import Signal
from MAGMSCommonLib.volumes import checkMapping, writeVolumes

from .disagreement import defaultReportsFolder, hideDisagreement, importDisagreement, showDisagreement
from .mapping import compareOptions, segmentOptions
from .results import importSegmentation, safeFileName, segmentationName

logger = logging.getLogger(__name__)


class FolderJob(ChildJob):
    """A child job with a temporary folder of its own (the patients' images, the child's outputs), removed in
    every case: the job runs while the folder exists."""

    def __init__(self, scene: slicer.vtkMRMLScene, python: str | None, runner: ProcessRunner | None) -> None:
        super().__init__(scene, python, runner)
        self.cancelled = Signal()
        self.folder: Path | None = None

    @property
    def running(self) -> bool:
        return self.folder is not None

    def _run(self, options, name: str) -> None:
        """Write the options into the folder and start the child; raises what that raises (OSError: no such program)."""
        self._startChild(options, self.folder / f"{name}.json")

    def _cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None


@dataclasses.dataclass(frozen=True)
class _Run:
    """One ``magms segment`` child: ``subsets`` are the segmentations it writes (one, or with
    ``compare`` every subset of the last, smallest first)."""

    subsets: tuple[tuple[str, ...], ...]
    compare: bool = False

    @property
    def slots(self) -> tuple[str, ...]:
        return self.subsets[-1]


def _runs(mapped: tuple[str, ...], subsets: Sequence[Sequence[str]] | str | None) -> list[_Run]:
    """The child runs for ``subsets`` (see :meth:`SegmentationJob.start`) of the ``mapped`` slots.

    Raises:
        ConfigError: a subset uses a slot without a volume, or is empty.
    """
    if subsets is None:
        return [_Run((mapped,))]
    if subsets == "all":  # one input has no smaller subset to compare with: then it is one plain run
        return [_Run(tuple(subsets_of(mapped)), compare=True)] if len(mapped) > 1 else [_Run((mapped,))]
    chosen = [tuple(s for s in mapped if s in subset) for subset in subsets]
    missing = [("+".join(s)) for s, q in zip(subsets, chosen) if set(s) - set(q)]
    if missing or not all(chosen):
        raise ConfigError(f"subset(s) {', '.join(missing) or 'empty'} use slots without a volume (mapped: {', '.join(mapped)})")
    return [_Run((subset,)) for subset in chosen]


class SegmentationJob(FolderJob):
    """Segment the mapped volumes, once or once per subset ("compare subsets"), in a child process.

    The mapped volumes are written to a temporary folder and ``magms segment`` runs on them. With
    ``subsets="all"`` and two or more volumes, ONE child runs ``--compare subsets`` (the inputs are
    prepared once): it writes every subset's segmentation (``--compared-outputs``), the disagreement
    map and the review report into a new folder under ``reportsFolder``, which is kept. An explicit
    list of subsets runs one child per subset, as before. Only when every run has succeeded are the
    results added: a new segmentation node per subset and, with compare subsets, the disagreement
    map as a new volume node shown over the reference volume (:func:`showDisagreement`). Cancel or
    failure leaves the scene as it was and removes the report folder. The temporary folder is
    removed in every case.

    Every output of a compare run lies on the reference volume's grid (the first mapped slot in the
    model's order), so every new node is referenced to that volume, also a subset's without it.

    Signals:
        progress(fraction: float, text: str)
        finished(nodes: list): the new segmentation nodes (the fullest last).
        failed(message: str)
        cancelled()

    Attributes (after ``finished``):
        disagreementNode: the disagreement map's volume node (None without compare subsets).
        reportFolder: the folder holding report.md, report.png, volumes.csv and the map (None without).
        compared: how many outputs were compared with the fullest one (the map's maximum possible count).
    """

    def __init__(self, scene: slicer.vtkMRMLScene, python: str | None = None, runner: ProcessRunner | None = None,
                 reportsFolder: Path | None = None) -> None:
        super().__init__(scene, python, runner)
        self.finished = Signal(list)
        self.reportsFolder = reportsFolder
        self.reportFolder: Path | None = None
        self.disagreementNode: slicer.vtkMRMLScalarVolumeNode | None = None
        self.compared = 0
        self._queue: list[_Run] = []
        self._done: list[_Run] = []
        self._total = 0

    def start(
        self,
        mapping: Mapping[str, str | None],
        bundle: str | os.PathLike[str],
        engineChoice: EngineChoice = EngineChoice(),
        subsets: Sequence[Sequence[str]] | str | None = None,
        modelName: str | None = None,
        preprocess: str = "none",
        info: BundleInfo | None = None,
    ) -> None:
        """Check, write the inputs and start the first run.

        Args:
            mapping: slot -> volume node ID (None or "" for none).
            bundle: model bundle folder.
            engineChoice: the device (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), engine and precision, passed
                to ``magms segment`` as they are; what ran is :attr:`ran` once the child has said it.
            subsets: None for one run with every mapped volume; ``"all"`` for every non-empty
                subset of the mapped slots (one compare run); or the subsets to run (one run each).
            modelName: for the node names (default: the bundle folder's name).
            preprocess: ``magms segment --preprocess``: ``none`` (the images are skull-stripped and
                aligned already) or ``auto`` (register the volumes on other grids, extract the brain
                when none looks skull-stripped), or another of :data:`~magms.protocol.PREPROCESS_MODES`.
            info: the bundle's info when the caller has read it already (the panel, on choosing the model);
                otherwise it is read here.
        Raises:
            BundleError, ConfigError: a bad bundle or mapping (nothing is started or written).
            OSError: the child process cannot be started (nothing is left behind).
            RuntimeError: a job is running already.
        """
        if self.running:
            raise RuntimeError("a segmentation is running already")
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess: expected one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}")
        self.bundle = Path(bundle)
        self.info = info if info is not None else read_bundle_info(self.bundle)
        pairs = checkMapping(self.scene, mapping, self.info.slots)
        queue = _runs(tuple(slot for slot, _ in pairs), subsets)
        self.nodes = dict(pairs)
        self.engineChoice, self.preprocess = engineChoice, preprocess
        self.modelName = modelName or self.bundle.name
        self.reportFolder, self.disagreementNode, self.compared, self.notes, self.ran = None, None, 0, [], None
        self.folder = Path(tempfile.mkdtemp(prefix="magms-segment-"))
        try:
            self.inputs = writeVolumes(pairs, self.folder)
            if any(run.compare for run in queue):
                self.reportFolder = self._newReportFolder(pairs[0][1])
            self._queue, self._done, self._total = list(queue), [], len(queue)
            self._startNext()
        except BaseException:  # also a child that cannot start: no folder (patient images) is left
            self._queue = []
            self._end()
            raise

    def _newReportFolder(self, reference: slicer.vtkMRMLScalarVolumeNode) -> Path:
        root = self.reportsFolder or defaultReportsFolder()
        stem = f"{safeFileName(reference.GetName())} {safeFileName(self.modelName)} {time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1, 1000):
            folder = root / (stem if n == 1 else f"{stem} {n}")
            try:
                folder.mkdir(parents=True)  # the child writes the map into it: it must exist
                return folder
            except FileExistsError:
                continue
        raise ConfigError(f"{root}: cannot make a report folder for {stem}")

    def _output(self, subset: Sequence[str]) -> Path:
        return self.folder / f"{'+'.join(subset)}.seg.nrrd"

    def _startNext(self) -> None:
        run = self._queue[0]
        inputs = {s: self.inputs[s] for s in run.slots}
        if run.compare:
            options = compareOptions(self.bundle, inputs, self._output(run.slots), self.folder / "compared",
                                     self.reportFolder / "disagreement.nii.gz", self.reportFolder, self.engineChoice, self.preprocess)
        else:
            options = segmentOptions(self.bundle, inputs, self._output(run.slots), self.engineChoice, self.preprocess)
        self.progress.emit(len(self._done) / self._total, self._describe(run))
        self._run(options, "+".join(run.slots))

    @staticmethod
    def _describe(run: _Run) -> str:
        text = f"segmenting from {' + '.join(run.slots)}"
        return f"{text} and its {len(run.subsets) - 1} smaller subsets" if run.compare else text

    def cancel(self) -> None:
        """Stop the child process tree; the scene stays as it was."""
        if self.running:
            self._queue = []
            self.runner.cancel()

    def _onProgress(self, done: int, total: int) -> None:
        text = self._describe(self._queue[0]) if self._queue else "segmenting"
        fraction = (len(self._done) + done / max(total, 1)) / self._total
        self.progress.emit(fraction, f"{text}: window {done}/{total}")

    def _onRunFinished(self, state: RunState, message: str) -> None:
        if state is RunState.CANCELLED:
            self._end()
            self.cancelled.emit()
            return
        if state is RunState.FAILED:
            self._end()
            self.failed.emit(message)
            return
        self._done.append(self._queue.pop(0))
        if self._queue:
            try:
                self._startNext()
            except Exception as err:  # noqa: BLE001 - reported as a failure, not raised into the panel's timer
                self._queue = []
                self._end()
                self.failed.emit(f"the next run could not be started: {err}")
            return
        created: list = []
        try:
            for run in self._done:
                for subset in run.subsets:
                    path = self._output(subset) if subset == run.slots else self.folder / "compared" / f"{'+'.join(subset)}.seg.nrrd"
                    # a compare run writes every output on its reference's grid, also a subset's without it
                    reference = self.nodes[run.slots[0] if run.compare else subset[0]]
                    name = segmentationName(self.nodes[subset[0]], self.modelName, subset)
                    created.append(importSegmentation(self.scene, path, reference, self.info.scheme, name))
            disagreement = self._importDisagreement()
        except Exception as err:  # noqa: BLE001 - reported to the user, the partial import undone
            for node in created:
                self.scene.RemoveNode(node)
            self._end()
            self.failed.emit(str(err))
            return
        if disagreement is not None:
            self.disagreementNode = disagreement
            showDisagreement(self.scene, disagreement)
        else:  # an earlier map would stay over images it does not describe
            hideDisagreement(self.scene)
        self._cleanup()
        self.progress.emit(1.0, "done")
        self.finished.emit(created)

    def _importDisagreement(self) -> slicer.vtkMRMLScalarVolumeNode | None:
        run = next((run for run in self._done if run.compare), None)
        if run is None:
            return None
        self.compared = len(run.subsets) - 1
        reference = self.nodes[run.slots[0]]
        name = f"{reference.GetName()} MAGMS {self.modelName} disagreement ({'+'.join(run.slots)})"
        return importDisagreement(self.scene, self.reportFolder / "disagreement.nii.gz", name, self.compared)

    def _end(self) -> None:
        """Cancelled or failed: nothing is kept, the report folder made for this run neither."""
        if self.reportFolder is not None:
            shutil.rmtree(self.reportFolder, ignore_errors=True)
            self.reportFolder = None
        self._cleanup()
