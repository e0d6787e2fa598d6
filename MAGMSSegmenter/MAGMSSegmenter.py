"""MAGMS Segmenter: segment a brain tumour from whichever MRI volumes are loaded (MAG-MS, He et al., ISBI 2024).

Thin Slicer layer: the work is in MAGMSSegmenterLib (MRML only, tested with slicer-core). The
network runs in a `PythonSlicer -m magms segment` child process, so Slicer stays responsive and
Cancel ends it at once.
"""

from __future__ import annotations

import sys
import time
import unittest
from pathlib import Path

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _useCheckoutFolders() -> None:
    """From a checkout (Extension Wizard's Select Extension, or the module folders added to Additional module
    paths) Slicer puts only this module's folder on sys.path (ctkFactoryScriptedItem::load in
    Base/QTGUI/qSlicerScriptedLoadableModuleFactory.cxx, v5.8.1 and v5.10.0): the shared library (MAGMSCommon/)
    and the core (the repository root) lie beside it. Installed, both are in qt-scripted-modules with this file."""
    root = Path(__file__).resolve().parent.parent
    for folder, package in ((root / "MAGMSCommon", "MAGMSCommonLib"), (root, "magms")):
        if (folder / package / "__init__.py").is_file() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


_useCheckoutFolders()

from magms.modalities import slot_display_name
from magms.protocol import EngineChoice
from MAGMSCommonLib import dependencies, models
from MAGMSCommonLib.child import childPython
from MAGMSCommonLib.volumes import seriesDescriptionAttribute
from MAGMSCommonLib.widgets import (
    HEAVY_SELF_TESTS,
    ControllerPanel,
    builtinModelsOrWarning,
    checkPanelOpensWithoutTorch,
    fillComboBox,
    heavySelfTestsWanted,
    runSelfTests,
    volumeSelector,
)
from MAGMSSegmenterLib import logic
from MAGMSSegmenterLib.controller import SegmenterController

REGISTRY = Path(__file__).parent / "Resources" / "Models.json"


