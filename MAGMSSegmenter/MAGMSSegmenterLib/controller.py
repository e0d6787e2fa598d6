"""What the MAGMS Segmenter panel does, without Qt: state, enabling, messages, what to run.

The widget (``MAGMSSegmenter.py``) only binds: each of its handlers makes one call here, and it
shows what this controller tells its :class:`SegmenterView`. Tests drive the controller with a
stand-in view on the real MRML of ``slicer-core``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from magms.builtin import BuiltinModel, builtin_model
from magms.bundle import BundleInfo, read_bundle_info
from magms.errors import MAGMSError
from magms.modalities import slot_display_name
from magms.protocol import EXPORTED_ENGINES, EngineChoice
from MAGMSCommonLib import models
from MAGMSCommonLib.devicelist import KNOWN_WITHOUT_ASKING, DeviceQuery, showDeviceList
from MAGMSCommonLib.parameters import Parameters
from MAGMSCommonLib.volumes import VolumeGuess, guessMapping, scalarVolumes, seriesDescriptionAttribute

from .exportcontroller import ExportController, PipGuard
from .logic import (
    ExportJob,
    InstanceFiles,
    InstancePositions,
    SegmentationJob,
    describeBundle,
    noDicomDatabase,
    readSlotMapping,
    volumeSkullCheck,
    writeSlotMapping,
)
from .refinecontroller import REFINE_DEFAULTS, RefineController
from .targetscontroller import TARGETS_DEFAULTS, TargetsController

__all__ = ["SegmenterView", "SegmenterController", "DEFAULTS", "ENGINE_ITEMS", "PRECISION_ITEMS"]

logger = logging.getLogger(__name__)

#: The panel's settings on the parameter node, with their defaults. ``bundlePath`` is a bundle folder,
#: or ``builtin:<name>`` for a built-in model (its folder found again when a saved scene is loaded elsewhere);
#: empty means the default built-in model. ``exportFormat`` is a key of :data:`~.logic.EXPORT_FORMATS`.
#: ``imagesPrepared``: the user says the images are skull-stripped and aligned (``--preprocess none``);
#: unchecked, the default, ``magms segment`` prepares them as they need (``--preprocess auto``).
DEFAULTS = {"bundlePath": "", "device": "auto", "engine": "auto", "precision": "auto", "compareSubsets": False,
            "imagesPrepared": False, "exportFormat": "both", "exportFolder": "", **TARGETS_DEFAULTS, **REFINE_DEFAULTS}
#: The engine and precision choices (``magms segment --engine/--precision``) as the panel lists them.
ENGINE_ITEMS = (("auto", "auto: OpenVINO on the CPU when installed, else PyTorch"), ("eager", "PyTorch (the reference)"),
                ("openvino", "OpenVINO (CPU)"), ("onnxruntime", "ONNX Runtime (CPU)"))
PRECISION_ITEMS = (("auto", "auto: bfloat16 in OpenVINO where the CPU has it"), ("fp32", "float32 (the reference)"))
NO_BUNDLE = ("", ".")  # what an empty path field may hold
LOCAL = "local:"


class SegmenterView(Protocol):
    """What the controller asks the panel to show."""

    def showModels(self, items: Sequence[tuple[str, str]], current: str, downloadable: bool) -> None: ...
    def showDevices(self, items: Sequence[tuple[str, str]], current: str) -> None: ...
    def showBundle(self, path: str, description: str, slots: Sequence[str]) -> None: ...
    def showMapping(self, mapping: Mapping[str, str | None], tooltips: Mapping[str, str]) -> None: ...
    def showSettings(self, device: str, compareSubsets: bool) -> None: ...
    def showEngine(self, engines: Sequence[tuple[str, str]], engine: str, precisions: Sequence[tuple[str, str]], precision: str,
                   ran: str) -> None: ...
    def showPreprocess(self, prepared: bool, text: str) -> None: ...
    def showApply(self, text: str, enabled: bool) -> None: ...
    def showProgress(self, fraction: float) -> None: ...
    def showStatus(self, text: str) -> None: ...
    def showError(self, text: str) -> None: ...
    def showResult(self, nodes: list) -> None: ...
    def showExportSettings(self, formats: Sequence[tuple[str, str]], current: str, folder: str) -> None: ...
    def showExportSegmentation(self, nodeID: str) -> None: ...
    def showExport(self, text: str, enabled: bool, hint: str) -> None: ...
    def showTargetsSettings(self, protocols: Sequence[tuple[str, str]], current: str, margins: Sequence[tuple[str, float]]) -> None: ...
    def showTargetsNodes(self, segmentationID: str, brainID: str, barrierID: str) -> None: ...
    def showTargets(self, enabled: bool, hint: str) -> None: ...
    def showRefine(self, segmentationID: str, regions: Sequence[tuple[str, str]], region: str, enabled: bool, hint: str) -> None: ...
    def showRefineStatus(self, text: str) -> None: ...


class SegmenterController:
    """The Segmenter panel's behaviour.

    Args:
        scene: the MRML scene.
        parameterNode: the module's ``vtkMRMLScriptedModuleNode`` (settings and slot mapping).
        view: the panel.
        newJob: makes a :class:`~MAGMSSegmenterLib.logic.SegmentationJob` (tests inject one).
        registry: published models; ``localBundles`` lists bundles trained here.
        builtinModels: the models that ship with MAGMS (:func:`magms.builtin.builtin_models`), the
            default first: listed first, and the default is chosen while nothing else is.
        builtinFolder: a built-in model's verified bundle folder by name (:func:`magms.builtin.builtin_model`).
        describeVolume: a volume's series description (the widget reads Slicer's DICOM database).
        devices: makes the device query (tests inject one); None lists only what needs no answer.
        newExportJob: makes a :class:`~MAGMSSegmenterLib.logic.ExportJob` (tests inject one).
        dicomFiles: SOP Instance UID -> file in Slicer's DICOM database (the widget's
            ``slicer.dicomDatabase.fileForInstance``); without it no instance is found.
        dicomPositions: SOP Instance UID -> Image Position (Patient) from the database
            (``slicer.dicomDatabase.instanceValue(uid, "0020,0032")``): the slices are checked before
            an export starts; without it ``magms export`` checks them.
    """

    def __init__(self, scene, parameterNode, view: SegmenterView, newJob: Callable[[], SegmentationJob],
                 registry: Sequence[models.ModelEntry] = (), localBundles: Callable[[], list[Path]] = models.localBundles,
                 describeVolume: Callable = seriesDescriptionAttribute,
                 devices: Callable[[Callable], DeviceQuery] | None = DeviceQuery,
                 builtinModels: Sequence[BuiltinModel] = (), builtinFolder: Callable[[str], Path] = builtin_model,
                 newExportJob: Callable[[], ExportJob] | None = None, dicomFiles: InstanceFiles = noDicomDatabase,
                 dicomPositions: InstancePositions = noDicomDatabase) -> None:
        self.scene, self.view, self.newJob = scene, view, newJob
        self._skullChecks: dict[str, tuple] = {}  # node ID -> (image modification time, SkullCheck): computed once per content
        self.pip = PipGuard()  # pip is running (it runs Qt's event loop): Apply and Export wait
        #: the Export to DICOM section
        self.export = ExportController(scene, view, lambda: (self.folder, self.info), self.pip, newExportJob, dicomFiles, dicomPositions)
        #: the Targets section
        self.targets = TargetsController(scene, view, lambda: (self.folder, self.info))
        #: the Refine section; its worker runs on the CPU (a click re-runs one window)
        self.refine = RefineController(scene, view, lambda: (self.folder, self.info), lambda: self.mapping,
                                       lambda: self.engineChoice("cpu"), lambda: self.preprocess)
        self.pip.refreshers.append(self._updateApply)
        self.registry, self.localBundles, self.describeVolume = list(registry), localBundles, describeVolume
        self.builtinModels, self.builtinFolder = list(builtinModels), builtinFolder
        self.folder: Path | None = None  # the chosen bundle's folder, once it reads
        self.devices = list(KNOWN_WITHOUT_ASKING)
        self.deviceQuery = devices(self._onDevices) if devices is not None else None
        self.info: BundleInfo | None = None
        self.mapping: dict[str, str | None] = {}
        self._seenVolumes: set[str] | None = None  # volume IDs the slots were last guessed among (None: not yet)
        self.job: SegmentationJob | None = None
        self.started = 0.0
        self.statusText = ""
        self.setParameterNode(parameterNode)

    # --- life cycle ------------------------------------------------------------------------

    def setParameterNode(self, parameterNode) -> None:
        """Show the settings of ``parameterNode`` (None while the scene closes)."""
        self.parameters = Parameters(parameterNode, DEFAULTS) if parameterNode is not None else None
        if self.parameters is None:
            self.export.setParameterNode(None)
            self.targets.setParameterNode(None)
            self.refine.setParameterNode(None)
            return
        self.view.showSettings(self.parameters.get("device"), self.parameters.get("compareSubsets"))
        self._showEngine()
        self.view.showDevices(self.devices, self.parameters.get("device"))
        self.info = None
        self.export.setParameterNode(self.parameters)
        self.targets.setParameterNode(self.parameters)
        self.refine.setParameterNode(self.parameters)
        self._updatePreprocess()
        self.chooseBundle(self.parameters.get("bundlePath") or self.defaultChoice(), force=True)

    def enter(self) -> None:
        """The panel is shown: list the models (MAGMS Training may have added one), ask for devices once,
        and say again whether Export can run (the scene may have changed while the panel was hidden)."""
        self.showModels()
        if self.deviceQuery is not None:
            self.deviceQuery.startOnce()
        self.export.enter()
        self.targets.update()
        self.refine.update()

    def sceneClosing(self) -> None:
        """The scene closes: its volumes and parameter node go; nothing refers to them any more."""
        self.cancel()
        self.export.close()
        self.export.setParameterNode(None)
        self.targets.setParameterNode(None)
        self.refine.setParameterNode(None)
        self._skullChecks = {}
        self.parameters, self.info, self.folder, self.mapping, self._seenVolumes = None, None, None, {}, None

    def cleanup(self) -> None:
        """The module is closed or Slicer exits (or its file is reloaded): end any child process tree, and let go of the
        parameter node, which a new panel takes over (an old selector left alive must not write to it)."""
        self.cancel()
        self.export.close()
        self.refine.stop()
        self.setParameterNode(None)
        if self.deviceQuery is not None:
            self.deviceQuery.cancel()

    # --- model -----------------------------------------------------------------------------

    @property
    def bundlePath(self) -> str:
        return self.parameters.get("bundlePath") if self.parameters else ""

    def defaultChoice(self) -> str:
        """What is chosen while nothing is: the default built-in model, if MAGMS ships one."""
        return models.BUILTIN_PREFIX + self.builtinModels[0].name if self.builtinModels else ""

    def showModels(self) -> None:
        """The model list: the built-in models first (no download), then the published ones (Download),
        then those trained here; the current choice selected."""
        items = [(models.BUILTIN_PREFIX + m.name, f"{m.name} {m.version} (built in)") for m in self.builtinModels]
        items += [(e.id, f"{e.name} {e.version}") for e in self.registry]
        items += [(f"{LOCAL}{folder}", f"trained here: {folder.name}") for folder in self.localBundles()]
        items += [("", "(another bundle: choose its folder below)")]
        keys = {key for key, _ in items}
        path = self.bundlePath
        current = path if path.startswith(models.BUILTIN_PREFIX) else LOCAL + path if LOCAL + path in keys else ""
        self.view.showModels(items, current, bool(self.registry))

    def chooseBundle(self, path: str, force: bool = False) -> None:
        """A bundle folder was chosen (typed, browsed, or from the model list).

        The path is stored before anything else touches the parameter node, and choosing the
        stored path again does nothing: a view that re-emits the stored value cannot undo a choice.
        """
        path = "" if path in NO_BUNDLE else str(path)
        if self.parameters is None or (path == self.bundlePath and not force):
            return
        self.parameters.set("bundlePath", path)
        self.info, self.folder = None, None
        self.showModels()
        if not path:
            self.view.showBundle(path, "Choose a model bundle: its slots, labels and validation table show here.", ())
            self._updateApply()
            self.export.update()
            self.targets.update()
            self.refine.update()
            return
        try:
            # a built-in model's weights are checked against the sha256 its index records
            folder = models.chosenBundleFolder(path, self.builtinFolder)
            self.info = read_bundle_info(folder)
        except MAGMSError as err:
            self.view.showBundle("" if path.startswith(models.BUILTIN_PREFIX) else path, str(err), ())
            self._updateApply()
            self.export.update()
            self.targets.update()
            self.refine.update()
            return
        self.folder = folder
        self.view.showBundle(str(folder), describeBundle(self.info), self.info.slots)
        self.export.update()
        self.targets.update()
        self.refine.update()
        saved = readSlotMapping(self.parameters.node, self.info.slots)
        if any(saved.values()):
            self._seenVolumes = self._volumeIDs()
            self._show(saved, {})
        else:
            self.guess()

    def chooseListed(self, itemID: str) -> None:
        """An entry of the model list: a built-in model or a bundle trained here is chosen; a published
        one waits for Download."""
        if itemID.startswith(models.BUILTIN_PREFIX):
            self.chooseBundle(itemID)
        elif itemID.startswith(LOCAL):
            self.chooseBundle(itemID[len(LOCAL):])

    def download(self, itemID: str, keepAlive: Callable[[], None] = lambda: None) -> None:
        if itemID.startswith(models.BUILTIN_PREFIX):
            self.chooseBundle(itemID)
            self.view.showStatus(f"{itemID[len(models.BUILTIN_PREFIX):]} is built in: nothing to download")
            return
        entry = next((e for e in self.registry if e.id == itemID), None)
        if entry is None:
            self.view.showStatus("Choose a published model in the list first.")
            return
        self.view.showStatus(f"Downloading {entry.name}...")
        try:
            folder = models.fetchModel(entry, progress=lambda done, total: keepAlive())
        except MAGMSError as err:
            self.view.showError(f"Could not get the model: {err}")
            return
        self.chooseBundle(str(folder))
        self.view.showStatus(f"{entry.name} verified (sha256) and cached in {folder}")

    # --- inputs ----------------------------------------------------------------------------

    def guess(self) -> None:
        """Guess the slot of every loaded volume (series description, else name)."""
        if self.info is None:
            return
        mapping, guesses = guessMapping(self.scene, self.info.slots, describe=self.describeVolume)
        self._seenVolumes = self._volumeIDs()
        self._show(mapping, {g.nodeID: g for g in guesses})

    def _volumeIDs(self) -> set[str]:
        return {node.GetID() for node in scalarVolumes(self.scene)}

    def guessArrivedVolumes(self) -> None:
        """Give the volumes loaded since the slots were last guessed (drag and drop, DICOM, a script) the
        empty slots they look like; a slot that holds a volume keeps it. Called from :meth:`poll`, so a
        volume counts once it has image data (a script may add the node before its image), and the
        panel's combo boxes, which keep None when nodes are added, are filled for the user.
        """
        if self.info is None or self.parameters is None or self._seenVolumes is None or self.running:
            return
        current = self._volumeIDs()
        arrived = current - self._seenVolumes
        self._seenVolumes = current
        if not arrived:
            return
        guessed, guesses = guessMapping(self.scene, self.info.slots, describe=self.describeVolume)
        mapping = {slot: self.mapping.get(slot) for slot in self.info.slots}
        used = {nodeID for nodeID in mapping.values() if nodeID}
        for slot, nodeID in guessed.items():
            if not mapping[slot] and nodeID in arrived and nodeID not in used:
                mapping[slot] = nodeID
        self._show(mapping, {g.nodeID: g for g in guesses if g.nodeID in arrived})

    def _show(self, mapping: Mapping[str, str | None], guesses: Mapping[str, VolumeGuess]) -> None:
        tooltips = {slot: guesses[nodeID].reason for slot, nodeID in mapping.items() if nodeID in guesses}
        self.view.showMapping(mapping, tooltips)
        left = [g for g in guesses.values() if g.slot is None]
        if left:
            self.view.showStatus("Not assigned: " + "; ".join(f"{g.name} ({g.reason})" for g in left))
        self.mapping = dict(mapping)
        self.mappingChanged(mapping)

    def mappingChanged(self, mapping: Mapping[str, str | None]) -> None:
        """The user changed a slot's volume: keep it on the parameter node (saved with the scene)."""
        self.mapping = dict(mapping)
        if self.parameters is not None:
            writeSlotMapping(self.parameters.node, mapping)
        self._updateApply()
        self._updatePreprocess()
        self.refine.update()

    def setDevice(self, key: str) -> None:
        if self.parameters is not None:
            self.parameters.set("device", key or "auto")

    def setEngine(self, key: str) -> None:
        """What runs the network (a key of :data:`ENGINE_ITEMS`)."""
        if self.parameters is not None and key in dict(ENGINE_ITEMS):
            self.parameters.set("engine", key)
        self._showEngine()

    def setPrecision(self, key: str) -> None:
        """The exported engines' arithmetic (a key of :data:`PRECISION_ITEMS`)."""
        if self.parameters is not None and key in dict(PRECISION_ITEMS):
            self.parameters.set("precision", key)
        self._showEngine()

    def _showEngine(self) -> None:
        if self.parameters is None:
            return
        engine, precision = self._engineSettings()
        ran = getattr(self.job, "ran", None)
        self.view.showEngine(ENGINE_ITEMS, engine, PRECISION_ITEMS, precision, f"Last run: {ran.describe()}" if ran is not None else "")

    def _engineSettings(self) -> tuple[str, str]:
        """The panel's engine and precision (``auto`` for a value no version of the panel wrote)."""
        engine = self.parameters.get("engine") if self.parameters is not None else "auto"
        precision = self.parameters.get("precision") if self.parameters is not None else "auto"
        return (engine if engine in dict(ENGINE_ITEMS) else "auto", precision if precision in dict(PRECISION_ITEMS) else "auto")

    def engineChoice(self, device: str) -> EngineChoice:
        """The record passed to ``magms segment``: ``device`` with the panel's engine and precision. OpenVINO and
        ONNX Runtime run on the CPU, so they take it."""
        engine, precision = self._engineSettings()
        return EngineChoice(device="cpu" if engine in EXPORTED_ENGINES else device, engine=engine, precision=precision)

    def setCompareSubsets(self, on: bool) -> None:
        if self.parameters is not None:
            self.parameters.set("compareSubsets", bool(on))

    # --- preprocessing (skull-stripping and alignment) ---------------------------------------

    def setImagesPrepared(self, on: bool) -> None:
        """The box "My images are already skull-stripped and aligned": checked runs ``--preprocess none``,
        unchecked ``--preprocess auto``."""
        if self.parameters is not None:
            self.parameters.set("imagesPrepared", bool(on))
        self._updatePreprocess()

    @property
    def preprocess(self) -> str:
        """The ``--preprocess`` mode the panel's choice means."""
        return "none" if self.parameters is not None and self.parameters.get("imagesPrepared") else "auto"

    def skullChecks(self) -> dict[str, tuple]:
        """slot -> (volume node, :class:`~magms.data.skull.SkullCheck`) of every mapped volume with image data,
        in the mapping's order; each volume's check computed once per content of its image."""
        checks = {}
        for slot, nodeID in self.mapping.items():
            node = self.scene.GetNodeByID(nodeID) if nodeID else None
            if node is None or node.GetImageData() is None:
                continue
            stamp = node.GetImageData().GetMTime()
            cached = self._skullChecks.get(nodeID)
            if cached is None or cached[0] != stamp:
                cached = (stamp, volumeSkullCheck(node))
                self._skullChecks[nodeID] = cached
            checks[slot] = (node, cached[1])
        return checks

    def needsBrainExtraction(self) -> bool:
        """Whether the run will extract the brain with deepbet: ``auto`` and no mapped volume looks
        skull-stripped (with one that does, ``magms segment`` masks the others with its brain)."""
        checks = self.skullChecks()
        return self.preprocess == "auto" and bool(checks) and not any(check.stripped for _, check in checks.values())

    def preprocessText(self) -> str:
        """What the panel says about preprocessing: the choice, each mapped volume's skull-strip detection,
        and what ``magms segment`` will do with them."""
        checks = self.skullChecks()
        lines = [f"{slot_display_name(slot)} '{node.GetName()}': looks {check.describe()}" for slot, (node, check) in checks.items()]
        unstripped = [node.GetName() for node, check in checks.values() if not check.stripped]
        if self.preprocess == "none":
            lines.insert(0, "The volumes are segmented as they are (--preprocess none).")
            if unstripped:
                lines.append(f"{', '.join(repr(n) for n in unstripped)} {'does' if len(unstripped) == 1 else 'do'} not look "
                             "skull-stripped: uncheck the box to have the brain extracted first, or the tumour may be missed.")
            return "\n".join(lines)
        lines.insert(0, "MAGMS prepares the volumes first (--preprocess auto): each volume on another grid than the first "
                        "is registered to it (rigid), and the brain is extracted unless the volumes are skull-stripped.")
        if checks and not unstripped:
            lines.append("All look skull-stripped: they are used as they are (registered if needed).")
        elif unstripped and len(unstripped) < len(checks):
            lines.append("The brain of the skull-stripped one masks the others.")
        elif unstripped:
            lines.append("None looks skull-stripped: the brain is extracted with deepbet (installed after asking, if missing).")
        return "\n".join(lines)

    def _updatePreprocess(self) -> None:
        if self.parameters is not None:
            self.view.showPreprocess(bool(self.parameters.get("imagesPrepared")), self.preprocessText())

    def _onDevices(self, devices: list[tuple[str, str]], problem: str) -> None:
        self.devices = devices
        showDeviceList(self.view, devices, self.parameters.get("device") if self.parameters else "auto", problem)

    # --- run -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def _updateApply(self) -> None:
        if self.pip.active:  # pip runs Qt's event loop: a slot change meanwhile must not re-enable Apply
            self.view.showApply("Installing packages...", False)
            return
        mapped = any(self.mapping.values())
        self.view.showApply("Cancel" if self.running else "Apply", self.running or (self.info is not None and mapped))

    def applyOrCancel(self, ensureDependencies: Callable[[bool, str], bool] = lambda brain=False, engine="auto": True) -> None:
        """Apply starts a segmentation of the mapped volumes; while one runs, the button cancels it.

        Args:
            ensureDependencies: asks for and installs what MAGMS lacks, called with whether the run
                will extract the brain (deepbet needed too) and the engine chosen (an exported engine
                needs its runtime); False stops here.
        """
        if self.running:
            self.cancel()
            return
        if self.info is None or self.parameters is None or self.pip.active:
            return
        # pip runs Qt's event loop: a second click must not start anything meanwhile
        self.view.showApply("Installing packages...", False)
        self.pip.active = True
        try:
            ready = ensureDependencies(self.needsBrainExtraction(), self._engineSettings()[0])
        finally:
            self.pip.end()
        if not ready or self.parameters is None:
            return
        device = self.parameters.get("device")
        if device not in {key for key, _ in self.devices}:
            self.view.showStatus(f"{device} is not available: running on the CPU")
            device = "cpu"
        choice = self.engineChoice(device)
        compare = self.parameters.get("compareSubsets")
        if compare and sum(1 for nodeID in self.mapping.values() if nodeID) < 2:
            self.view.showStatus("Compare subsets needs two or more volumes: segmenting once")
        self.job = self.newJob()
        self.job.progress.connect(self._onProgress)
        self.job.finished.connect(self._onFinished)
        self.job.failed.connect(self._onFailed)
        self.job.cancelled.connect(self._onCancelled)
        self.started = time.monotonic()
        try:
            self.job.start(self.mapping, self.folder, engineChoice=choice,
                           subsets="all" if compare else None, modelName=self.folder.name, preprocess=self.preprocess,
                           info=self.info)
        except Exception as err:  # noqa: BLE001 - shown, not raised into a Qt slot (OSError: no Python to run)
            if not isinstance(err, MAGMSError):
                logger.exception("the segmentation could not start")
            self.view.showError(f"Cannot segment: {err}")
        self._updateApply()

    def cancel(self) -> None:
        if self.running:
            self.job.cancel()

    def poll(self) -> None:
        """Called by the panel's timer."""
        self.guessArrivedVolumes()
        if self.deviceQuery is not None:
            self.deviceQuery.poll()
        if self.job is not None:
            self.job.poll()
            if self.job.running:
                self.view.showStatus(f"{self.statusText} ({time.monotonic() - self.started:.0f} s)")
        self.export.poll()
        self.refine.poll()

    def _onProgress(self, fraction: float, text: str) -> None:
        self.view.showProgress(fraction)
        self.statusText = text

    def _end(self, text: str, tail: str = "") -> None:
        self.view.showStatus(f"{text} after {time.monotonic() - self.started:.0f} s{tail}")
        self._updateApply()

    def _onFinished(self, nodes: list) -> None:
        text = "Created " + ", ".join(n.GetName() for n in nodes)
        disagreement = getattr(self.job, "disagreementNode", None)
        if disagreement is not None:
            text += (f". The disagreement map '{disagreement.GetName()}' (how many of the {self.job.compared} smaller subsets "
                     f"disagree with the fullest output, 0 to {self.job.compared}) is shown over the images as the foreground "
                     f"of every slice view, in place of any foreground you had there: look where it is bright first. "
                     f"Report: {self.job.reportFolder / 'report.md'}")
        notes = getattr(self.job, "notes", [])  # what magms segment did beyond segmenting (registration, brain extraction)
        ran = getattr(self.job, "ran", None)
        self._end(text, "".join(f". {note}" for note in notes) + (f". Ran {ran.describe()}" if ran is not None else ""))
        self._showEngine()
        self.view.showResult(nodes)
        if nodes:  # the fullest segmentation is the one to export, and to grow targets from
            self.export.setExportSegmentation(nodes[-1].GetID())
            self.view.showExportSegmentation(nodes[-1].GetID())
            self.targets.setSegmentation(nodes[-1].GetID())
            self.view.showTargetsNodes(nodes[-1].GetID(), *self.targets.maskIDs())
            self.refine.setSegmentation(nodes[-1].GetID())

    def _onFailed(self, message: str) -> None:
        self.view.showProgress(0.0)
        self._end("Failed")
        self.view.showError(f"Segmentation failed: {message}")

    def _onCancelled(self) -> None:
        self.view.showProgress(0.0)
        self._end("Cancelled; nothing was changed")
