"""MAGMS Training logic: MRML only, no Qt, importable without the Slicer application.

Data come from a folder in any layout ``magms train`` reads, or from the scene: cases of volumes
plus one segmentation each, exported to a temporary manifest. Training is a separate
``magms train`` process (:class:`~MAGMSCommonLib.runner.ProcessRunner`). Its ``metrics.csv`` is
read as it grows into a table node and plot series, so the curves are live Slicer plots. Stop asks
the process to save a checkpoint and exit; Resume continues from it. A finished bundle is
registered in the Segmenter's model list.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import slicer
import vtk

from magms.bundle import METADATA_FILE
from magms.commands import TrainOptions
from magms.errors import ConfigError, MAGMSError
from magms.labels import LabelScheme, get_scheme
from magms.modalities import default_slots
from magms.protocol import CHECKPOINT_DIR, CHECKPOINT_STATE_FILE, METRICS_FILE, MIN_OVERLAP, RUN_OPTIONS_FILE, STOP_REQUEST_FILE
from MAGMSCommonLib import models
from MAGMSCommonLib.child import configCommand
from MAGMSCommonLib.childjob import ChildJob
from MAGMSCommonLib.runner import ProcessRunner, RunState
from MAGMSCommonLib.segments import segmentTerminology, withBinaryLabelmaps
from MAGMSCommonLib.signal import Signal
from MAGMSCommonLib.volumes import (
    checkMapping,
    guessMapping,
    overlapFraction,
    scalarVolumes,
    seriesDescriptionAttribute,
    writeVolumes,
)

__all__ = [
    "SceneCase",
    "segmentValues",
    "guessSceneCases",
    "checkSceneCases",
    "exportSceneCases",
    "sceneSlots",
    "preflightFolder",
    "trainingOptions",
    "trainCommand",
    "TrainingJob",
]

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class SceneCase:
    """One case built from scene nodes: slot -> volume node ID, and its segmentation node ID."""

    name: str
    volumes: Mapping[str, str | None]
    segmentationID: str | None


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def segmentValues(segmentation: slicer.vtkMRMLSegmentationNode, scheme: LabelScheme) -> tuple[dict[str, int], list[str]]:
    """Map each segment to a label value of ``scheme`` by name (or key), else by terminology type.

    Returns:
        segment ID -> value, and the names of segments that match no label.
    """
    by_name = {}
    for label in scheme.labels:
        if label.value != 0:
            by_name[_normal(label.name)] = label.value
            by_name[_normal(label.key)] = label.value
    by_type = {label.type.value: label.value for label in scheme.labels if label.value != 0}
    values, unknown = {}, []
    seg = segmentation.GetSegmentation()
    for index in range(seg.GetNumberOfSegments()):
        segment_id = seg.GetNthSegmentID(index)
        segment = seg.GetSegment(segment_id)
        value = by_name.get(_normal(segment.GetName()))
        if value is None:
            codes = segmentTerminology(segment).split("~")
            type_code = codes[2].split("^")[1] if len(codes) > 2 and codes[2].count("^") >= 2 else ""
            value = by_type.get(type_code)
        if value is None:
            unknown.append(segment.GetName())
        else:
            values[segment_id] = value
    return values, unknown


def guessSceneCases(scene: slicer.vtkMRMLScene, slots: Sequence[str], describe=seriesDescriptionAttribute) -> list[SceneCase]:
    """One case per segmentation node, its volumes guessed among those overlapping its reference volume.

    The slots are guessed as in the Segmenter (series description, else name); the user edits them.
    """
    cases = []
    volumes = scalarVolumes(scene)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        segmentation = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
        reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        near = [v for v in volumes if reference is None or v is reference or overlapFraction(reference, v) >= MIN_OVERLAP]
        mapping, _ = guessMapping(scene, slots, describe, nodes=near)
        cases.append(SceneCase(segmentation.GetName(), mapping, segmentation.GetID()))
    return cases


def checkSceneCases(scene: slicer.vtkMRMLScene, cases: Sequence[SceneCase], slots: Sequence[str], scheme: LabelScheme) -> None:
    """Check every scene case before anything is written.

    Raises:
        ConfigError: all problems at once, each naming the case: no case, duplicate names, no
            segmentation, a segmentation under a transform, segments that are not labels of the scheme, bad volume mappings
            (see :func:`MAGMSSegmenterLib.logic.checkMapping`: none, twice, not overlapping...).
    """
    problems = [] if cases else ["no case: add at least one case of volumes with a segmentation"]
    names = [c.name for c in cases]
    problems += [f"case name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for case in cases:
        try:
            checkMapping(scene, case.volumes, slots)
        except ConfigError as err:
            problems.append(f"case {case.name}: {err}")
        node = scene.GetNodeByID(case.segmentationID) if case.segmentationID else None
        if node is None:
            problems.append(f"case {case.name}: no segmentation")
            continue
        if node.GetParentTransformNode() is not None:  # as for volumes: the label map would not lie where it is shown
            problems.append(f"case {case.name}: segmentation '{node.GetName()}' is under transform "
                            f"'{node.GetParentTransformNode().GetName()}': harden or remove it first")
        values, unknown = segmentValues(node, scheme)
        if unknown:
            names_ = ", ".join(label.name for label in scheme.labels if label.value != 0)
            problems.append(f"case {case.name}: segment(s) {', '.join(map(repr, unknown))} of '{node.GetName()}' are not in scheme "
                            f"{scheme.key!r} ({names_}): rename them or choose another scheme")
        elif not values:
            problems.append(f"case {case.name}: segmentation '{node.GetName()}' has no segment")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the data:\n  " + "\n  ".join(problems))


def _writeLabelmap(segmentation, reference, values: Mapping[str, int], path: Path) -> None:
    """``segmentation``'s segments merged on ``reference``'s grid, converted first when they are closed
    surfaces (:func:`~MAGMSCommonLib.segments.withBinaryLabelmaps`), written to ``path``."""
    segmentation = withBinaryLabelmaps(segmentation)
    ids, labels = vtk.vtkStringArray(), vtk.vtkIntArray()
    for segment_id, value in values.items():
        ids.InsertNextValue(segment_id)
        labels.InsertNextValue(value)
    merged = slicer.vtkOrientedImageData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.GenerateMergedLabelmapInReferenceGeometry(segmentation, reference, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
                                                    merged, labels)
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()  # kept out of the scene
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if merged.GetPointData().GetScalars() is None or not logic.CreateLabelmapVolumeFromOrientedImageData(merged, labelmap) \
            or not storage.WriteData(labelmap):
        raise ConfigError(f"segmentation '{segmentation.GetName()}' could not be exported on the grid of '{reference.GetName()}'")


def exportSceneCases(scene: slicer.vtkMRMLScene, cases: Sequence[SceneCase], slots: Sequence[str], scheme: LabelScheme,
                     folder: Path) -> Path:
    """Write every case (volumes, and the segmentation as a labelmap on its reference volume's grid)
    and a manifest ``case,<slot>,...,label``; returns the manifest. The scene is not changed.

    Raises:
        ConfigError: see :func:`checkSceneCases`.
    """
    checkSceneCases(scene, cases, slots, scheme)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases:
        case_folder = folder / re.sub(r"[^\w.-]+", "_", case.name)
        case_folder.mkdir(parents=True, exist_ok=True)
        pairs = checkMapping(scene, case.volumes, slots)
        paths = writeVolumes(pairs, case_folder)
        segmentation = scene.GetNodeByID(case.segmentationID)
        values, _ = segmentValues(segmentation, scheme)
        _writeLabelmap(segmentation, pairs[0][1], values, case_folder / "label.nrrd")
        rows.append([case.name, *(os.path.relpath(paths[s], folder) if s in paths else "" for s in slots),
                     os.path.relpath(case_folder / "label.nrrd", folder)])
    manifest = folder / "cases.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["case", *slots, "label"])
        writer.writerows(rows)
    return manifest


def sceneSlots(cases: Sequence[SceneCase]) -> tuple[str, ...]:
    """The slots a model trained on scene cases gets when none are given: every mapped slot."""
    return default_slots(slot for case in cases for slot, nodeID in case.volumes.items() if nodeID)


def preflightFolder(data: str | os.PathLike[str], labels: str, slots: Sequence[str] | None = None) -> tuple[list[str], int]:
    """Check a data folder or manifest as ``magms train`` will (:func:`magms.data.checks.check_data`).

    The module runs the same check in a child process (``magms train --check-only``); this is for
    scripts that have SimpleITK.

    Returns:
        The slots found (or given) and the number of cases.
    Raises:
        MAGMSError: the layout cannot be read, or every bad case (ImageError, one line each).
    """
    from magms.data.checks import check_data

    found, count = check_data(data, labels, slots)
    return list(found), count


def trainingOptions(data: str | os.PathLike[str], out: str | os.PathLike[str], settings: Mapping[str, Any],
                    resume: bool = False) -> TrainOptions:
    """The ``magms train`` options of a run: the module's ``settings`` (any :class:`TrainOptions`
    field but data and out), with progress lines for the runner.

    Raises:
        ConfigError: an unknown setting, or a value of the wrong type or out of range (named).
    """
    values = {**settings, "data": str(data), "out": str(out), "progress": "lines", "resume": resume}
    return TrainOptions.from_dict(values, where="MAGMS Training")


#: ``trainCommand(python, options, configFile)``: the command line of a run (see :func:`MAGMSCommonLib.child.configCommand`).
trainCommand = configCommand


class TrainingJob(ChildJob):
    """One training run in a child process, with live metrics in MRML.

    Signals:
        progress(fraction: float, text: str)
        metricsAdded(rows: int): new rows were appended to :attr:`table`.
        finished(bundle: Path): the bundle is written and registered in the Segmenter's list.
        stopped(): the process saved a checkpoint and exited (Resume continues).
        failed(message: str)
    """

    def __init__(self, scene: slicer.vtkMRMLScene, python: str | None = None, runner: ProcessRunner | None = None,
                 localModels: Path | None = None) -> None:
        super().__init__(scene, python, runner)
        self.localModels = localModels
        self.metricsAdded = Signal(int)
        self.finished = Signal(Path)
        self.stopped = Signal()
        self.table: slicer.vtkMRMLTableNode | None = None
        self.chart: slicer.vtkMRMLPlotChartNode | None = None
        self.out: Path | None = None
        self._rowsRead = 0
        self._columns: list[str] = []
        self._started = 0.0
        self._exported: Path | None = None

    def start(self, data: str | os.PathLike[str], out: str | os.PathLike[str], settings: Mapping[str, Any]) -> None:
        """Start training on ``data`` (a folder or manifest) into ``out`` (a new folder).

        Args:
            settings: :class:`~magms.commands.TrainOptions` fields other than data and out.
        Raises:
            ConfigError: ``out`` holds a run already (use :meth:`resume`), or a bad setting.
        """
        out = Path(out)
        if (out / CHECKPOINT_DIR).exists() or (out / METADATA_FILE).exists():
            raise ConfigError(f"{out}: holds a run already (resume it, or choose another folder)")
        self._launch(trainingOptions(data, out, settings))

    def startFromScene(self, cases: Sequence[SceneCase], out: str | os.PathLike[str], settings: Mapping[str, Any]) -> Path:
        """Export the scene cases to a temporary manifest, then :meth:`start`. Returns the manifest."""
        scheme = get_scheme(settings["labels"])
        slots = tuple(settings.get("slots") or ()) or sceneSlots(cases)
        folder = Path(tempfile.mkdtemp(prefix="magms-train-data-"))
        try:
            manifest = exportSceneCases(self.scene, cases, slots, scheme, folder)
            self.start(manifest, out, {**settings, "slots": slots})
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._exported = folder
        return manifest

    def resume(self, data: str | os.PathLike[str], out: str | os.PathLike[str], settings: Mapping[str, Any]) -> None:
        """Continue the run in ``out`` from its checkpoint with the panel's data and settings (which become the run's record)."""
        out = Path(out)
        if not (out / CHECKPOINT_DIR / CHECKPOINT_STATE_FILE).is_file():
            raise ConfigError(f"{out}: no checkpoint to resume from")
        self._launch(trainingOptions(data, out, settings, resume=True))

    def _launch(self, options: TrainOptions) -> None:
        if self.running:
            raise RuntimeError("a training run is going on already")
        self.out, self.options, self._started = options.out, options, time.monotonic()
        self._ensurePlots(options.out.name)
        self._readMetrics()
        options.out.mkdir(parents=True, exist_ok=True)
        # the run's options stay beside its results, in the file a later `magms train --out ... --resume` reads
        self._startChild(options, options.out / RUN_OPTIONS_FILE)

    def stop(self) -> None:
        """Ask ``magms train`` to write its checkpoint and exit (a request file it looks for between
        steps, which no launcher can swallow); ``stopped`` follows when it has."""
        if self.running and self.out is not None:
            (self.out / STOP_REQUEST_FILE).touch()

    def cancel(self) -> None:
        """End the whole process tree at once (the last epoch's checkpoint stays)."""
        self.runner.cancel()

    def poll(self) -> None:
        """Call regularly (the widget's timer): reads new metrics rows, emits signals."""
        if self.out is None:
            return
        self._readMetrics()
        self.runner.poll()

    # --- live metrics ------------------------------------------------------------------------

    def _ensurePlots(self, name: str) -> None:
        if self.table is not None and self.scene.IsNodePresent(self.table):  # IDs are reused after Close Scene
            return
        self.table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName(f"MAGMS training {name}"))
        self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", self.scene.GenerateUniqueName(f"MAGMS training {name}"))
        self.chart.SetTitle(f"MAGMS training: {name}")
        self.chart.SetXAxisTitle("step")
        self._columns, self._rowsRead = [], 0

    def _readMetrics(self) -> None:
        path = self.out / METRICS_FILE
        if not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]  # a row being written is skipped
        if header != self._columns:  # first read, or the header grew (the first validation came later)
            self._resetTable(header)
        new = body[self._rowsRead:]
        table = self.table.GetTable()
        for row in new:
            index = table.InsertNextBlankRow()
            for col, cell in enumerate(row):
                try:
                    table.SetValue(index, col, vtk.vtkVariant(float(cell)))
                except ValueError:  # an empty cell: an epoch without validation
                    table.SetValue(index, col, vtk.vtkVariant(float("nan")))
        if new:
            self._rowsRead += len(new)
            table.Modified()
            self.table.Modified()
            self.metricsAdded.emit(len(new))

    def _resetTable(self, header: list[str]) -> None:
        """Columns for ``header``, rows read again from the start; a plot series for the loss and
        the whole-tumour Dice of each subset (every validation column for schemes without regions)."""
        table = self.table.GetTable()
        table.Initialize()
        for name in header:
            column = vtk.vtkDoubleArray()
            column.SetName(name)
            table.AddColumn(column)
        self._columns, self._rowsRead = header, 0
        validation = [n for n in header if n.startswith("val_dice:")]
        shown = set(self.seriesNames())
        for name in ["loss", *([n for n in validation if n.endswith(":wt")] or validation)]:
            if name in header and name not in shown:
                self._addSeries(name)

    def _addSeries(self, column: str) -> None:
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{self.table.GetName()} {column}")
        series.SetAndObserveTableNodeID(self.table.GetID())
        series.SetXColumnName("step")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        self.chart.AddAndObservePlotSeriesNodeID(series.GetID())

    def seriesNames(self) -> list[str]:
        return [self.chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(self.chart.GetNumberOfPlotSeriesNodes())]

    # --- process ---------------------------------------------------------------------------------

    def _onProgress(self, step: int, total: int) -> None:
        elapsed = time.monotonic() - self._started
        fraction = step / max(total, 1)
        if self.options.max_minutes:
            fraction = max(fraction, min(1.0, elapsed / (60 * self.options.max_minutes)))
        left = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        self.progress.emit(fraction, f"step {step}, about {left / 60:.0f} min left")

    def _onRunFinished(self, state: RunState, message: str) -> None:
        self._readMetrics()
        if self._exported is not None and (state is RunState.FAILED or (self.out / METADATA_FILE).is_file()):
            shutil.rmtree(self._exported, ignore_errors=True)  # kept while a resume may need it
            self._exported = None
        if state is RunState.FAILED:
            self.failed.emit(message)
        elif state is RunState.SUCCEEDED and (self.out / METADATA_FILE).is_file():
            try:
                models.registerLocalBundle(self.out, self.localModels)
            except MAGMSError as err:
                self.failed.emit(str(err))
                return
            self.progress.emit(1.0, "done")
            self.finished.emit(self.out)
        else:
            self.stopped.emit()