class MAGMSSegmenter(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MAGMS Segmenter")
        # Slicer's own category, translated in its context
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MAGMS developers"]
        self.parent.helpText = _(
            "Segments a brain tumour (edema, tumour core, enhancing tumour) from any subset of the MRI "
            "sequences a MAGMS model was trained on. Map the loaded volumes to the model's slots, press Apply, "
            "and review the new segmentation. See the "
            '<a href="https://github.com/magms-developers/SlicerMAGMS">documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "MAG-MS: He, Summerfield, Dong, Glide-Hurst, ISBI 2024 (arXiv 2306.03730). Built on PyTorch and MONAI."
        )


class MAGMSSegmenterWidget(ControllerPanel, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the panel to :class:`~MAGMSSegmenterLib.controller.SegmenterController`: each handler is
    one call, and the ``show*`` methods are the controller's view."""

    def __init__(self, parent=None) -> None:
        # first: without a parent the base calls setup() itself; it also initialises VTKObservationMixin
        self.controller = None
        self._slotSelectors: dict = {}
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MAGMSSegmenter.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._buildRefineSection(uiWidget)  # before the controller, which shows its state at once
        self.logic = MAGMSSegmenterLogic()
        self.controller = SegmenterController(
            slicer.mrmlScene, self.logic.getParameterNode(), self, self.logic.newJob, registry=self.logic.registry(),
            describeVolume=dicomSeriesDescription, builtinModels=builtinModelsOrWarning(),
            newExportJob=self.logic.newExportJob, dicomFiles=dicomDatabaseFile, dicomPositions=dicomDatabasePosition,
        )
        self.ui.bundlePathLineEdit.connect("currentPathChanged(QString)", lambda path: self.controller.chooseBundle(path))
        self.ui.registryComboBox.connect(
            "activated(int)", lambda i: self.controller.chooseListed(self.ui.registryComboBox.itemData(i) or ""))
        self.ui.downloadButton.connect(
            "clicked(bool)", lambda: self.controller.download(self.ui.registryComboBox.currentData or "", slicer.app.processEvents))
        self.ui.guessButton.connect("clicked(bool)", lambda: self.controller.guess())
        self.ui.deviceComboBox.connect("activated(int)", lambda i: self.controller.setDevice(self.ui.deviceComboBox.itemData(i)))
        self.ui.engineComboBox.connect("activated(int)", lambda i: self.controller.setEngine(self.ui.engineComboBox.itemData(i)))
        self.ui.precisionComboBox.connect("activated(int)", lambda i: self.controller.setPrecision(self.ui.precisionComboBox.itemData(i)))
        self.ui.compareSubsetsCheckBox.connect("toggled(bool)", lambda on: self.controller.setCompareSubsets(on))
        self.ui.imagesPreparedCheckBox.connect("toggled(bool)", lambda on: self.controller.setImagesPrepared(on))
        self.ui.applyButton.connect("clicked(bool)", lambda: self.controller.applyOrCancel(dependencies.ensureForSegmentation))
        self.ui.exportSegmentationNodeComboBox.connect(
            "currentNodeChanged(vtkMRMLNode*)", lambda node: self.controller.export.setExportSegmentation(node.GetID() if node else None))
        self.ui.exportFormatComboBox.connect(
            "activated(int)", lambda i: self.controller.export.setExportFormat(self.ui.exportFormatComboBox.itemData(i)))
        self.ui.exportFolderPathLineEdit.connect("currentPathChanged(QString)", lambda path: self.controller.export.setExportFolder(path))
        self.ui.exportButton.connect("clicked(bool)", lambda: self.controller.export.exportOrCancel(dependencies.ensureDicomInSlicer))
        targets = self.controller.targets
        self.ui.targetsSegmentationNodeComboBox.connect(
            "currentNodeChanged(vtkMRMLNode*)", lambda node: targets.setSegmentation(node.GetID() if node else None))
        self.ui.targetsProtocolComboBox.connect(
            "activated(int)", lambda i: targets.setProtocol(self.ui.targetsProtocolComboBox.itemData(i)))
        self.ui.targetsBrainNodeComboBox.connect(
            "currentNodeChanged(vtkMRMLNode*)", lambda node: targets.setBrainMask(node.GetID() if node else None))
        self.ui.targetsBarrierNodeComboBox.connect(
            "currentNodeChanged(vtkMRMLNode*)", lambda node: targets.setBarrier(node.GetID() if node else None))
        self.ui.targetsGrowButton.connect("clicked(bool)", lambda: targets.grow())
        self._connectRefineSection()
        self.startControllerPanel(pollMilliseconds=200)

    # --- the Refine section ----------------------------------------------------------------------
    # built in code: the click lists and place mode are the markups module's (vtkSlicerMarkupsLogic.h, v5.8.1:97,226)

    #: place a positive / negative click, undo the last one. No Slicer 5.8 or 5.10 shortcut uses these (Base/, Libs/,
    #: Modules/, Applications/ at both tags; Markups' own are Ctrl+Shift+A/T/Space, qMRMLMarkupsToolBar.cxx:84-86), and
    #: not Ctrl+Alt: on Windows that is AltGr, which types characters on many keyboard layouts.
    REFINE_SHORTCUTS = (("Ctrl+Shift+P", "add"), ("Ctrl+Shift+N", "remove"), ("Ctrl+Shift+U", "undo"))

    def _buildRefineSection(self, uiWidget) -> None:
        import ctk

        section = ctk.ctkCollapsibleButton()
        section.text = _("Refine with clicks")
        section.collapsed = True
        panel = uiWidget.layout()
        panel.insertWidget(panel.count() - 1, section)  # above the .ui's closing spacer, below its other sections
        form = qt.QFormLayout(section)
        self.refineSegmentationSelector = slicer.qMRMLNodeComboBox()
        self.refineSegmentationSelector.nodeTypes = ["vtkMRMLSegmentationNode"]
        self.refineSegmentationSelector.noneEnabled = True
        self.refineSegmentationSelector.addEnabled = False
        self.refineSegmentationSelector.removeEnabled = False
        self.refineSegmentationSelector.setMRMLScene(slicer.mrmlScene)
        form.addRow(_("Segmentation:"), self.refineSegmentationSelector)
        self.refineRegionComboBox = qt.QComboBox()
        form.addRow(_("Region:"), self.refineRegionComboBox)
        buttons = qt.QHBoxLayout()
        self.refineButtons = {}
        for key, text, tip in (("add", _("Add"), _("Place points that belong to the region (Ctrl+Shift+P); right-click ends")),
                               ("remove", _("Remove"), _("Place points that do not belong to the region (Ctrl+Shift+N); "
                                                         "right-click ends")),
                               ("undo", _("Undo click"), _("Take the last click back (Ctrl+Shift+U)")),
                               ("clear", _("Clear clicks"), _("Take every click back"))):
            button = qt.QPushButton(text)
            button.toolTip = tip
            buttons.addWidget(button)
            self.refineButtons[key] = button
        form.addRow(buttons)
        self.refineHintLabel = qt.QLabel()
        self.refineHintLabel.wordWrap = True
        form.addRow(self.refineHintLabel)
        self.refineStatusLabel = qt.QLabel()
        self.refineStatusLabel.wordWrap = True
        form.addRow(self.refineStatusLabel)
        self._shortcuts: list = []

    def _connectRefineSection(self) -> None:
        refine = self.controller.refine
        self.refineSegmentationSelector.connect(
            "currentNodeChanged(vtkMRMLNode*)", lambda node: refine.setSegmentation(node.GetID() if node else None))
        self.refineRegionComboBox.connect("activated(int)", lambda i: refine.setRegion(self.refineRegionComboBox.itemData(i)))
        self.refineButtons["add"].connect("clicked(bool)", lambda: self.placeClicks(True))
        self.refineButtons["remove"].connect("clicked(bool)", lambda: self.placeClicks(False))
        self.refineButtons["undo"].connect("clicked(bool)", lambda: refine.undo())
        self.refineButtons["clear"].connect("clicked(bool)", lambda: refine.clear())

    def placeClicks(self, positive: bool) -> None:
        """Persistent place mode on the click list of this sign; each point placed goes to the controller."""
        if not self.refineButtons["add" if positive else "remove"].enabled:  # a shortcut while the section says why not
            return
        pointList = self.controller.refine.clickLists()[positive]
        event = slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent
        if not self.hasObserver(pointList, event, self._onClickDefined):
            self.addObserver(pointList, event, self._onClickDefined)
        markupsLogic = slicer.modules.markups.logic()
        markupsLogic.SetActiveList(pointList)  # StartPlaceMode does not choose the list itself
        markupsLogic.StartPlaceMode(True)

    @vtk.calldata_type(vtk.VTK_INT)
    def _onClickDefined(self, caller, event, index=None) -> None:
        # PointPositionDefinedEvent, not PointAddedEvent: place mode adds a preview point under the mouse
        # (vtkSlicerMarkupsWidget.cxx, v5.8.1:139-160, 1218); the call data is the point's index (int*), or none.
        # Only the point's ID is taken here: the markups node still reads the point after this event
        # (vtkMRMLMarkupsNode.cxx AddControlPoint, v5.8.1:670-674), so it is handled once the event is over.
        if not self.parent.isEntered:
            return
        pointID = caller.GetNthControlPointID(caller.GetNumberOfControlPoints() - 1 if index is None else index)
        listID = caller.GetID()
        qt.QTimer.singleShot(0, lambda: self.controller.refine.pointPlaced(listID, pointID))

    def enter(self) -> None:
        ControllerPanel.enter(self)
        self._removeShortcuts()  # enter and exit come in pairs, but a reload may skip one
        actions = {"add": lambda: self.placeClicks(True), "remove": lambda: self.placeClicks(False),
                   "undo": lambda: self.controller.refine.undo()}
        for key, action in self.REFINE_SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.connect("activated()", actions[action])
            self._shortcuts.append(shortcut)

    def exit(self) -> None:
        self._removeShortcuts()
        self._stopPlacingClicks()

    def cleanup(self) -> None:
        self._removeShortcuts()
        self._stopPlacingClicks()
        ControllerPanel.cleanup(self)

    def _stopPlacingClicks(self) -> None:
        """Leave place mode if it places clicks: SetActiveList(None) also switches to view transform
        (vtkSlicerMarkupsLogic.cxx, v5.8.1:594-611), so a click in another module adds no point to a click list."""
        selection = slicer.app.applicationLogic().GetSelectionNode()
        placing = selection.GetActivePlaceNodeID() if selection is not None else None
        if self.controller is not None and placing in self.controller.refine.clickListIDs():
            slicer.modules.markups.logic().SetActiveList(None)

    def _removeShortcuts(self) -> None:
        # as the Segment Editor removes its own (qMRMLSegmentEditorWidget::uninstallKeyboardShortcuts, v5.8.1:3245-3255)
        for shortcut in getattr(self, "_shortcuts", []):
            shortcut.disconnect("activated()")
            shortcut.setParent(None)
            shortcut.deleteLater()
        self._shortcuts = []

    # --- the view ------------------------------------------------------------------------------

    def showModels(self, items, current, downloadable) -> None:
        fillComboBox(self.ui.registryComboBox, items, current)
        self.ui.downloadButton.enabled = downloadable

    def showDevices(self, items, current) -> None:
        fillComboBox(self.ui.deviceComboBox, items, current)

    def showSettings(self, device, compareSubsets) -> None:
        wasBlocked = self.ui.compareSubsetsCheckBox.blockSignals(True)  # a value shown is no user's change
        self.ui.compareSubsetsCheckBox.checked = compareSubsets
        self.ui.compareSubsetsCheckBox.blockSignals(wasBlocked)

    def showEngine(self, engines, engine, precisions, precision, ran) -> None:
        fillComboBox(self.ui.engineComboBox, engines, engine)
        fillComboBox(self.ui.precisionComboBox, precisions, precision)
        self.ui.engineRanLabel.text = ran

    def showPreprocess(self, prepared, text) -> None:
        wasBlocked = self.ui.imagesPreparedCheckBox.blockSignals(True)  # a value shown is no user's change
        self.ui.imagesPreparedCheckBox.checked = prepared
        self.ui.imagesPreparedCheckBox.blockSignals(wasBlocked)
        self.ui.preprocessLabel.text = text

    def showBundle(self, path, description, slots) -> None:
        if Path(self.ui.bundlePathLineEdit.currentPath or ".") != Path(path or "."):  # "folder/" while typing is the same folder
            wasBlocked = self.ui.bundlePathLineEdit.blockSignals(True)
            self.ui.bundlePathLineEdit.currentPath = path
            self.ui.bundlePathLineEdit.blockSignals(wasBlocked)
        self.ui.bundleInfoText.plainText = description
        # built in code: the bundle decides which slots exist
        layout = self.ui.slotsFormLayout
        while layout.rowCount() > 0:
            layout.removeRow(0)
        self._slotSelectors = {}
        for slot in slots:
            selector = volumeSelector()
            selector.connect("currentNodeChanged(vtkMRMLNode*)", lambda *a: self.controller.mappingChanged(self._mapping()))
            layout.addRow(f"{slot_display_name(slot)}:", selector)
            self._slotSelectors[slot] = selector

    def showMapping(self, mapping, tooltips) -> None:
        for slot, selector in self._slotSelectors.items():
            wasBlocked = selector.blockSignals(True)
            selector.setCurrentNodeID(mapping.get(slot) or "")
            selector.blockSignals(wasBlocked)
            selector.toolTip = tooltips.get(slot, "")

    def _mapping(self) -> dict:
        return {slot: (selector.currentNodeID or None) for slot, selector in self._slotSelectors.items()}

    def showApply(self, text, enabled) -> None:
        self.ui.applyButton.text = _(text)
        self.ui.applyButton.enabled = enabled

    def showProgress(self, fraction) -> None:
        self.ui.progressBar.value = int(1000 * fraction)

    def showStatus(self, text) -> None:
        self.ui.statusLabel.text = text

    def showError(self, text) -> None:
        slicer.util.errorDisplay(text)

    def showResult(self, nodes) -> None:
        if nodes:  # the foreground (the disagreement map, with compare subsets) is kept
            reference = nodes[-1].GetNodeReference(nodes[-1].GetReferenceImageGeometryReferenceRole())
            slicer.util.setSliceViewerLayers(background=reference, fit=True)

    def showExportSettings(self, formats, current, folder) -> None:
        fillComboBox(self.ui.exportFormatComboBox, formats, current)
        if self.ui.exportFolderPathLineEdit.currentPath != folder:
            wasBlocked = self.ui.exportFolderPathLineEdit.blockSignals(True)
            self.ui.exportFolderPathLineEdit.currentPath = folder
            self.ui.exportFolderPathLineEdit.blockSignals(wasBlocked)

    def showExportSegmentation(self, nodeID) -> None:
        wasBlocked = self.ui.exportSegmentationNodeComboBox.blockSignals(True)
        self.ui.exportSegmentationNodeComboBox.setCurrentNodeID(nodeID or "")
        self.ui.exportSegmentationNodeComboBox.blockSignals(wasBlocked)

    def showExport(self, text, enabled, hint) -> None:
        self.ui.exportButton.text = _(text)
        self.ui.exportButton.enabled = enabled
        self.ui.exportHintLabel.text = hint


    def showTargetsSettings(self, protocols, current, margins) -> None:
        fillComboBox(self.ui.targetsProtocolComboBox, protocols, current)
        # built in code: the protocol decides which targets grow by a margin
        layout = self.ui.targetsMarginsFormLayout
        while layout.rowCount() > 0:
            layout.removeRow(0)
        for name, millimetres in margins:
            spinBox = qt.QDoubleSpinBox()
            spinBox.setRange(0.0, 100.0)
            spinBox.setDecimals(1)
            spinBox.suffix = " mm"
            spinBox.value = millimetres
            spinBox.toolTip = _("How far {name} grows from the target before it, in millimetres").format(name=name)
            spinBox.connect("valueChanged(double)", lambda value, name=name: self.controller.targets.setMargin(name, value))
            layout.addRow(_("{name} margin:").format(name=name), spinBox)

    def showTargetsNodes(self, segmentationID, brainID, barrierID) -> None:
        for combo, nodeID in ((self.ui.targetsSegmentationNodeComboBox, segmentationID), (self.ui.targetsBrainNodeComboBox, brainID),
                              (self.ui.targetsBarrierNodeComboBox, barrierID)):
            wasBlocked = combo.blockSignals(True)  # a value shown is no user's change
            combo.setCurrentNodeID(nodeID or "")
            combo.blockSignals(wasBlocked)

    def showTargets(self, enabled, hint) -> None:
        self.ui.targetsGrowButton.enabled = enabled
        self.ui.targetsHintLabel.text = hint

    def showRefine(self, segmentationID, regions, region, enabled, hint) -> None:
        wasBlocked = self.refineSegmentationSelector.blockSignals(True)  # a value shown is no user's change
        self.refineSegmentationSelector.setCurrentNodeID(segmentationID or "")
        self.refineSegmentationSelector.blockSignals(wasBlocked)
        fillComboBox(self.refineRegionComboBox, regions, region)
        for button in self.refineButtons.values():
            button.enabled = enabled
        self.refineHintLabel.text = hint

    def showRefineStatus(self, text) -> None:
        self.refineStatusLabel.text = text


class MAGMSSegmenterLogic(ScriptedLoadableModuleLogic):
    """What only the Slicer application has: its parameter node, the model registry, the child job."""

    def registry(self) -> list:
        try:
            return models.readRegistry(REGISTRY)
        except Exception as err:  # noqa: BLE001 - a broken registry must not hide the module
            slicer.util.warningDisplay(str(err))
            return []

    def newJob(self) -> logic.SegmentationJob:
        return logic.SegmentationJob(slicer.mrmlScene, python=childPython())

    def newExportJob(self) -> logic.ExportJob:
        return logic.ExportJob(slicer.mrmlScene, python=childPython())

    def ensureDependencies(self) -> bool:
        """Ask before installing what is missing; never install at import time."""
        return dependencies.ensureInSlicer()


def dicomSeriesDescription(node) -> str:
    """The series description from Slicer's DICOM database, for volumes loaded from DICOM."""
    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if uids and database is not None:
        return database.instanceValue(uids[0], "0008,103e") or seriesDescriptionAttribute(node)
    return seriesDescriptionAttribute(node)


def dicomDatabaseFile(uid: str):
    """The file Slicer's DICOM database holds for a SOP Instance UID ("" or None: not there)."""
    database = getattr(slicer, "dicomDatabase", None)
    if database is None or not database.isOpen:
        return None
    return database.fileForInstance(uid)


def dicomDatabasePosition(uid: str):
    """An instance's Image Position (Patient), ``x\\y\\z`` in mm, from Slicer's DICOM database ("" or None: not known),
    as DICOMScalarVolumePlugin reads it (``instanceValue(uid, "0020,0032")``)."""
    database = getattr(slicer, "dicomDatabase", None)
    if database is None or not database.isOpen:
        return None
    return database.instanceValue(uid, "0020,0032")


class MAGMSSegmenterTest(ScriptedLoadableModuleTest):
    """End to end inside Slicer: a tiny bundle made here, SampleData MRBrainTumor1, the widget's logic."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        runSelfTests(self, "MAGMSSegmenter", heavy=self.test_segment_MRBrainTumor1)

    def test_panel_opens_without_torch(self) -> None:
        checkPanelOpensWithoutTorch(self, "MAGMSSegmenter")

    def _tinyBundle(self, folder: Path) -> Path:
        from magms.bundle import save_bundle
        from magms.config import NetConfig, PreprocessConfig
        from magms.labels import get_scheme
        from magms.networks import build_network

        config = NetConfig(slots=("flair", "t1c"), out_channels=4, backbone="unet", img_size=(16, 16, 16), channels=(4, 8, 16))
        save_bundle(folder, build_network(config), config, get_scheme("msd_task01"),
                    PreprocessConfig(spacing=(4.0, 4.0, 4.0), patch_size=(16, 16, 16), overlap=0.0))
        return folder

    @unittest.skipUnless(heavySelfTestsWanted(), f"installs PyTorch and MONAI: set {HEAVY_SELF_TESTS}=1")
    def test_segment_MRBrainTumor1(self) -> None:
        import tempfile

        import SampleData

        self.delayDisplay("Installing missing packages if any, building a tiny bundle")
        widgetLogic = MAGMSSegmenterLogic()
        self.assertTrue(widgetLogic.ensureDependencies())
        with tempfile.TemporaryDirectory() as tmp:
            bundle = self._tinyBundle(Path(tmp) / "tiny")
            volume = SampleData.downloadSample("MRBrainTumor1")  # a post-contrast T1
            mine = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my contours")
            mine.GetSegmentation().AddEmptySegment("gtv", "GTV")
            before = mine.GetMTime()

            job = widgetLogic.newJob()
            results, failures = [], []
            job.finished.connect(results.extend)
            job.failed.connect(failures.append)
            job.start({"t1c": volume.GetID()}, bundle, engineChoice=EngineChoice(device="cpu"), modelName="tiny")
            deadline = time.monotonic() + 600
            while job.running and time.monotonic() < deadline:
                job.poll()
                slicer.app.processEvents()
                time.sleep(0.1)
            self.assertEqual(failures, [])
            self.assertEqual(len(results), 1)
            node = results[0]
            self.assertEqual(node.GetName(), f"{volume.GetName()} MAGMS tiny (t1c)")
            self.assertEqual(node.GetSegmentation().GetNumberOfSegments(), 3)
            self.assertIs(node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()), volume)
            self.assertEqual(mine.GetMTime(), before)
        self.delayDisplay("MAGMS Segmenter test passed")

