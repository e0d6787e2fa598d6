"""The Segmenter panel's Export to DICOM section, without Qt: which segmentation, which objects, where; whether
it can run and why not; the export child job.

The :class:`~.controller.SegmenterController` owns one and hands it the parameter node and the chosen model;
the widget binds the section's controls to it (each handler one call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import slicer
import vtk

from magms.bundle import BundleInfo
from magms.errors import MAGMSError

from .dicomexport import EXPORT_FORMATS, ExportJob, InstanceFiles, InstancePositions, exportProblem, noDicomDatabase

__all__ = ["PipGuard", "ExportController", "EXPORT_REFERENCE_ROLE", "EXPORT_FORMAT_ITEMS"]

logger = logging.getLogger(__name__)

#: The segmentation to export, a node reference of the parameter node (saved with the scene).
EXPORT_REFERENCE_ROLE = "MAGMS.exportSegmentation"
#: The export format choice as the panel lists it.
EXPORT_FORMAT_ITEMS = (("both", "RT Structure Set and DICOM SEG"), ("rtstruct", "RT Structure Set (RTSTRUCT)"),
                       ("seg", "DICOM Segmentation (SEG)"))
NO_FOLDER = ("", ".")  # what an empty path field may hold


class PipGuard:
    """Whether pip is running for either section: it runs Qt's event loop, so meanwhile no click may start
    anything and no observed change may switch a button back on. When it ends, every section says again
    what its button can do (a run or an export may have ended meanwhile)."""

    def __init__(self) -> None:
        self.active = False
        self.refreshers: list[Callable[[], None]] = []

    def end(self) -> None:
        self.active = False
        for refresh in self.refreshers:
            refresh()


class ExportController:
    """The Export to DICOM section.

    Args:
        scene: the MRML scene.
        view: the panel (``showExport``, ``showExportSettings``, ``showExportSegmentation``, ``showStatus``, ``showError``).
        model: the chosen model's bundle folder and info, (None, None) while none reads.
        pip: shared with the rest of the panel (:class:`PipGuard`).
        newExportJob: makes a :class:`~.dicomexport.ExportJob` (tests inject one).
        dicomFiles, dicomPositions: SOP Instance UID -> file, and -> Image Position (Patient), from Slicer's DICOM
            database; without them no instance is found, and ``magms export`` checks the positions.
    """

    # The hint and button follow the segmentation and its reference volume: a new reference,
    # a transform, a volume reloaded with other attributes change whether it can be exported.
    _EVENTS = (vtk.vtkCommand.ModifiedEvent, slicer.vtkMRMLNode.ReferenceAddedEvent, slicer.vtkMRMLNode.ReferenceModifiedEvent,
               slicer.vtkMRMLNode.ReferenceRemovedEvent, slicer.vtkMRMLTransformableNode.TransformModifiedEvent)

    def __init__(self, scene, view, model: Callable[[], tuple[Path | None, BundleInfo | None]], pip: PipGuard,
                 newExportJob: Callable[[], ExportJob] | None = None, dicomFiles: InstanceFiles = noDicomDatabase,
                 dicomPositions: InstancePositions = noDicomDatabase) -> None:
        self.scene, self.view, self.model, self.pip = scene, view, model, pip
        self.newExportJob = newExportJob or (lambda: ExportJob(scene))
        self.dicomFiles, self.dicomPositions = dicomFiles, dicomPositions
        self.parameters = None
        self.exportJob: ExportJob | None = None
        self._observed: list[tuple] = []  # (node, observer tag): the segmentation and its reference volume
        pip.refreshers.append(self.update)

    # --- life cycle ------------------------------------------------------------------------

    def setParameterNode(self, parameters) -> None:
        """Show the section's settings of the panel's :class:`~MAGMSCommonLib.parameters.Parameters` (None: scene closing)."""
        self.parameters = parameters
        if parameters is None:
            self._unobserve()
            return
        self.view.showExportSettings(EXPORT_FORMAT_ITEMS, self.exportFormat(), parameters.get("exportFolder"))
        self.view.showExportSegmentation(parameters.node.GetNodeReferenceID(EXPORT_REFERENCE_ROLE) or "")
        self._observe()

    def enter(self) -> None:
        """The panel is shown: the scene may have changed meanwhile."""
        self._observe()
        self.update()

    def close(self) -> None:
        """The scene closes, the module is closed or Slicer exits: end the export's process tree, observe nothing."""
        self.cancelExport()
        self._unobserve()

    def poll(self) -> None:
        if self.exportJob is not None:
            self.exportJob.poll()

    # --- the settings ----------------------------------------------------------------------

    @property
    def exporting(self) -> bool:
        return self.exportJob is not None and self.exportJob.running

    def exportSegmentation(self):
        """The segmentation node chosen for export (None: none, or it left the scene)."""
        if self.parameters is None:
            return None
        node = self.parameters.node.GetNodeReference(EXPORT_REFERENCE_ROLE)
        return node if node is not None and node.IsA("vtkMRMLSegmentationNode") else None

    def setExportSegmentation(self, nodeID: str | None) -> None:
        """The user chose the segmentation to export (or a run made one)."""
        if self.parameters is not None:
            self.parameters.node.SetNodeReferenceID(EXPORT_REFERENCE_ROLE, nodeID or None)
        self._observe()
        self.update()

    def setExportFormat(self, key: str) -> None:
        if self.parameters is not None and key in EXPORT_FORMATS:
            self.parameters.set("exportFormat", key)
        self.update()

    def exportFormat(self) -> str:
        """The chosen key of :data:`~.dicomexport.EXPORT_FORMATS`; ``both`` for a value no version of the panel wrote."""
        key = self.parameters.get("exportFormat") if self.parameters is not None else "both"
        return key if key in EXPORT_FORMATS else "both"

    def setExportFolder(self, path: str) -> None:
        if self.parameters is not None:
            self.parameters.set("exportFolder", "" if path in NO_FOLDER else str(path))
        self.update()

    def exportProblem(self) -> str:
        """Why Export cannot run now ("" when it can)."""
        if self.parameters is None:
            return "No scene."
        problem = exportProblem(self.exportSegmentation())
        if problem:
            return problem
        if self.model()[1] is None:
            return "Choose the model whose labels the segmentation has (Model, above)."
        if not self.parameters.get("exportFolder"):
            return "Choose a folder for the DICOM files."
        return ""

    def update(self) -> None:
        """Say whether Export can run, and what it will write (or why not)."""
        if self.pip.active:  # an observed node changed while pip ran: the button stays off
            return
        if self.exporting:
            self.view.showExport("Cancel export", True, "Exporting...")
            return
        problem = self.exportProblem()
        if problem:
            self.view.showExport("Export to DICOM", False, problem)
            return
        kinds = EXPORT_FORMATS[self.exportFormat()]
        names = {"rtstruct": "an RT Structure Set", "seg": "a DICOM SEG"}
        self.view.showExport("Export to DICOM", True, f"Writes {' and '.join(names[k] for k in kinds)} of "
                             f"'{self.exportSegmentation().GetName()}' into {self.parameters.get('exportFolder')}, "
                             "referencing the DICOM series of its reference volume.")

    # --- observing the segmentation and its volume -----------------------------------------

    def _nodes(self) -> list:
        node = self.exportSegmentation()
        if node is None:
            return []
        reference = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
        return [node] + ([reference] if reference is not None else [])

    def _observe(self) -> None:
        self._unobserve()
        for node in self._nodes():
            for event in self._EVENTS:
                self._observed.append((node, node.AddObserver(event, self._onNodeChanged)))

    def _unobserve(self) -> None:
        for node, tag in self._observed:
            node.RemoveObserver(tag)
        self._observed = []

    def _onNodeChanged(self, caller, event) -> None:
        observed = list(dict.fromkeys(node.GetID() for node, _ in self._observed))
        if [node.GetID() for node in self._nodes()] != observed:  # another reference volume: follow it
            self._observe()
        self.update()

    # --- the export ------------------------------------------------------------------------

    def exportOrCancel(self, ensureDependencies: Callable[[Sequence[str]], bool] = lambda kinds=(): True) -> None:
        """Export starts a DICOM export of the chosen segmentation; while one runs, the button cancels it.

        Args:
            ensureDependencies: asks for and installs what writing the given kinds (``rtstruct``,
                ``seg``) lacks (pydicom, and rt-utils or highdicom); False stops here.
        """
        if self.exporting:
            self.cancelExport()
            return
        if self.pip.active:
            return
        problem = self.exportProblem()
        if problem:
            self.view.showError(f"Cannot export: {problem}")
            return
        # pip runs Qt's event loop: a second click must not start a second export meanwhile
        self.view.showExport("Installing packages...", False, "Installing the Python packages the export needs...")
        self.pip.active = True
        try:
            ready = ensureDependencies(EXPORT_FORMATS[self.exportFormat()])
        finally:
            self.pip.end()
        if not ready or self.exportProblem():
            return
        self._start()
        self.update()

    def _start(self) -> None:
        self.exportJob = self.newExportJob()
        self.exportJob.finished.connect(self._onExported)
        self.exportJob.failed.connect(self._onExportFailed)
        self.exportJob.cancelled.connect(self._onExportCancelled)
        try:
            self.exportJob.start(self.exportSegmentation(), self.model()[0], self.parameters.get("exportFolder"),
                                 self.exportFormat(), self.dicomFiles, positions=self.dicomPositions)
        except Exception as err:  # noqa: BLE001 - shown, not raised into a Qt slot (OSError: no Python to run)
            if not isinstance(err, MAGMSError):
                logger.exception("the export could not start")
            self.view.showError(f"Cannot export: {err}")
        else:
            self.view.showStatus(f"Exporting '{self.exportSegmentation().GetName()}' to DICOM...")

    def cancelExport(self) -> None:
        if self.exporting:
            self.exportJob.cancel()

    def _onExported(self, paths: list) -> None:
        self.view.showStatus("Exported to DICOM: " + ", ".join(str(p) for p in paths))
        self.update()

    def _onExportFailed(self, message: str) -> None:
        self.view.showStatus("Export to DICOM failed; nothing was written")
        self.view.showError(f"Export to DICOM failed: {message}")
        self.update()

    def _onExportCancelled(self) -> None:
        self.view.showStatus("Export cancelled; nothing was written")
        self.update()
