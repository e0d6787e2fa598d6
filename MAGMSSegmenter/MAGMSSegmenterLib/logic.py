"""MAGMS Segmenter logic: MRML only, no Qt, importable without the Slicer application.

It is tested against the real MRML of the ``slicer-core`` package. The scene is passed in, never
taken from ``slicer.mrmlScene``; what only the application has (Slicer's DICOM database) is passed
in as a callable. The network runs in a separate ``magms segment`` process, the DICOM export in a
``magms export`` process (:class:`~MAGMSCommonLib.runner.ProcessRunner`): Slicer never imports
torch, pydicom, highdicom or rt-utils. The scene is touched only when a process has succeeded, and
then only by adding NEW nodes (segmentations; with compare subsets also the disagreement map, shown
as the slice views' foreground; a run without one takes an earlier map out of the views). The DICOM
export reads the scene and writes files only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import slicer
import vtk

from magms.bundle import BundleInfo, read_bundle_info
from magms.commands import ExportOptions, SegmentOptions
from magms.data.skull import SkullCheck, skull_check_array
from magms.errors import ConfigError
from magms.labels import LabelScheme
from magms.modalities import subsets_of
from magms.protocol import PREPROCESS_MODES, EngineChoice, EngineRan, parse_ran
from MAGMSCommonLib import dependencies, models
from MAGMSCommonLib.child import childEnvironment, childPython, configCommand
from MAGMSCommonLib.runner import ProcessRunner, RunState
from MAGMSCommonLib.segments import setSegmentTerminology, withBinaryLabelmaps
from MAGMSCommonLib.signal import Signal
from MAGMSCommonLib.volumes import ROLE_ATTRIBUTE, checkMapping, ensureSegmentationConverters, writeVolumes

__all__ = [
    "readSlotMapping",
    "writeSlotMapping",
    "segmentOptions",
    "compareOptions",
    "volumeSkullCheck",
    "importSegmentation",
    "segmentationName",
    "describeBundle",
    "defaultReportsFolder",
    "importDisagreement",
    "heatColorNode",
    "showDisagreement",
    "hideDisagreement",
    "disagreementWindow",
    "SegmentationJob",
    "InstanceFiles",
    "noDicomDatabase",
    "EXPORT_FORMATS",
    "acquisitionTransform",
    "exportReference",
    "exportProblem",
    "slicePositionProblem",
    "dicomSeriesFiles",
    "segmentLabelValues",
    "writeLabelsForExport",
    "exportPaths",
    "ExportJob",
]

logger = logging.getLogger(__name__)

# The reference in ``magms segment`` is the first present slot in the model's order: keep that order.
SLOT_REFERENCE_ROLE = "MAGMS.slot."


def readSlotMapping(parameterNode: slicer.vtkMRMLNode, slots: Sequence[str]) -> dict[str, str | None]:
    """The slot -> volume mapping kept as node references on the parameter node (saved with the scene)."""
    return {slot: parameterNode.GetNodeReferenceID(SLOT_REFERENCE_ROLE + slot) for slot in slots}


def writeSlotMapping(parameterNode: slicer.vtkMRMLNode, mapping: Mapping[str, str | None]) -> None:
    for slot, node_id in mapping.items():
        parameterNode.SetNodeReferenceID(SLOT_REFERENCE_ROLE + slot, node_id or None)


def segmentOptions(bundle: Path, inputs: Mapping[str, Path], output: Path, engineChoice: EngineChoice = EngineChoice(),
                   preprocess: str = "none") -> SegmentOptions:
    """The ``magms segment`` options of one subset, with progress lines for the runner: ``engineChoice``
    gives ``--device``, ``--engine`` and ``--precision``; ``preprocess`` is ``--preprocess`` (``none``: the
    images as they are, ``auto``: registered and skull-stripped as they need)."""
    return SegmentOptions(model=bundle, input=tuple(f"{slot}={path}" for slot, path in inputs.items()), output=output,
                          progress="lines", overwrite=True, preprocess=preprocess, **dataclasses.asdict(engineChoice))


def compareOptions(bundle: Path, inputs: Mapping[str, Path], output: Path, compared: Path, disagreement: Path, report: Path,
                   engineChoice: EngineChoice = EngineChoice(), preprocess: str = "none") -> SegmentOptions:
    """The ``magms segment`` options of one "compare subsets" run: the fullest output to ``output``,
    every smaller subset's to ``compared/<slot+slot>.seg.nrrd``, the disagreement map and the report."""
    return dataclasses.replace(segmentOptions(bundle, inputs, output, engineChoice, preprocess), compare="subsets",
                               disagreement=disagreement, report=report, compared_outputs=compared)


