"""MAGMS Segmenter logic: MRML only, no Qt, importable without the Slicer application.

It is tested against the real MRML of the ``slicer-core`` package. The scene is passed in, never
taken from ``slicer.mrmlScene``. The network runs in a separate ``magms segment`` process
(:class:`~MAGMSSegmenterLib.runner.ProcessRunner`). The scene is touched only when that process
has succeeded, and then only by adding NEW segmentation nodes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import slicer

import magms
from magms.bundle import BundleInfo, read_bundle_info
from magms.errors import ConfigError
from magms.modalities import guess_slot, subsets_of
from magms.labels import LabelScheme


from .runner import ProcessRunner, RunState
from .signal import Signal

__all__ = [
    "VolumeGuess",
    "scalarVolumes",
    "seriesDescriptionAttribute",
    "guessMapping",
    "checkMapping",
    "overlapFraction",
    "readSlotMapping",
    "writeSlotMapping",
    "writeVolumes",
    "segmentCommand",
    "importSegmentation",
    "ensureSegmentationConverters",
    "segmentationName",
    "describeBundle",
    "SegmentationJob",
    "childEnvironment",
]

logger = logging.getLogger(__name__)

# The reference in ``magms segment`` is the first present slot in the model's order: keep that order.
SLOT_REFERENCE_ROLE = "MAGMS.slot."
SERIES_DESCRIPTION_ATTRIBUTE = "DICOM.SeriesDescription"
MIN_OVERLAP = 0.5  # as magms.inference.prepare_inputs


@dataclasses.dataclass(frozen=True)
class VolumeGuess:
    """What the guess made of one volume: the slot (None: left for the user) and why."""

    nodeID: str
    name: str
    seriesDescription: str
    slot: str | None
    reason: str


def scalarVolumes(scene: slicer.vtkMRMLScene) -> list[slicer.vtkMRMLScalarVolumeNode]:
    """The scene's scalar volumes with image data (label maps excluded), in scene order."""
    nodes = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.IsA("vtkMRMLLabelMapVolumeNode") or node.GetImageData() is None:
            continue
        nodes.append(node)
    return nodes


def seriesDescriptionAttribute(node: slicer.vtkMRMLScalarVolumeNode) -> str:
    """The DICOM series description kept on the node, if any (the widget adds the DICOM database's)."""
    return node.GetAttribute(SERIES_DESCRIPTION_ATTRIBUTE) or ""


def guessMapping(
    scene: slicer.vtkMRMLScene,
    slots: Sequence[str],
    describe: Callable[[slicer.vtkMRMLScalarVolumeNode], str] = seriesDescriptionAttribute,
    nodes: Sequence[slicer.vtkMRMLScalarVolumeNode] | None = None,
) -> tuple[dict[str, str | None], list[VolumeGuess]]:
    """Guess each volume's slot from its DICOM series description, else from its name.

    Two volumes that look like the same slot are both left unassigned, so the user chooses.

    Args:
        nodes: the volumes to consider (default: every scalar volume of the scene).
    Returns:
        slot -> node ID (None: no volume), and one :class:`VolumeGuess` per volume.
    """
    guesses = []
    for node in scalarVolumes(scene) if nodes is None else nodes:
        description = describe(node) or ""
        guess = guess_slot(description, slots) if description else None
        if guess is None or guess.slot is None:
            guess = guess_slot(node.GetName(), slots)
        guesses.append(VolumeGuess(node.GetID(), node.GetName(), description, guess.slot, guess.reason))
    claimed: dict[str, list[VolumeGuess]] = {}
    for g in guesses:
        if g.slot is not None:
            claimed.setdefault(g.slot, []).append(g)
    for slot, claims in claimed.items():
        if len(claims) > 1:
            names = " and ".join(repr(c.name) for c in claims)
            for c in claims:
                guesses[guesses.index(c)] = dataclasses.replace(c, slot=None, reason=f"{names} both look like {slot}: choose one")
    mapping: dict[str, str | None] = {slot: None for slot in slots}
    for g in guesses:
        if g.slot is not None:
            mapping[g.slot] = g.nodeID
    return mapping, guesses


def _bounds(node: slicer.vtkMRMLScalarVolumeNode) -> tuple[list[float], list[float]]:
    bounds = [0.0] * 6
    node.GetRASBounds(bounds)
    return bounds[0::2], bounds[1::2]


def overlapFraction(reference: slicer.vtkMRMLScalarVolumeNode, other: slicer.vtkMRMLScalarVolumeNode) -> float:
    """Fraction of ``other``'s RAS box inside ``reference``'s."""
    (a_lo, a_hi), (b_lo, b_hi) = _bounds(reference), _bounds(other)
    inter, whole = 1.0, 1.0
    for k in range(3):
        inter *= max(0.0, min(a_hi[k], b_hi[k]) - max(a_lo[k], b_lo[k]))
        whole *= max(b_hi[k] - b_lo[k], 1e-12)
    return inter / whole


