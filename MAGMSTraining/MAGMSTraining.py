"""MAGMS Training: train or fine-tune a MAG-MS model from a folder or from scene nodes, with live curves.

Thin Slicer layer: the widget binds the panel to MAGMSTrainingLib's controller (no Qt, tested with
slicer-core); training runs in a `magms train` child process. Stop asks it to save a checkpoint,
Resume continues from it.
"""

from __future__ import annotations

import sys
import time
import unittest
from pathlib import Path

import qt
import slicer
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

from magms.config import BACKBONES
from magms.labels import SCHEMES
from MAGMSCommonLib import dependencies
from MAGMSCommonLib.child import childPython
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
from MAGMSTrainingLib import logic
from MAGMSTrainingLib.controller import NUMBERS, TrainingController, numberRange


class MAGMSTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MAGMS Training")
        # Slicer's own category, translated in its context
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MAGMS developers"]
        self.parent.helpText = _(
            "Trains or fine-tunes one MAG-MS model that segments from any subset of its MRI sequences, on your "
            "own cases: a folder, or volumes and segmentations loaded in Slicer. Curves update live; Stop and "
            "Resume at will; the finished model appears in MAGMS Segmenter."
        )
        self.parent.acknowledgementText = _("MAG-MS: He, Summerfield, Dong, Glide-Hurst, ISBI 2024 (arXiv 2306.03730).")


class MAGMSTrainingWidget(ControllerPanel, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the panel to :class:`~MAGMSTrainingLib.controller.TrainingController`: each handler is one
    call, and the ``show*`` methods are the controller's view."""

    def __init__(self, parent=None) -> None:
        # first: without a parent the base calls setup() itself; it also initialises VTKObservationMixin
        self.controller = None
        self._caseRows: list = []
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MAGMSTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)  # the .ui passes it on to the plot widget
        self.logic = MAGMSTrainingLogic()
        fillComboBox(self.ui.labelsComboBox, [(key, key) for key in SCHEMES])
        fillComboBox(self.ui.backboneComboBox, [(key, {"unet": _("light U-Net"), "unetr": "UNETR"}.get(key, key)) for key in BACKBONES])
        for name in NUMBERS:  # magms train's ranges, whatever the .ui says
            self._numberWidget(name).setRange(*numberRange(name))
        self.controller = TrainingController(slicer.mrmlScene, self.logic.getParameterNode(), self, self.logic.newJob,
                                             builtinModels=builtinModelsOrWarning())
        self._connect()
        self.startControllerPanel(pollMilliseconds=500)

    def _numberWidget(self, name: str):
        return {"epochs": self.ui.epochsSpinBox, "max_minutes": self.ui.minutesSpinBox, "patch": self.ui.patchSpinBox,
                "kl_weight": self.ui.klWeightSpinBox, "feature_weight": self.ui.featureWeightSpinBox}[name]

    def _connect(self) -> None:
        set_ = self.controller.set
        for name in NUMBERS:
            self._numberWidget(name).connect("valueChanged(double)" if name in ("max_minutes", "kl_weight", "feature_weight")
                                             else "valueChanged(int)", lambda value, name=name: set_(name, value))
        self.ui.distillCheckBox.connect("toggled(bool)", lambda on: set_("distill", on))
        self.ui.slotsLineEdit.connect("editingFinished()", lambda: set_("slots", self.ui.slotsLineEdit.text))
        self.ui.labelsComboBox.connect("activated(int)", lambda i: set_("labels", self.ui.labelsComboBox.itemData(i)))
        self.ui.backboneComboBox.connect("activated(int)", lambda i: set_("backbone", self.ui.backboneComboBox.itemData(i)))
        self.ui.deviceComboBox.connect("activated(int)", lambda i: set_("device", self.ui.deviceComboBox.itemData(i)))
        self.ui.dataPathLineEdit.connect("currentPathChanged(QString)", lambda path: set_("data", path))
        self.ui.outPathLineEdit.connect("currentPathChanged(QString)", lambda path: set_("out", path))
        self.ui.initPathLineEdit.connect("currentPathChanged(QString)", lambda path: self.controller.chooseInitFolder(path))
        self.ui.initComboBox.connect("activated(int)", lambda i: self.controller.chooseInit(self.ui.initComboBox.itemData(i) or "",
                                                                                           self.ui.initPathLineEdit.currentPath))
        self.ui.fromFolderRadioButton.connect("toggled(bool)", lambda on: set_("source", "folder" if on else "scene"))
        self.ui.findCasesButton.connect("clicked(bool)", lambda: self.controller.findCases())
        self.ui.checkDataButton.connect("clicked(bool)", lambda: self.controller.checkData(self._sceneCases()))
        self.ui.startButton.connect("clicked(bool)", lambda: self.controller.start(self._sceneCases(), False, dependencies.ensureInSlicer))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self.controller.start(self._sceneCases(), True, dependencies.ensureInSlicer))
        self.ui.stopButton.connect("clicked(bool)", lambda: self.controller.stop())

    def _sceneCases(self) -> list:
        return [logic.SceneCase(case.name, {s: (sel.currentNodeID or None) for s, sel in selectors.items()}, case.segmentationID)
                for case, selectors in self._caseRows]

    # --- the view ------------------------------------------------------------------------------

    def showSettings(self, values) -> None:
        widgets = [self._numberWidget(n) for n in NUMBERS] + [self.ui.distillCheckBox, self.ui.slotsLineEdit,
                   self.ui.dataPathLineEdit, self.ui.outPathLineEdit, self.ui.fromFolderRadioButton,
                   self.ui.fromSceneRadioButton]
        blocked = [w.blockSignals(True) for w in widgets]  # a value shown is no user's change
        for name in NUMBERS:
            self._numberWidget(name).value = values[name]
        self.ui.distillCheckBox.checked = values["distill"]
        self.ui.slotsLineEdit.text = values["slots"]
        self.ui.dataPathLineEdit.currentPath = values["data"]
        self.ui.outPathLineEdit.currentPath = values["out"]
        self.ui.fromFolderRadioButton.checked = values["source"] == "folder"
        self.ui.fromSceneRadioButton.checked = values["source"] == "scene"
        for widget, was in zip(widgets, blocked):
            widget.blockSignals(was)
        fillComboBox(self.ui.labelsComboBox, [(key, key) for key in SCHEMES], values["labels"])
        fillComboBox(self.ui.backboneComboBox, [(self.ui.backboneComboBox.itemData(i), self.ui.backboneComboBox.itemText(i))
                                                for i in range(self.ui.backboneComboBox.count)], values["backbone"])

    def showInit(self, items, current, folder) -> None:
        fillComboBox(self.ui.initComboBox, items, current)
        if self.ui.initPathLineEdit.currentPath != folder:
            wasBlocked = self.ui.initPathLineEdit.blockSignals(True)  # a value shown is no user's change
            self.ui.initPathLineEdit.currentPath = folder
            self.ui.initPathLineEdit.blockSignals(wasBlocked)

    def showDevices(self, items, current) -> None:
        fillComboBox(self.ui.deviceComboBox, items, current)

    def showSceneCases(self, cases, slots) -> None:
        table = self.ui.sceneCasesTable
        table.clear()
        table.setColumnCount(1 + len(slots))
        table.setHorizontalHeaderLabels([_("case (segmentation)"), *slots])
        table.setRowCount(len(cases))
        self._caseRows = []
        for row, case in enumerate(cases):
            table.setItem(row, 0, qt.QTableWidgetItem(case.name))
            selectors = {}
            for col, slot in enumerate(slots, start=1):
                selectors[slot] = volumeSelector(case.volumes.get(slot))
                table.setCellWidget(row, col, selectors[slot])
            self._caseRows.append((case, selectors))

    def showButtons(self, start, stop, resume) -> None:
        self.ui.startButton.enabled, self.ui.stopButton.enabled, self.ui.resumeButton.enabled = start, stop, resume

    def showPlot(self, viewNode) -> None:
        self.ui.plotWidget.setMRMLPlotViewNode(viewNode)

    def showProgress(self, fraction) -> None:
        self.ui.progressBar.value = int(1000 * fraction)

    def showStatus(self, text) -> None:
        self.ui.statusLabel.text = text

    def showError(self, text) -> None:
        slicer.util.errorDisplay(text)