def volumeSkullCheck(volume: slicer.vtkMRMLScalarVolumeNode) -> SkullCheck | None:
    """Whether ``volume`` looks skull-stripped, by the rule ``magms segment --preprocess auto`` applies
    (:func:`magms.data.skull.skull_check_array` on the same voxels and spacing: the child reads the file
    :func:`~MAGMSCommonLib.volumes.writeVolumes` writes from this array). None: no image data."""
    if volume is None or volume.GetImageData() is None:
        return None
    return skull_check_array(slicer.util.arrayFromVolume(volume), volume.GetSpacing())


def segmentationName(reference: slicer.vtkMRMLScalarVolumeNode, model: str, subset: Sequence[str]) -> str:
    """``<reference> MAGMS <model> (<slot>+<slot>)``."""
    return f"{reference.GetName()} MAGMS {model} ({'+'.join(subset)})"


def importSegmentation(
    scene: slicer.vtkMRMLScene, path: Path, reference: slicer.vtkMRMLScalarVolumeNode, scheme: LabelScheme, name: str
) -> slicer.vtkMRMLSegmentationNode:
    """Add a NEW segmentation node read from ``path``: one segment per label of ``scheme``.

    Each segment gets the scheme's name, colour and terminology entry, and the node's geometry
    is referenced to ``reference``. Existing nodes are never modified.

    Raises:
        ConfigError: the file cannot be read as a segmentation.
    """
    ensureSegmentationConverters()
    node = slicer.vtkMRMLSegmentationNode()
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise ConfigError(f"{path}: cannot be read as a segmentation")
    segmentation = node.GetSegmentation()
    by_value = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        by_value[segment.GetLabelValue()] = segmentation.GetNthSegmentID(index)
    for label in scheme.labels:
        if label.value == 0:
            continue
        segment_id = by_value.get(label.value)
        if segment_id is None:  # nothing of this label was found: keep an empty segment to review
            segment_id = segmentation.AddEmptySegment(label.key, label.name)
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(label.name)
        segment.SetColor(*(c / 255.0 for c in label.color))
        setSegmentTerminology(segment, scheme.slicer_terminology(label.value))
    node.SetName(scene.GenerateUniqueName(name))
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    return node


def describeBundle(info: BundleInfo) -> str:
    """What a user should see before running: slots, labels, the validation table."""
    lines = [
        f"Slots: {', '.join(info.slots)}",
        f"Labels ({info.scheme.key}): {', '.join(label.name for label in info.scheme.labels if label.value != 0)}",
        f"Backbone: {info.network.backbone}; written by magms {info.versions.get('magms')} on {info.created or 'an unknown date'}",
    ]
    if info.validation:
        lines.append("Validation Dice per subset:")
        for subset, metrics in info.validation.items():
            text = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) if isinstance(metrics, dict) else f"{metrics:.2f}"
            lines.append(f"  {subset}: {text}")
    else:
        lines.append("No validation table in this bundle.")
    return "\n".join(lines)




def _fileName(text: str) -> str:
    """``text`` as a file name: path separators and characters Windows refuses replaced, at most 80 long."""
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", text).strip(" .")[:80] or "segmentation"


# --- compare subsets: the disagreement map over the reference volume -----------------------------

#: The value of :data:`~MAGMSCommonLib.volumes.ROLE_ATTRIBUTE` on the disagreement map's volume node.
DISAGREEMENT_ROLE = "disagreement"
#: Heat colour tables the Slicer application creates, first found wins (node IDs as
#: ``vtkMRMLColorLogic`` makes them: ``GetFileColorNodeID("Inferno.txt")``, ``GetPETColorNodeID(PETheat)``,
#: ``GetColorTableNodeID(Iron)``). A bare MRML scene (``slicer-core``) has none of them.
HEAT_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeIron")
#: The colour table made when none of :data:`HEAT_COLOR_NODE_IDS` is in the scene.
FALLBACK_HEAT_NAME = "MAGMS disagreement (Iron)"
DISAGREEMENT_OPACITY = 0.5


def defaultReportsFolder() -> Path:
    """Where compare-subsets reports are kept: ``reports`` beside the model cache (``~/.cache/magms/reports``)."""
    return models.defaultCacheFolder().parent / "reports"


def heatColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorNode:
    """A heat colour table of the scene: Slicer's Inferno, PET-Heat or Iron, else one made here (Iron type),
    added once and found again by its name."""
    for nodeID in HEAT_COLOR_NODE_IDS:
        node = scene.GetNodeByID(nodeID)
        if node is not None:
            return node
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
        if node.GetName() == FALLBACK_HEAT_NAME:
            return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToIron()
    node.SetName(FALLBACK_HEAT_NAME)
    node.SetAttribute(ROLE_ATTRIBUTE, DISAGREEMENT_ROLE)
    return scene.AddNode(node)


def disagreementWindow(compared: int) -> tuple[float, float]:
    """The heat map's window for counts 0..``compared``: the top at ``compared``, the bottom where a count
    of 1 shows at a third of the colour table (at its top when ``compared`` is 1), never above 0.5.

    A window from 0 put a 1 of 14 (four volumes) at 7 % of Inferno: nearly black, unseen over a dark MR.
    """
    top = float(max(compared, 1))
    return min(0.5, 1.5 - top / 2.0), top


def importDisagreement(scene: slicer.vtkMRMLScene, path: Path, name: str, compared: int) -> slicer.vtkMRMLScalarVolumeNode:
    """Add a NEW scalar volume node read from the disagreement map at ``path`` (uint8 counts 0..``compared``),
    displayed as a heat map: window :func:`disagreementWindow` (a count of 1 clearly visible), 0 transparent
    (thresholded out), no interpolation.

    Raises:
        ConfigError: the file cannot be read.
    """
    node = slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise ConfigError(f"{path}: cannot be read as the disagreement map")
    node.SetName(scene.GenerateUniqueName(name))
    node.SetAttribute(ROLE_ATTRIBUTE, DISAGREEMENT_ROLE)  # not an input: the slot guess leaves it alone
    scene.AddNode(node)
    display = slicer.vtkMRMLScalarVolumeDisplayNode()
    scene.AddNode(display)
    display.SetAndObserveColorNodeID(heatColorNode(scene).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(*disagreementWindow(compared))
    display.SetAutoThreshold(False)
    display.SetApplyThreshold(True)  # voxels outside the threshold are transparent in the slice views
    display.SetLowerThreshold(1)
    display.SetUpperThreshold(max(compared, 1))
    display.SetInterpolate(False)  # counts, not intensities
    node.SetAndObserveDisplayNodeID(display.GetID())
    return node


def showDisagreement(scene: slicer.vtkMRMLScene, volume: slicer.vtkMRMLScalarVolumeNode, opacity: float = DISAGREEMENT_OPACITY) -> int:
    """Show ``volume`` as the foreground of every slice view (``vtkMRMLSliceCompositeNode``), as
    ``slicer.util.setSliceViewerLayers(foreground=..., foregroundOpacity=...)`` does; backgrounds and
    label layers are kept. Returns how many views were set (none in a scene without views)."""
    count = scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(count):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        composite.SetForegroundVolumeID(volume.GetID())
        composite.SetForegroundOpacity(opacity)
    return count


def hideDisagreement(scene: slicer.vtkMRMLScene) -> int:
    """Take every disagreement map (a volume with the role :data:`DISAGREEMENT_ROLE`) out of the slice views'
    foreground, where a later run without a map would leave it over images it does not describe; the
    user's own foreground volumes stay. Returns how many views were changed. The map nodes are kept."""
    changed = 0
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if foreground is not None and foreground.GetAttribute(ROLE_ATTRIBUTE) == DISAGREEMENT_ROLE:
            composite.SetForegroundVolumeID(None)
            changed += 1
    return changed


# --- the child jobs ------------------------------------------------------------------------------


class _ChildJob:
    """One ``magms`` child process at a time, polled; a temporary folder removed in every case."""

    def __init__(self, scene: slicer.vtkMRMLScene, python: str | None, runner: ProcessRunner | None) -> None:
        self.scene = scene
        self.python = python or childPython()
        self.runner = runner or ProcessRunner()
        self.progress = Signal(float, str)
        self.failed = Signal(str)
        self.cancelled = Signal()
        self.folder: Path | None = None
        #: the child's ``note:`` lines (what it did beyond the plain run: registration, brain extraction)
        self.notes: list[str] = []
        #: what ran the network, from the child's ``ran`` line (:func:`magms.protocol.format_ran`); None before
        self.ran: EngineRan | None = None
        self.runner.progress.connect(self._onProgress)
        self.runner.finished.connect(self._onRunFinished)
        self.runner.output.connect(self._onOutput)

    @property
    def running(self) -> bool:
        return self.folder is not None

    def poll(self) -> None:
        """Call regularly (the widget's timer); signals are emitted from here."""
        if self.running:
            self.runner.poll()

    def wait(self, timeout: float | None = None) -> None:
        """Poll until the job has ended (scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the job did not end within {timeout} s")
            time.sleep(0.05)

    def _run(self, options, name: str) -> None:
        """Write the options and start the child; raises what that raises (OSError: no such program)."""
        command = configCommand(self.python, options, self.folder / f"{name}.json")
        self.runner.start(command, env=childEnvironment())

    def _onOutput(self, line: str) -> None:
        if line.startswith("note: "):
            self.notes.append(line[len("note: "):])
        self.ran = parse_ran(line) or self.ran

    def _onProgress(self, done: int, total: int) -> None:
        raise NotImplementedError

    def _onRunFinished(self, state: RunState, message: str) -> None:
        raise NotImplementedError

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


class SegmentationJob(_ChildJob):
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
        self.info = read_bundle_info(self.bundle)
        pairs = checkMapping(self.scene, mapping, self.info.slots)
        mapped = tuple(slot for slot, _ in pairs)
        if subsets is None:
            queue = [_Run((mapped,))]
        elif subsets == "all":
            # one input has no smaller subset to compare with: then it is one plain run
            queue = [_Run(tuple(subsets_of(mapped)), compare=True)] if len(mapped) > 1 else [_Run((mapped,))]
        else:
            chosen = [tuple(s for s in mapped if s in subset) for subset in subsets]
            missing = [("+".join(s)) for s, q in zip(subsets, chosen) if set(s) - set(q)]
            if missing or not all(chosen):
                raise ConfigError(f"subset(s) {', '.join(missing) or 'empty'} use slots without a volume (mapped: {', '.join(mapped)})")
            queue = [_Run((subset,)) for subset in chosen]
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
        stem = f"{_fileName(reference.GetName())} {_fileName(self.modelName)} {time.strftime('%Y%m%d-%H%M%S')}"
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


# --- Export to DICOM -----------------------------------------------------------------------------

#: SOP Instance UID -> the file Slicer's DICOM database holds for it ("" or None: not there). In Slicer:
#: ``slicer.dicomDatabase.fileForInstance`` (ctkDICOMDatabase); tests look up files they wrote.
InstanceFiles = Callable[[str], "str | None"]
#: SOP Instance UID -> its Image Position (Patient) as the database stores it (``"x\\y\\z"`` in mm, LPS;
#: "" or None: not known). In Slicer: ``slicer.dicomDatabase.instanceValue(uid, "0020,0032")``.
InstancePositions = Callable[[str], "str | None"]
DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
#: What can be exported, by key: (name for people, file suffix, ``magms export`` option).
EXPORT_KINDS = {"rtstruct": ("RT Structure Set", ".rtstruct.dcm", "rtstruct"), "seg": ("DICOM Segmentation", ".seg.dcm", "dicom_seg")}
#: The format choice: key -> the kinds it writes.
EXPORT_FORMATS = {"both": ("rtstruct", "seg"), "rtstruct": ("rtstruct",), "seg": ("seg",)}
SLICERRT_ALTERNATIVE = (
    "With the SlicerRT extension, Slicer's own DICOM export (Data module: right-click the segmentation, Export to "
    "DICOM..., export type RT structure set) can write one for images that did not come from DICOM."
)
SLICERRT_IRREGULAR = (
    "With the SlicerRT extension, try Slicer's own DICOM export instead (Data module: right-click the segmentation, "
    "Export to DICOM..., export type RT structure set), which writes contours in patient coordinates."
)
#: Slicer's DICOMScalarVolumePlugin (AcquisitionModeling.gridTransformFromCorners) puts a series with irregular
#: slice geometry under a grid transform named ``<volume> acquisition transform`` (made unique with a number).
ACQUISITION_TRANSFORM_NAME = "acquisition transform"
#: How far (in voxels) a file's slice position may lie off the volume's grid: magms.dicom's tolerance.
GRID_TOLERANCE = 1e-2


def noDicomDatabase(uid: str) -> None:
    """The lookup without a DICOM database: no instance is found."""
    return None


def _transformChain(node: slicer.vtkMRMLTransformableNode) -> list:
    """``node``'s parent transform, its parent, and so on."""
    chain, seen = [], set()
    transform = node.GetParentTransformNode()
    while transform is not None and transform.GetID() not in seen:
        chain.append(transform)
        seen.add(transform.GetID())
        transform = transform.GetParentTransformNode()
    return chain


def acquisitionTransform(volume: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkMRMLTransformNode | None:
    """The grid transform Slicer's DICOM import put ``volume`` under (directly or higher up) because its series
    has irregular slice geometry (a tilted gantry, uneven slice spacing); None when there is none.

    Slicer does so by default (DICOM setting *Acquisition geometry regularization*): the volume keeps a
    regular grid, and the transform moves each slice to where its file says. That grid is then not the
    files' grid, slice by slice, so what is drawn on it cannot reference the files as it is.
    """
    for transform in _transformChain(volume):
        if transform.IsA("vtkMRMLGridTransformNode") and ACQUISITION_TRANSFORM_NAME in (transform.GetName() or ""):
            return transform
    return None


def _under(node) -> str:
    transform = node.GetParentTransformNode()
    return f"under transform '{transform.GetName()}'" if transform is not None else "under no transform"


def exportReference(segmentationNode: slicer.vtkMRMLSegmentationNode) -> slicer.vtkMRMLScalarVolumeNode:
    """The volume whose grid and DICOM series the export uses: the segmentation's reference geometry volume.

    The segments are merged on that volume's own (local) grid, which is the DICOM files' grid. A transform
    that the segmentation and the volume share moves both alike and changes nothing there, so it is allowed.

    Raises:
        ConfigError: no reference volume; a reference under Slicer's acquisition transform (irregular slice
            geometry); the segmentation and its volume under different transforms.
    """
    name = segmentationNode.GetName()
    reference = segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
    if reference is None or not reference.IsA("vtkMRMLScalarVolumeNode"):
        raise ConfigError(f"segmentation '{name}' has no reference volume: DICOM RT and SEG objects reference the images the "
                          "segments were drawn on (choose its source volume in the Segment Editor)")
    acquisition = acquisitionTransform(reference)
    if acquisition is not None:
        raise ConfigError(
            f"'{reference.GetName()}' has irregular slice geometry (a tilted gantry or uneven slice spacing): Slicer's DICOM "
            f"import put it under '{acquisition.GetName()}', which moves each slice to where its file says, so its voxel grid "
            "is not the DICOM files' grid and the segments cannot reference the files slice by slice. It cannot be exported as "
            "is; removing or hardening that transform does not change this. " + SLICERRT_IRREGULAR)
    transform, referenceTransform = segmentationNode.GetParentTransformNode(), reference.GetParentTransformNode()
    if (transform.GetID() if transform else None) != (referenceTransform.GetID() if referenceTransform else None):
        raise ConfigError(
            f"'{name}' is {_under(segmentationNode)} but its reference volume '{reference.GetName()}' is {_under(reference)}: "
            "the segments do not lie on the volume's voxel grid, and the export does not resample them. Export a segmentation "
            "that is under the same transform as its reference volume (or neither under one).")
    return reference


def exportProblem(segmentationNode: slicer.vtkMRMLSegmentationNode | None) -> str:
    """Why ``segmentationNode`` cannot be exported, as far as the scene tells ("" when it can)."""
    if segmentationNode is None:
        return "Choose a segmentation to export."
    try:
        reference = exportReference(segmentationNode)
    except ConfigError as err:
        return str(err)
    uids = (reference.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split()
    if not uids:
        return (f"'{reference.GetName()}', the reference volume of '{segmentationNode.GetName()}', was not loaded from Slicer's "
                f"DICOM database (it has no {DICOM_UIDS_ATTRIBUTE}): there is no DICOM series for an RT Structure Set or SEG to "
                "reference. Load the images with the DICOM module and segment them there. " + SLICERRT_ALTERNATIVE)
    slices = reference.GetImageData().GetDimensions()[2] if reference.GetImageData() is not None else 0
    if len(uids) != slices:
        return (f"'{reference.GetName()}' has {slices} slices but {len(uids)} DICOM instance(s): it was loaded from a multi-frame "
                "(enhanced) DICOM file, one file for many slices. The export references one file per slice and cannot export it. "
                + SLICERRT_IRREGULAR)
    return ""


def slicePositionProblem(volume: slicer.vtkMRMLScalarVolumeNode, positions: InstancePositions) -> str:
    """Whether every DICOM instance of ``volume`` lies on a slice of its voxel grid ("" when it does, or when
    ``positions`` does not know): the check ``magms export`` makes on the files, made before it starts.

    The grid differs from the files' positions when Slicer was told not to correct a series with irregular
    slice geometry or to harden the correction, or when the volume's origin or spacing was changed.
    """
    uids = (volume.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split()
    rasToIJK, ijkToRAS = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(rasToIJK)
    volume.GetIJKToRASMatrix(ijkToRAS)
    for uid in uids:
        text = positions(uid) if uid != "Unknown" else None
        try:
            x, y, z = (float(v) for v in (text or "").split("\\"))
        except ValueError:  # not known, or not three numbers: magms export reads the file itself
            return ""
        ras = (-x, -y, z, 1.0)  # DICOM patient coordinates are LPS
        i, j, k = rasToIJK.MultiplyPoint(ras)[:3]
        nearest = round(k)
        if max(abs(i), abs(j), abs(k - nearest)) > GRID_TOLERANCE:
            grid = ijkToRAS.MultiplyPoint((0.0, 0.0, float(nearest), 1.0))[:3]
            off = sum((a - b) ** 2 for a, b in zip(grid, ras[:3])) ** 0.5
            return (f"'{volume.GetName()}': DICOM instance {uid} has its slice at ({x:g}, {y:g}, {z:g}) mm (LPS), {off:.2f} mm from "
                    "the nearest slice of the volume's voxel grid: the volume's geometry is not its files' (irregular slice "
                    "geometry that Slicer's DICOM import left uncorrected or hardened, or an origin, spacing or hardened "
                    "transform changed since loading), so it cannot be exported as is. If you changed its geometry, load the "
                    "series again from the DICOM database. " + SLICERRT_IRREGULAR)
    return ""


def dicomSeriesFiles(volume: slicer.vtkMRMLScalarVolumeNode, lookup: InstanceFiles) -> list[Path]:
    """The files of the DICOM series ``volume`` was loaded from: its ``DICOM.instanceUIDs`` (one per
    slice, set by Slicer's DICOMScalarVolumePlugin), each found with ``lookup``.

    Raises:
        ConfigError: no UIDs on the volume, or instances the database does not hold (counted, one named).
    """
    uids = (volume.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split()
    if not uids:
        raise ConfigError(f"'{volume.GetName()}' was not loaded from Slicer's DICOM database (no {DICOM_UIDS_ATTRIBUTE}). "
                          + SLICERRT_ALTERNATIVE)
    files, missing = [], []
    for uid in uids:
        found = lookup(uid) if uid != "Unknown" else None  # the plugin writes "Unknown" for a file without a UID
        if found and Path(found).is_file():
            files.append(Path(found))
        else:
            missing.append(uid)
    if missing:
        raise ConfigError(f"'{volume.GetName()}': {len(missing)} of its {len(uids)} DICOM instances are not in Slicer's DICOM "
                          f"database, or their files are gone (first: {missing[0]}); import the series again in the DICOM module")
    return list(dict.fromkeys(files))  # a multi-frame file holds several slices


def segmentLabelValues(segmentationNode: slicer.vtkMRMLSegmentationNode, scheme: LabelScheme,
                       model: str = "the model") -> list[tuple[str, int]]:
    """(segment ID, label value) of every segment: its name is a label's name or key in ``scheme``
    (any case), as :func:`importSegmentation` names them.

    Raises:
        ConfigError: segments whose names are not labels of ``scheme`` (each named), or no segment.
    """
    by_name = {}
    for label in scheme.labels:
        if label.value != 0:
            by_name[label.name.casefold()] = by_name[label.key.casefold()] = label.value
    segmentation = segmentationNode.GetSegmentation()
    values, unknown = [], []
    for index in range(segmentation.GetNumberOfSegments()):
        name = segmentation.GetNthSegment(index).GetName() or ""
        value = by_name.get(name.strip().casefold())
        if value is None:
            unknown.append(name)
        else:
            values.append((segmentation.GetNthSegmentID(index), value))
    if unknown:
        names = ", ".join(label.name for label in scheme.labels if label.value != 0)
        raise ConfigError(f"segment(s) {', '.join(repr(n) for n in unknown)} of '{segmentationNode.GetName()}' are not labels of "
                          f"{model} ({names}): rename or remove them before exporting")
    if not values:
        raise ConfigError(f"'{segmentationNode.GetName()}' has no segments to export")
    return values


def writeLabelsForExport(segmentationNode: slicer.vtkMRMLSegmentationNode, reference: slicer.vtkMRMLScalarVolumeNode,
                         values: Sequence[tuple[str, int]], path: Path) -> None:
    """Write the segments' CURRENT content as one label map on ``reference``'s grid, in the model's values.

    The segments are merged by the segmentation node itself (``GenerateMergedLabelmapForAllSegments``
    with the reference volume's geometry and explicit label values; where segments overlap, the later
    one wins), and written by a volume storage node: nothing is added to the scene.

    A segmentation whose segments are not binary label maps (closed surfaces: an imported RTSTRUCT, a
    model) is converted first, as Slicer's own labelmap export does (``CreateRepresentation``,
    ``vtkSlicerSegmentationsModuleLogic::ExportSegmentsToLabelmapNode``), on a copy: the node keeps
    the representations it had.

    Raises:
        ConfigError: the conversion, the merge or the write failed.
    """
    segmentationNode = withBinaryLabelmaps(segmentationNode)
    geometry = slicer.vtkOrientedImageData()
    geometry.SetExtent(reference.GetImageData().GetExtent())
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    geometry.SetImageToWorldMatrix(matrix)
    ids = vtk.vtkStringArray()
    labels = vtk.vtkIntArray()
    for segmentID, value in values:
        ids.InsertNextValue(segmentID)
        labels.InsertNextValue(value)
    merged = slicer.vtkOrientedImageData()
    if not segmentationNode.GenerateMergedLabelmapForAllSegments(merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
                                                                 geometry, ids, labels):
        raise ConfigError(f"'{segmentationNode.GetName()}': its segments could not be merged into one label map")
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    image = vtk.vtkImageData()
    image.DeepCopy(merged)
    # a volume node keeps the geometry in its IJK-to-RAS matrix, not in its image data
    image.SetOrigin(0.0, 0.0, 0.0)
    image.SetSpacing(1.0, 1.0, 1.0)
    image.SetDirectionMatrix(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    labelmap.SetAndObserveImageData(image)
    merged.GetImageToWorldMatrix(matrix)
    labelmap.SetIJKToRASMatrix(matrix)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # a temporary file: speed over size
    if not storage.WriteData(labelmap) or not path.is_file():
        raise ConfigError(f"'{segmentationNode.GetName()}': its label map could not be written to {path}")


def exportPaths(folder: Path, name: str, kinds: Sequence[str]) -> dict[str, Path]:
    """``folder/<name>.rtstruct.dcm`` and/or ``.seg.dcm``, numbered (``<name> 2``...) so that no file is replaced."""
    stem = _fileName(name)
    for n in range(1, 10000):
        base = stem if n == 1 else f"{stem} {n}"
        paths = {kind: folder / f"{base}{EXPORT_KINDS[kind][1]}" for kind in kinds}
        if not any(p.exists() for p in paths.values()):
            return paths
    raise ConfigError(f"{folder}: no free file name for {stem}")


class ExportJob(_ChildJob):
    """Export a segmentation to DICOM RT Structure Set and/or SEG with ``magms export`` in a child process.

    The segments' current content is written as a label map on the reference volume's grid (in the
    model's label values), the reference volume's DICOM files are found through ``lookup``, and
    ``magms export`` writes the objects referencing that series into the job's temporary folder. Only
    when it has succeeded are they copied into the chosen folder, each under a name no file has
    (never replacing one, also one made meanwhile): cancel or failure leaves nothing there, not even
    a half-written temporary file, and the job never deletes a file it did not make. The temporary
    folder is removed in every case. The scene is only read.

    Signals:
        progress(fraction: float, text: str)
        finished(paths: list): the files written.
        failed(message: str)
        cancelled()
    """

    def __init__(self, scene: slicer.vtkMRMLScene, python: str | None = None, runner: ProcessRunner | None = None,
                 unmet: Callable[[Sequence[str]], list] = dependencies.unmetDicom) -> None:
        super().__init__(scene, python, runner)
        self.finished = Signal(list)
        self.unmet = unmet
        self.paths: dict[str, Path] = {}
        self._staged: dict[str, Path] = {}
        self._name = ""

    def start(self, segmentationNode: slicer.vtkMRMLSegmentationNode, bundle: str | os.PathLike[str], folder: str | os.PathLike[str],
              formatKey: str = "both", lookup: InstanceFiles = noDicomDatabase, positions: InstancePositions = noDicomDatabase) -> None:
        """Check everything, write the label map and start ``magms export``.

        Args:
            segmentationNode: what to export (its current segments).
            bundle: the model bundle whose labels the segments are.
            folder: an existing folder for the DICOM files.
            formatKey: a key of :data:`EXPORT_FORMATS`.
            lookup: SOP Instance UID -> file, from Slicer's DICOM database.
            positions: SOP Instance UID -> Image Position (Patient), from Slicer's DICOM database
                (:func:`slicePositionProblem`); without it ``magms export`` checks the positions.
        Raises:
            ConfigError, BundleError: anything that stops the export (nothing is started or written):
                the export's Python packages missing, no DICOM reference volume, a volume whose grid
                is not its files', segments that are not the model's labels, no output folder.
            OSError: the child process cannot be started (nothing is left behind).
            RuntimeError: an export is running already.
        """
        if self.running:
            raise RuntimeError("an export is running already")
        if formatKey not in EXPORT_FORMATS:
            raise ValueError(f"formatKey: expected one of {', '.join(EXPORT_FORMATS)}, got {formatKey!r}")
        kinds = EXPORT_FORMATS[formatKey]
        missing = self.unmet(kinds)
        if missing:
            raise ConfigError(dependencies.describeUnmetDicom(missing, ask=False))
        problem = exportProblem(segmentationNode)
        if problem:
            raise ConfigError(problem)
        reference = exportReference(segmentationNode)
        files = dicomSeriesFiles(reference, lookup)
        problem = slicePositionProblem(reference, positions)
        if problem:
            raise ConfigError(problem)
        bundle = Path(bundle)
        values = segmentLabelValues(segmentationNode, read_bundle_info(bundle).scheme, bundle.name)
        out = Path(folder)
        if not str(folder) or not out.is_dir():
            raise ConfigError(f"the output folder {out} does not exist: choose a folder for the DICOM files")
        self._name, self.notes = segmentationNode.GetName(), []
        self.paths = exportPaths(out, self._name, kinds)
        self.folder = Path(tempfile.mkdtemp(prefix="magms-export-"))
        try:
            labels = self.folder / "labels.nrrd"
            writeLabelsForExport(segmentationNode, reference, values, labels)
            # the child writes here, never into the user's folder: a killed child leaves its temporaries in this folder only
            self._staged = {kind: self.folder / path.name for kind, path in self.paths.items()}
            targets = {EXPORT_KINDS[kind][2]: path for kind, path in self._staged.items()}
            options = ExportOptions(labels=labels, series=tuple(files), model=bundle, **targets)
            self.progress.emit(0.0, f"exporting '{self._name}' to DICOM")
            self._run(options, "export")
        except BaseException:  # also a child that cannot start: the label map (patient data) goes too
            self._cleanup()
            self.paths, self._staged = {}, {}
            raise

    def cancel(self) -> None:
        """Stop the child process tree; nothing reaches the chosen folder."""
        if self.running:
            self.runner.cancel()

    def _onProgress(self, done: int, total: int) -> None:
        self.progress.emit(done / max(total, 1), "exporting to DICOM")

    def _deliver(self) -> list[Path]:
        """Copy the written objects into the chosen folder, each into a file made here (never replacing one).

        Raises:
            OSError: a file could not be written; the files made here are removed again.
        """
        if any(path.exists() for path in self.paths.values()):  # made by someone else since the start
            self.paths = exportPaths(next(iter(self.paths.values())).parent, self._name, tuple(self.paths))
        made: list[Path] = []
        try:
            for kind, target in self.paths.items():
                with open(self._staged[kind], "rb") as source, open(target, "xb") as copy:
                    made.append(target)  # created by this job: it may remove it again
                    shutil.copyfileobj(source, copy)
        except OSError:
            for path in made:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            raise
        return made

    def _onRunFinished(self, state: RunState, message: str) -> None:
        if state is RunState.SUCCEEDED:
            try:
                written = self._deliver()
            except OSError as err:
                self._cleanup()
                self.failed.emit(f"the DICOM files could not be written into {next(iter(self.paths.values())).parent}: {err}")
                return
            self._cleanup()
            self.progress.emit(1.0, "done")
            self.finished.emit(written)
            return
        self._cleanup()  # the child's files, finished or not, were in the temporary folder only
        if state is RunState.CANCELLED:
            self.cancelled.emit()
        else:
            self.failed.emit(message)
