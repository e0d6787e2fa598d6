"""Export to DICOM: a segmentation's current segments as an RT Structure Set and/or DICOM SEG referencing the
DICOM series its reference volume was loaded from, written by a ``magms export`` child.

MRML only, no Qt (tested with ``slicer-core``). Slicer never imports pydicom, highdicom or rt-utils: the child does.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import slicer
import vtk

from magms.bundle import read_bundle_info
from magms.commands import ExportOptions
from magms.errors import ConfigError
from magms.labels import LabelScheme
from MAGMSCommonLib import dependencies
from MAGMSCommonLib.runner import ProcessRunner, RunState
from MAGMSCommonLib.segments import withBinaryLabelmaps
from MAGMSCommonLib.signal import Signal

from .jobs import FolderJob
from .labelmaps import labelArray, writeArray
from .results import safeFileName
from .targets import isTargetSegment, writeTargetsForExport

logger = logging.getLogger(__name__)


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


def matchLabelSegments(segmentationNode: slicer.vtkMRMLSegmentationNode, scheme: LabelScheme) -> tuple[list[tuple[str, int]], list[str]]:
    """(segment ID, label value) of every segment but the targets whose name is a label's name or key in ``scheme`` (any
    case), as :func:`importSegmentation` names them; and the names of the other segments."""
    by_name = {}
    for label in scheme.labels:
        if label.value != 0:
            by_name[label.name.casefold()] = by_name[label.key.casefold()] = label.value
    segmentation = segmentationNode.GetSegmentation()
    values, unknown = [], []
    for index in range(segmentation.GetNumberOfSegments()):
        if isTargetSegment(segmentation.GetNthSegment(index)):
            continue  # a target the Targets section grew: exported as a target (writeTargetsForExport)
        name = segmentation.GetNthSegment(index).GetName() or ""
        value = by_name.get(name.strip().casefold())
        if value is None:
            unknown.append(name)
        else:
            values.append((segmentation.GetNthSegmentID(index), value))
    return values, unknown


def segmentLabelValues(segmentationNode: slicer.vtkMRMLSegmentationNode, scheme: LabelScheme,
                       model: str = "the model") -> list[tuple[str, int]]:
    """:func:`matchLabelSegments`, for an export: every segment but the targets must be a label.

    Raises:
        ConfigError: segments whose names are not labels of ``scheme`` (each named), or no segment.
    """
    values, unknown = matchLabelSegments(segmentationNode, scheme)
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
    writeArray(labelArray(segmentationNode, reference, values), reference, path, f"'{segmentationNode.GetName()}': its label map")


def exportPaths(folder: Path, name: str, kinds: Sequence[str]) -> dict[str, Path]:
    """``folder/<name>.rtstruct.dcm`` and/or ``.seg.dcm``, numbered (``<name> 2``...) so that no file is replaced."""
    stem = safeFileName(name)
    for n in range(1, 10000):
        base = stem if n == 1 else f"{stem} {n}"
        paths = {kind: folder / f"{base}{EXPORT_KINDS[kind][1]}" for kind in kinds}
        if not any(p.exists() for p in paths.values()):
            return paths
    raise ConfigError(f"{folder}: no free file name for {stem}")


class ExportJob(FolderJob):
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
            converted = withBinaryLabelmaps(segmentationNode)  # once: a surface segmentation is converted on a copy
            writeLabelsForExport(converted, reference, values, labels)
            drawn = writeTargetsForExport(converted, reference, self.folder)
            # the child writes here, never into the user's folder: a killed child leaves its temporaries in this folder only
            self._staged = {kind: self.folder / path.name for kind, path in self.paths.items()}
            objects = {EXPORT_KINDS[kind][2]: path for kind, path in self._staged.items()}
            options = ExportOptions(labels=labels, series=tuple(files), model=bundle, targets_from=drawn, **objects)
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
