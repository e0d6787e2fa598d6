"""MAGMS Segmenter logic: MRML only, no Qt, importable without the Slicer application.

It is tested against the real MRML of the ``slicer-core`` package. The scene is passed in, never
taken from ``slicer.mrmlScene``. The network runs in a separate ``magms segment`` process
(:class:`~MAGMSCommonLib.runner.ProcessRunner`). The scene is touched only when that process
has succeeded, and then only by adding NEW segmentation nodes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import slicer
from MAGMSCommonLib.child import childEnvironment, childPython, configCommand
from MAGMSCommonLib.runner import ProcessRunner, RunState
from MAGMSCommonLib.signal import Signal
from MAGMSCommonLib.volumes import checkMapping, ensureSegmentationConverters, writeVolumes

from magms.bundle import BundleInfo, read_bundle_info
from magms.commands import SegmentOptions
from magms.errors import ConfigError
from magms.labels import LabelScheme
from magms.modalities import subsets_of

__all__ = [
    "readSlotMapping",
    "writeSlotMapping",
    "segmentOptions",
    "importSegmentation",
    "segmentationName",
    "describeBundle",
    "SegmentationJob",
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


def segmentOptions(bundle: Path, inputs: Mapping[str, Path], output: Path, device: str = "auto") -> SegmentOptions:
    """The ``magms segment`` options of one subset, with progress lines for the runner."""
    return SegmentOptions(model=bundle, input=tuple(f"{slot}={path}" for slot, path in inputs.items()), output=output,
                          device=device, progress="lines", overwrite=True)


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
        segment.SetTerminology(scheme.slicer_terminology(label.value))
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


class SegmentationJob:
    """Segment the mapped volumes, once or once per subset ("compare subsets"), in a child process.

    The mapped volumes are written to a temporary folder, ``magms segment`` runs per subset, and
    only when every run has succeeded are the results added as new segmentation nodes. Cancel or
    failure leaves the scene as it was. The temporary folder is removed in every case.

    Signals:
        progress(fraction: float, text: str)
        finished(nodes: list): the new segmentation nodes.
        failed(message: str)
        cancelled()
    """

    def __init__(self, scene: slicer.vtkMRMLScene, python: str | None = None, runner: ProcessRunner | None = None) -> None:
        self.scene = scene
        self.python = python or childPython()
        self.runner = runner or ProcessRunner()
        self.progress = Signal(float, str)
        self.finished = Signal(list)
        self.failed = Signal(str)
        self.cancelled = Signal()
        self.folder: Path | None = None
        self._queue: list[tuple[str, ...]] = []
        self._done: list[tuple[tuple[str, ...], Path]] = []
        self._total = 0
        self.runner.progress.connect(self._onProgress)
        self.runner.finished.connect(self._onRunFinished)

    @property
    def running(self) -> bool:
        return self.folder is not None

    def start(
        self,
        mapping: Mapping[str, str | None],
        bundle: str | os.PathLike[str],
        device: str = "auto",
        subsets: Sequence[Sequence[str]] | str | None = None,
        modelName: str | None = None,
    ) -> None:
        """Check, write the inputs and start the first run.

        Args:
            mapping: slot -> volume node ID (None or "" for none).
            bundle: model bundle folder.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            subsets: None for one run with every mapped volume; ``"all"`` for every non-empty
                subset of the mapped slots; or the subsets to run.
            modelName: for the node names (default: the bundle folder's name).
        Raises:
            BundleError, ConfigError: a bad bundle or mapping (nothing is started or written).
            RuntimeError: a job is running already.
        """
        if self.running:
            raise RuntimeError("a segmentation is running already")
        self.bundle = Path(bundle)
        self.info = read_bundle_info(self.bundle)
        pairs = checkMapping(self.scene, mapping, self.info.slots)
        mapped = tuple(slot for slot, _ in pairs)
        if subsets is None:
            queue = [mapped]
        elif subsets == "all":
            queue = subsets_of(mapped)
        else:
            queue = [tuple(s for s in mapped if s in subset) for subset in subsets]
            missing = [("+".join(s)) for s, q in zip(subsets, queue) if set(s) - set(q)]
            if missing or not all(queue):
                raise ConfigError(f"subset(s) {', '.join(missing) or 'empty'} use slots without a volume (mapped: {', '.join(mapped)})")
        self.nodes = dict(pairs)
        self.device = device
        self.modelName = modelName or self.bundle.name
        self.folder = Path(tempfile.mkdtemp(prefix="magms-segment-"))
        try:
            self.inputs = writeVolumes(pairs, self.folder)
        except BaseException:
            self._cleanup()
            raise
        self._queue, self._done, self._total = list(queue), [], len(queue)
        self._startNext()

    def _startNext(self) -> None:
        subset = self._queue[0]
        name = "+".join(subset)
        options = segmentOptions(self.bundle, {s: self.inputs[s] for s in subset}, self.folder / f"{name}.seg.nrrd", self.device)
        command = configCommand(self.python, options, self.folder / f"{name}.json")
        self.progress.emit(len(self._done) / self._total, f"segmenting from {' + '.join(subset)}")
        self.runner.start(command, env=childEnvironment())

    def poll(self) -> None:
        """Call regularly (the widget's timer); signals are emitted from here."""
        if self.running:
            self.runner.poll()

    def wait(self, timeout: float | None = None) -> None:
        """Poll until the job has ended (scripts and tests)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the segmentation did not end within {timeout} s")
            time.sleep(0.05)

    def cancel(self) -> None:
        """Stop the child process tree; the scene stays as it was."""
        if self.running:
            self._queue = []
            self.runner.cancel()

    def _onProgress(self, done: int, total: int) -> None:
        subset = self._queue[0] if self._queue else ()
        fraction = (len(self._done) + done / max(total, 1)) / self._total
        self.progress.emit(fraction, f"segmenting from {' + '.join(subset)}: window {done}/{total}")

    def _onRunFinished(self, state: RunState, message: str) -> None:
        if state is RunState.CANCELLED:
            self._cleanup()
            self.cancelled.emit()
            return
        if state is RunState.FAILED:
            self._cleanup()
            self.failed.emit(message)
            return
        subset = self._queue.pop(0)
        self._done.append((subset, self.folder / f"{'+'.join(subset)}.seg.nrrd"))
        if self._queue:
            self._startNext()
            return
        try:
            created = []
            for subset, path in self._done:
                reference = self.nodes[subset[0]]  # magms segment writes on the first present slot's grid
                name = segmentationName(reference, self.modelName, subset)
                created.append(importSegmentation(self.scene, path, reference, self.info.scheme, name))
        except Exception as err:  # noqa: BLE001 - reported to the user, the partial import undone
            for node in created:
                self.scene.RemoveNode(node)
            self._cleanup()
            self.failed.emit(str(err))
            return
        self._cleanup()
        self.progress.emit(1.0, "done")
        self.finished.emit(created)

    def _cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
