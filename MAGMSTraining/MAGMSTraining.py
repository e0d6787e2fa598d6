"""MAGMS Training: train or fine-tune a MAG-MS model from a folder or from scene nodes, with live curves.

Thin Slicer layer: the work is in MAGMSTrainingLib (MRML only, tested with slicer-core) and the
`magms train` child process; Stop asks it to save a checkpoint, Resume continues from it.
"""

from __future__ import annotations

import time
from pathlib import Path

import qt
import slicer
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MAGMSCommonLib import dependencies
from MAGMSCommonLib.child import childPython
from MAGMSCommonLib.widgets import volumeSelector
from MAGMSTrainingLib import logic

from magms.commands import TrainOptions
from magms.labels import SCHEMES

# The defaults of ``magms train``: the module starts from the same values as the command line.
TRAIN_DEFAULTS = TrainOptions.defaults()


class MAGMSTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MAGMS Training")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MAGMS developers"]
        self.parent.helpText = _(
            "Trains or fine-tunes one MAG-MS model that segments from any subset of its MRI sequences, on your "
            "own cases: a folder, or volumes and segmentations loaded in Slicer. Curves update live; Stop and "
            "Resume at will; the finished model appears in MAGMS Segmenter."
        )
        self.parent.acknowledgementText = _("MAG-MS: He, Summerfield, Dong, Glide-Hurst, ISBI 2024 (arXiv 2306.03730).")


@parameterNodeWrapper
class MAGMSTrainingParameterNode:
    dataPath: Path
    outPath: Path
    slots: str = ""
    epochs: int = TRAIN_DEFAULTS["epochs"]
    maxMinutes: float = TRAIN_DEFAULTS["max_minutes"] or 0.0  # 0: no time limit
    patch: int = TRAIN_DEFAULTS["patch"][0]
    distill: bool = TRAIN_DEFAULTS["distill"]
    klWeight: float = TRAIN_DEFAULTS["kl_weight"]
    featureWeight: float = TRAIN_DEFAULTS["feature_weight"]


class MAGMSTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._data = None
        self._timer = qt.QTimer()
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._poll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MAGMSTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MAGMSTrainingLogic()
        for key in SCHEMES:
            self.ui.labelsComboBox.addItem(key, key)
        self.ui.backboneComboBox.addItem(_("light U-Net"), "unet")
        self.ui.backboneComboBox.addItem("UNETR", "unetr")
        self.ui.deviceComboBox.addItem(_("auto (CUDA if present)"), "auto")
        from magms.devices import describe_devices

        for device in describe_devices():
            self.ui.deviceComboBox.addItem(f"{device.key}: {device.description}", device.key)
        self.ui.findCasesButton.connect("clicked(bool)", self.onFindCases)
        self.ui.checkDataButton.connect("clicked(bool)", self.onCheckData)
        self.ui.startButton.connect("clicked(bool)", lambda: self.onStart(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self.onStart(resume=True))
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None and self._job.running:
            self._job.stop()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(MAGMSTrainingParameterNode(self.logic.getParameterNode()))

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # --- data ----------------------------------------------------------------------------------

    def _slots(self) -> tuple[str, ...]:
        from magms.modalities import canonical_slot

        return tuple(canonical_slot(s) for s in self._parameterNode.slots.split(",") if s.strip())

    def onFindCases(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot list the cases."), waitCursor=True):
            slots = self._slots() or ("flair", "t1", "t1c", "t2")
            cases = logic.guessSceneCases(slicer.mrmlScene, slots)
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
                    selector = volumeSelector(case.volumes.get(slot))
                    table.setCellWidget(row, col, selector)
                    selectors[slot] = selector
                self._caseRows.append((case, selectors))
            self.ui.fromSceneRadioButton.checked = bool(cases)
            self.ui.statusLabel.text = _("{n} case(s) found: check the volume of each slot").format(n=len(cases))

    def _sceneCases(self) -> list:
        return [logic.SceneCase(case.name, {s: (sel.currentNodeID or None) for s, sel in selectors.items()}, case.segmentationID)
                for case, selectors in getattr(self, "_caseRows", [])]

    def onCheckData(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The data has problems."), waitCursor=True):
            labels = self.ui.labelsComboBox.currentData
            if self.ui.fromSceneRadioButton.checked:
                cases = self._sceneCases()
                from magms.labels import get_scheme

                slots = self._slots() or logic.sceneSlots(cases)
                logic.checkSceneCases(slicer.mrmlScene, cases, slots, get_scheme(labels))
                self.ui.statusLabel.text = _("{n} scene case(s) are fine").format(n=len(cases))
            else:
                slots, n = logic.preflightFolder(self._parameterNode.dataPath, labels, self._slots() or None)
                self.ui.statusLabel.text = _("{n} case(s) are fine; slots {slots}").format(n=n, slots=", ".join(slots))

    # --- training --------------------------------------------------------------------------------

    def _settings(self) -> dict:
        """The run's :class:`~magms.commands.TrainOptions` values from the parameter node and widgets."""
        p = self._parameterNode
        init = self.ui.initPathLineEdit.currentPath
        return {
            "labels": self.ui.labelsComboBox.currentData, "slots": self._slots(), "backbone": self.ui.backboneComboBox.currentData,
            "epochs": p.epochs, "max_minutes": p.maxMinutes or None, "patch": (p.patch,), "distill": p.distill,
            "kl_weight": p.klWeight, "feature_weight": p.featureWeight, "device": self.ui.deviceComboBox.currentData,
            "init": init or None,
        }

    def onStart(self, resume: bool) -> None:
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Cannot start training."), waitCursor=True):
            if self._job is None:
                self._job = self.logic.newJob()
                self._job.progress.connect(self._onProgress)
                self._job.finished.connect(self._onFinished)
                self._job.stopped.connect(self._onStopped)
                self._job.failed.connect(self._onFailed)
            out, settings = self._parameterNode.outPath, self._settings()
            if resume:
                self._job.resume(self._data or self._parameterNode.dataPath, out, settings)
            elif self.ui.fromSceneRadioButton.checked:
                self._data = self._job.startFromScene(self._sceneCases(), out, settings)
            else:
                self._data = self._parameterNode.dataPath
                self._job.start(self._data, out, settings)
            self.ui.plotWidget.setMRMLPlotViewNode(self.logic.plotView(self._job.chart))
            self._started = time.monotonic()
            self._timer.start()
        self._updateButtons()

    def onStop(self) -> None:
        if self._job is not None:
            self._job.stop()
            self.ui.statusLabel.text = _("Stopping: the checkpoint is being written...")

    def _poll(self) -> None:
        if self._job is not None:
            self._job.poll()
        self._updateButtons()

    def _updateButtons(self) -> None:
        running = self._job is not None and self._job.running
        self.ui.startButton.enabled = not running
        self.ui.resumeButton.enabled = not running
        self.ui.stopButton.enabled = running

    def _onProgress(self, fraction: float, text: str) -> None:
        self.ui.progressBar.value = int(1000 * fraction)
        self.ui.statusLabel.text = text

    def _onFinished(self, bundle) -> None:
        self._timer.stop()
        self.ui.statusLabel.text = _("Finished: {bundle} (listed in MAGMS Segmenter)").format(bundle=bundle)
        self._updateButtons()

    def _onStopped(self) -> None:
        self._timer.stop()
        self.ui.statusLabel.text = _("Stopped; press Resume to continue from the checkpoint")
        self._updateButtons()

    def _onFailed(self, message: str) -> None:
        self._timer.stop()
        self._updateButtons()
        slicer.util.errorDisplay(_("Training failed: {message}").format(message=message))


class MAGMSTrainingLogic(ScriptedLoadableModuleLogic):
    """Reads the parameter node and calls MAGMSTrainingLib; no computation of its own."""

    def newJob(self) -> logic.TrainingJob:
        return logic.TrainingJob(slicer.mrmlScene, python=childPython())

    def plotView(self, chart):
        view = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLPlotViewNode") or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode")
        view.SetPlotChartNodeID(chart.GetID())
        return view

    def ensureDependencies(self) -> bool:
        """Ask before installing what is missing; never install at import time."""
        return dependencies.ensureInSlicer()


class MAGMSTrainingTest(ScriptedLoadableModuleTest):
    """Inside Slicer: a tiny data set made here trains for 2 epochs through the widget's logic."""

    def runTest(self) -> None:
        slicer.mrmlScene.Clear()
        self.test_tiny_training()

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
                sitk.WriteImage(sitk.GetImageFromArray((label + rng.normal(5, 1, label.shape)).astype(np.float32)), str(case / "flair.nii.gz"))
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