class MAGMSTrainingLogic(ScriptedLoadableModuleLogic):
    """What only the Slicer application has: its parameter node and the child job."""

    def newJob(self) -> logic.TrainingJob:
        return logic.TrainingJob(slicer.mrmlScene, python=childPython())

    def ensureDependencies(self) -> bool:
        """Ask before installing what is missing; never install at import time."""
        return dependencies.ensureInSlicer()


class MAGMSTrainingTest(ScriptedLoadableModuleTest):
    """Inside Slicer: a tiny data set made here trains for 2 epochs through the widget's logic."""

    def runTest(self) -> None:
        runSelfTests(self, "MAGMSTraining", heavy=self.test_tiny_training)

    def test_panel_opens_without_torch(self) -> None:
        checkPanelOpensWithoutTorch(self, "MAGMSTraining")

    @unittest.skipUnless(heavySelfTestsWanted(), f"installs PyTorch and MONAI: set {HEAVY_SELF_TESTS}=1")
    def test_tiny_training(self) -> None:
        import tempfile

        import numpy as np
        import SimpleITK as sitk

        self.assertTrue(MAGMSTrainingLogic().ensureDependencies())
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            rng = np.random.default_rng(0)
            for k in range(3):
                case = data / f"c{k}"
                case.mkdir(parents=True)
                label = np.zeros((20, 22, 24), np.uint8)
                label[5:12, 6:14, 7:15] = 1
                label[7:10, 8:11, 9:12] = 3
                flair = (label + rng.normal(5, 1, label.shape)).astype(np.float32)
                sitk.WriteImage(sitk.GetImageFromArray(flair), str(case / "flair.nii.gz"))
                sitk.WriteImage(sitk.GetImageFromArray(label), str(case / "seg.nii.gz"))
            job = MAGMSTrainingLogic().newJob()
            job.localModels = Path(tmp) / "local_models.json"  # leave the user's model list alone
            done = []
            job.finished.connect(done.append)
            job.start(data, Path(tmp) / "model", {"labels": "msd_task01", "epochs": 2, "patch": (16,), "spacing": 0.0,
                                                  "channels": (4, 8, 16), "device": "cpu", "val_fraction": 0.34})
            deadline = time.monotonic() + 600
            while job.running and time.monotonic() < deadline:
                job.poll()
                slicer.app.processEvents()
                time.sleep(0.2)
            job.poll()
            self.assertEqual(done, [Path(tmp) / "model"], job.runner.lines[-3:])
            self.assertEqual(job.table.GetNumberOfRows(), 2)
        self.delayDisplay("MAGMS Training test passed")