def checkMapping(scene: slicer.vtkMRMLScene, mapping: Mapping[str, str | None], modelSlots: Sequence[str]) -> list[tuple[str, slicer.vtkMRMLScalarVolumeNode]]:
    """Check a slot -> node ID mapping before anything runs.

    Returns:
        (slot, node) pairs in the model's slot order (the first is the reference).
    Raises:
        ConfigError: every problem at once, each naming the volume: no slot mapped, a slot the
            model lacks, a volume used for two slots, a missing or empty volume, a label map, a
            volume under a transform, volumes that do not overlap in space.
    """
    problems: list[str] = []
    used: dict[str, list[str]] = {}
    pairs: list[tuple[str, slicer.vtkMRMLScalarVolumeNode]] = []
    for slot, node_id in mapping.items():
        if not node_id:
            continue
        node = scene.GetNodeByID(node_id)
        if node is None:
            problems.append(f"slot {slot}: volume {node_id} is no longer in the scene")
            continue
        name = node.GetName()
        used.setdefault(node_id, []).append(slot)
        if slot not in modelSlots:
            problems.append(f"volume '{name}' is mapped to slot {slot}, which the model does not have (its slots: {', '.join(modelSlots)})")
            continue
        if node.IsA("vtkMRMLLabelMapVolumeNode"):
            problems.append(f"volume '{name}' is a label map, not an image")
        elif node.GetImageData() is None:
            problems.append(f"volume '{name}' has no image data")
        elif node.GetParentTransformNode() is not None:
            problems.append(f"volume '{name}' is under transform '{node.GetParentTransformNode().GetName()}': harden or remove it first")
        else:
            pairs.append((slot, node))
    for node_id, slots in used.items():
        if len(slots) > 1:
            problems.append(f"volume '{scene.GetNodeByID(node_id).GetName()}' is mapped to {len(slots)} slots ({', '.join(slots)}): use each volume once")
    if not used:
        problems.append(f"no volume is mapped: choose a volume for at least one of the model's slots ({', '.join(modelSlots)})")
    pairs.sort(key=lambda p: list(modelSlots).index(p[0]))
    pairs = [p for i, p in enumerate(pairs) if p[1] not in [q[1] for q in pairs[:i]]]
    if pairs:
        reference = pairs[0][1]
        for slot, node in pairs[1:]:
            fraction = overlapFraction(reference, node)
            if fraction < MIN_OVERLAP:
                problems.append(
                    f"volume '{node.GetName()}' ({slot}) covers only {fraction:.0%} of the space of '{reference.GetName()}' "
                    f"({pairs[0][0]}): are they the same patient and session?"
                )
    if problems:
        raise ConfigError("; ".join(problems))
    return pairs


def readSlotMapping(parameterNode: slicer.vtkMRMLNode, slots: Sequence[str]) -> dict[str, str | None]:
    """The slot -> volume mapping kept as node references on the parameter node (saved with the scene)."""
    return {slot: parameterNode.GetNodeReferenceID(SLOT_REFERENCE_ROLE + slot) for slot in slots}


def writeSlotMapping(parameterNode: slicer.vtkMRMLNode, mapping: Mapping[str, str | None]) -> None:
    for slot, node_id in mapping.items():
        parameterNode.SetNodeReferenceID(SLOT_REFERENCE_ROLE + slot, node_id or None)


def writeVolumes(pairs: Sequence[tuple[str, slicer.vtkMRMLScalarVolumeNode]], folder: Path) -> dict[str, Path]:
    """Write each mapped volume to ``folder/<slot>.nrrd`` with storage nodes kept out of the scene."""
    paths = {}
    for slot, node in pairs:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        path = folder / f"{slot}.nrrd"
        storage.SetFileName(str(path))
        storage.SetUseCompression(False)  # a temporary file: speed over size
        if not storage.WriteData(node) or not path.is_file():
            raise ConfigError(f"volume '{node.GetName()}' could not be written to {path}")
        paths[slot] = path
    return paths


def segmentCommand(python: str, bundle: Path, inputs: Mapping[str, Path], output: Path, device: str = "auto") -> list[str]:
    """The ``magms segment`` command line for one subset, with progress lines for the runner."""
    command = [python, "-m", "magms", "segment", "--model", str(bundle)]
    for slot, path in inputs.items():
        command += ["--input", f"{slot}={path}"]
    return command + ["--output", str(output), "--device", device, "--progress", "lines", "--overwrite"]


def segmentationName(reference: slicer.vtkMRMLScalarVolumeNode, model: str, subset: Sequence[str]) -> str:
    """``<reference> MAGMS <model> (<slot>+<slot>)``."""
    return f"{reference.GetName()} MAGMS {model} ({'+'.join(subset)})"


def ensureSegmentationConverters() -> None:
    """Register the segmentation conversion rules if nobody has (the Slicer application does at
    start-up; plain MRML from ``slicer-core`` does not, and then cannot make empty segments)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    for rule in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        factory.RegisterConverterRule(getattr(slicer, rule)())


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
        f"Labels ({info.labels.key}): {', '.join(label.name for label in info.labels.labels if label.value != 0)}",
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


def childEnvironment() -> dict[str, str]:
    # Inside Slicer, ``magms`` ships next to the module, which a plain child process does not know.
    env = dict(os.environ)
    package_parent = str(Path(magms.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    return env


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
        self.python = python or sys.executable
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
        output = self.folder / f"{'+'.join(subset)}.seg.nrrd"
        command = segmentCommand(self.python, self.bundle, {s: self.inputs[s] for s in subset}, output, self.device)
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
                created.append(importSegmentation(self.scene, path, reference, self.info.labels, name))
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
