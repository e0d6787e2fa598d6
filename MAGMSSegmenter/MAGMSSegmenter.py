"""MAGMS Segmenter: segment a brain tumour from whichever MRI volumes are loaded (MAG-MS, He et al., ISBI 2024).

Thin Slicer layer: the work is in MAGMSSegmenterLib (MRML only, tested with slicer-core). The
network runs in a `PythonSlicer -m magms segment` child process, so Slicer stays responsive and
Cancel ends it at once.
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

from MAGMSCommonLib import dependencies, models
from MAGMSCommonLib.child import childPython
from MAGMSCommonLib.volumes import guessMapping, seriesDescriptionAttribute
from MAGMSCommonLib.widgets import volumeSelector
from MAGMSSegmenterLib import logic

from magms.bundle import read_bundle_info

REGISTRY = Path(__file__).parent / "Resources" / "Models.json"


class MAGMSSegmenter(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MAGMS Segmenter")
        self.parent.categories = [_("Segmentation")]
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


@parameterNodeWrapper
class MAGMSSegmenterParameterNode:
    """Saved with the scene. The slot -> volume mapping is kept as node references (logic.writeSlotMapping)."""

    bundlePath: Path  # empty (".") until a bundle is chosen
    device: str = "auto"
    compareSubsets: bool = False


class MAGMSSegmenterWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._slotSelectors: dict[str, slicer.qMRMLNodeComboBox] = {}
        self._bundleInfo = None
        self._job = None
        self._started = 0.0
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MAGMSSegmenter.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MAGMSSegmenterLogic()

        self._registry = []
        try:
            self._registry = models.readRegistry(REGISTRY)
        except Exception as err:  # a broken registry must not hide the module
            self.ui.statusLabel.text = str(err)
        self._fillModelList()
        for device in self.logic.devices():
            self.ui.deviceComboBox.addItem(f"{device.key}: {device.description}", device.key)
        self.ui.deviceComboBox.insertItem(0, _("auto (CUDA if present)"), "auto")

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.bundlePathLineEdit.connect("currentPathChanged(QString)", self.onBundleChanged)
        self.ui.downloadButton.connect("clicked(bool)", self.onDownload)
        self.ui.registryComboBox.connect("activated(int)", self.onModelListChosen)
        self.ui.guessButton.connect("clicked(bool)", self.onGuess)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyOrCancel)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._fillModelList()  # MAGMS Training may have added a bundle

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = parameterNode
        self._parameterNodeGuiTag = None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            index = self.ui.deviceComboBox.findData(self._parameterNode.device)
            self.ui.deviceComboBox.currentIndex = max(index, 0)
            self.onBundleChanged(str(self._parameterNode.bundlePath))

    # --- model ---------------------------------------------------------------------------------

    def _fillModelList(self) -> None:
        """Published models (downloaded on demand) and bundles trained here (MAGMS Training)."""
        combo = self.ui.registryComboBox
        combo.clear()
        combo.addItem(_("(choose a bundle folder below)"), "")
        for entry in self._registry:
            combo.addItem(f"{entry.name} {entry.version}", entry.id)
        for folder in models.localBundles():
            combo.addItem(_("trained here: {name}").format(name=folder.name), f"local:{folder}")
        self.ui.downloadButton.enabled = bool(self._registry)

    def onModelListChosen(self, index: int) -> None:
        data = self.ui.registryComboBox.itemData(index) or ""
        if data.startswith("local:"):
            self.ui.bundlePathLineEdit.currentPath = data[len("local:"):]

    def onDownload(self) -> None:
        entry_id = self.ui.registryComboBox.currentData
        entry = next((e for e in self._registry if e.id == entry_id), None)
        if entry is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not get the model."), waitCursor=True):
            self.ui.statusLabel.text = _("Downloading {name}...").format(name=entry.name)
            slicer.app.processEvents()
            folder = models.fetchModel(entry, progress=lambda done, total: slicer.app.processEvents())
            self.ui.bundlePathLineEdit.currentPath = str(folder)
            self.ui.statusLabel.text = _("{name} verified (sha256) and cached in {folder}").format(name=entry.name, folder=folder)

    def onBundleChanged(self, path: str) -> None:
        self._bundleInfo = None
        self._rebuildSlotSelectors(())
        if path in ("", "."):
            self.ui.bundleInfoText.plainText = _("Choose a model bundle: its slots, labels and validation table show here.")
            self._updateApply()
            return
        try:
            self._bundleInfo = read_bundle_info(path)
        except Exception as err:
            self.ui.bundleInfoText.plainText = str(err)
            self._updateApply()
            return
        self.ui.bundleInfoText.plainText = logic.describeBundle(self._bundleInfo)
        self._rebuildSlotSelectors(self._bundleInfo.slots)
        saved = logic.readSlotMapping(self._parameterNode.parameterNode, self._bundleInfo.slots) if self._parameterNode else {}
        if any(saved.values()):
            self._showMapping(saved, {})
        else:
            self.onGuess()

    def _rebuildSlotSelectors(self, slots) -> None:
        # Built in code: the bundle decides which slots exist.
        layout = self.ui.slotsFormLayout
        while layout.rowCount() > 0:
            layout.removeRow(0)
        self._slotSelectors = {}
        from magms.modalities import slot_display_name

        for slot in slots:
            selector = volumeSelector()
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self._onSlotChanged)
            layout.addRow(f"{slot_display_name(slot)}:", selector)
            self._slotSelectors[slot] = selector

    def onGuess(self) -> None:
        if self._bundleInfo is None:
            return
        mapping, guesses = self.logic.guess(self._bundleInfo.slots)
        self._showMapping(mapping, {g.nodeID: g for g in guesses})

    def _showMapping(self, mapping, guesses) -> None:
        for slot, selector in self._slotSelectors.items():
            wasBlocked = selector.blockSignals(True)
            selector.setCurrentNodeID(mapping.get(slot) or "")
            selector.blockSignals(wasBlocked)
            guess = guesses.get(mapping.get(slot) or "")
            selector.toolTip = guess.reason if guess else ""
        left = [g for g in guesses.values() if g.slot is None]
        if left:
            self.ui.statusLabel.text = _("Not assigned: ") + "; ".join(f"{g.name} ({g.reason})" for g in left)
        self._onSlotChanged()

    def _mapping(self) -> dict:
        return {slot: (selector.currentNodeID or None) for slot, selector in self._slotSelectors.items()}

    def _onSlotChanged(self, *_args) -> None:
        if self._parameterNode:
            logic.writeSlotMapping(self._parameterNode.parameterNode, self._mapping())
        self._updateApply()

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def _updateApply(self) -> None:
        running = self._job is not None and self._job.running
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = running or (self._bundleInfo is not None and any(self._mapping().values()))

    # --- run -----------------------------------------------------------------------------------

    def onApplyOrCancel(self) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
            return
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Cannot segment."), waitCursor=True):
            device = self._parameterNode.device
            if device != "auto" and device.startswith("cuda") and not any(d.key == device for d in self.logic.devices()):
                slicer.util.warningDisplay(_("{device} is not available: running on the CPU.").format(device=device))
                device = "cpu"
            self._job = self.logic.newJob()
            self._job.progress.connect(self._onProgress)
            self._job.finished.connect(self._onFinished)
            self._job.failed.connect(self._onFailed)
            self._job.cancelled.connect(self._onCancelled)
            self._started = time.monotonic()
            self._job.start(
                self._mapping(), self._parameterNode.bundlePath, device=device,
                subsets="all" if self._parameterNode.compareSubsets else None,
                modelName=Path(self._parameterNode.bundlePath).name,
            )
            self._timer.start()
        self._updateApply()

    def _poll(self) -> None:
        if self._job is not None:
            self._job.poll()
            if self._job.running:
                self.ui.statusLabel.text = self._status + _(" ({seconds:.0f} s)").format(seconds=time.monotonic() - self._started)

    _status = ""

    def _onProgress(self, fraction: float, text: str) -> None:
        self.ui.progressBar.value = int(1000 * fraction)
        self._status = text

    def _end(self, text: str) -> None:
        self._timer.stop()
        self.ui.statusLabel.text = text + _(" after {seconds:.0f} s").format(seconds=time.monotonic() - self._started)
        self._updateApply()

    def _onFinished(self, nodes) -> None:
        self._end(_("Created ") + ", ".join(n.GetName() for n in nodes))
        if nodes:
            reference = nodes[-1].GetNodeReference(nodes[-1].GetReferenceImageGeometryReferenceRole())
            slicer.util.setSliceViewerLayers(background=reference, fit=True)

    def _onFailed(self, message: str) -> None:
        self._end(_("Failed"))
        self.ui.progressBar.value = 0
        slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=message))

    def _onCancelled(self) -> None:
        self.ui.progressBar.value = 0
        self._end(_("Cancelled; nothing was changed"))


class MAGMSSegmenterLogic(ScriptedLoadableModuleLogic):
    """Reads the parameter node and calls MAGMSSegmenterLib; no computation of its own."""

    def getParameterNode(self):
        return MAGMSSegmenterParameterNode(super().getParameterNode())

    def devices(self):
        from magms.devices import describe_devices

        return describe_devices()

    def guess(self, slots):
        return guessMapping(slicer.mrmlScene, slots, describe=dicomSeriesDescription)

    def newJob(self) -> logic.SegmentationJob:
        return logic.SegmentationJob(slicer.mrmlScene, python=childPython())

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


class MAGMSSegmenterTest(ScriptedLoadableModuleTest):
    """End to end inside Slicer: a tiny bundle made here, SampleData MRBrainTumor1, the widget's logic."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_segment_MRBrainTumor1()

    def _tinyBundle(self, folder: Path) -> Path:
        from magms.bundle import save_bundle
        from magms.config import NetConfig, PreprocessConfig
        from magms.labels import get_scheme
        from magms.networks import build_network

        config = NetConfig(slots=("flair", "t1c"), out_channels=4, backbone="unet", img_size=(16, 16, 16), channels=(4, 8, 16))
        save_bundle(folder, build_network(config), config, get_scheme("msd_task01"),
                    PreprocessConfig(spacing=(4.0, 4.0, 4.0), patch_size=(16, 16, 16), overlap=0.0))
        return folder

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
            job.start({"t1c": volume.GetID()}, bundle, device="cpu", modelName="tiny")
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

