"""What the MAGMS Segmenter panel does, without Qt: state, enabling, messages, what to run.

The widget (``MAGMSSegmenter.py``) only binds: each of its handlers makes one call here, and it
shows what this controller tells its :class:`SegmenterView`. Tests drive the controller with a
stand-in view on the real MRML of ``slicer-core``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from MAGMSCommonLib import models
from MAGMSCommonLib.devicelist import KNOWN_WITHOUT_ASKING, DeviceQuery, showDeviceList
from MAGMSCommonLib.parameters import Parameters
from MAGMSCommonLib.volumes import VolumeGuess, guessMapping, seriesDescriptionAttribute

from magms.bundle import BundleInfo, read_bundle_info
from magms.errors import MAGMSError

from .logic import SegmentationJob, describeBundle, readSlotMapping, writeSlotMapping

__all__ = ["SegmenterView", "SegmenterController", "DEFAULTS"]

#: The panel's settings on the parameter node, with their defaults.
DEFAULTS = {"bundlePath": "", "device": "auto", "compareSubsets": False}
NO_BUNDLE = ("", ".")  # what an empty path field may hold


class SegmenterView(Protocol):
    """What the controller asks the panel to show."""

    def showModels(self, items: Sequence[tuple[str, str]]) -> None: ...
    def showDevices(self, items: Sequence[tuple[str, str]], current: str) -> None: ...
    def showBundle(self, path: str, description: str, slots: Sequence[str]) -> None: ...
    def showMapping(self, mapping: Mapping[str, str | None], tooltips: Mapping[str, str]) -> None: ...
    def showSettings(self, device: str, compareSubsets: bool) -> None: ...
    def showApply(self, text: str, enabled: bool) -> None: ...
    def showProgress(self, fraction: float) -> None: ...
    def showStatus(self, text: str) -> None: ...
    def showError(self, text: str) -> None: ...
    def showResult(self, nodes: list) -> None: ...


class SegmenterController:
    """The Segmenter panel's behaviour.

    Args:
        scene: the MRML scene.
        parameterNode: the module's ``vtkMRMLScriptedModuleNode`` (settings and slot mapping).
        view: the panel.
        newJob: makes a :class:`~MAGMSSegmenterLib.logic.SegmentationJob` (tests inject one).
        registry: published models; ``localBundles`` lists bundles trained here.
        describeVolume: a volume's series description (the widget reads Slicer's DICOM database).
        devices: makes the device query (tests inject one); None lists only what needs no answer.
    """

    def __init__(self, scene, parameterNode, view: SegmenterView, newJob: Callable[[], SegmentationJob],
                 registry: Sequence[models.ModelEntry] = (), localBundles: Callable[[], list[Path]] = models.localBundles,
                 describeVolume: Callable = seriesDescriptionAttribute,
                 devices: Callable[[Callable], DeviceQuery] | None = DeviceQuery) -> None:
        self.scene, self.view, self.newJob = scene, view, newJob
        self.registry, self.localBundles, self.describeVolume = list(registry), localBundles, describeVolume
        self.devices = list(KNOWN_WITHOUT_ASKING)
        self.deviceQuery = devices(self._onDevices) if devices is not None else None
        self.info: BundleInfo | None = None
        self.mapping: dict[str, str | None] = {}
        self.job: SegmentationJob | None = None
        self.started = 0.0
        self.statusText = ""
        self.setParameterNode(parameterNode)

    # --- life cycle ------------------------------------------------------------------------

    def setParameterNode(self, parameterNode) -> None:
        """Show the settings of ``parameterNode`` (None while the scene closes)."""
        self.parameters = Parameters(parameterNode, DEFAULTS) if parameterNode is not None else None
        if self.parameters is None:
            return
        self.view.showSettings(self.parameters.get("device"), self.parameters.get("compareSubsets"))
        self.view.showDevices(self.devices, self.parameters.get("device"))
        self.info = None
        self.chooseBundle(self.parameters.get("bundlePath"), force=True)

    def enter(self) -> None:
        """The panel is shown: list the models (MAGMS Training may have added one), ask for devices once."""
        items = [("", "(choose a bundle folder below)")] + [(e.id, f"{e.name} {e.version}") for e in self.registry]
        items += [(f"local:{folder}", f"trained here: {folder.name}") for folder in self.localBundles()]
        self.view.showModels(items)
        if self.deviceQuery is not None:
            self.deviceQuery.startOnce()

    def sceneClosing(self) -> None:
        """The scene closes: its volumes and parameter node go; nothing refers to them any more."""
        self.cancel()
        self.parameters, self.info, self.mapping = None, None, {}

    def cleanup(self) -> None:
        """The module is closed or Slicer exits: end any child process tree."""
        self.cancel()
        if self.deviceQuery is not None:
            self.deviceQuery.cancel()

    # --- model -----------------------------------------------------------------------------

    @property
    def bundlePath(self) -> str:
        return self.parameters.get("bundlePath") if self.parameters else ""

    def chooseBundle(self, path: str, force: bool = False) -> None:
        """A bundle folder was chosen (typed, browsed, or from the model list).

        The path is stored before anything else touches the parameter node, and choosing the
        stored path again does nothing: a view that re-emits the stored value cannot undo a choice.
        """
        path = "" if path in NO_BUNDLE else str(path)
        if self.parameters is None or (path == self.bundlePath and not force):
            return
        self.parameters.set("bundlePath", path)
        self.info = None
        if not path:
            self.view.showBundle(path, "Choose a model bundle: its slots, labels and validation table show here.", ())
            self._updateApply()
            return
        try:
            self.info = read_bundle_info(path)
        except MAGMSError as err:
            self.view.showBundle(path, str(err), ())
            self._updateApply()
            return
        self.view.showBundle(path, describeBundle(self.info), self.info.slots)
        saved = readSlotMapping(self.parameters.node, self.info.slots)
        if any(saved.values()):
            self._show(saved, {})
        else:
            self.guess()

    def chooseListed(self, itemID: str) -> None:
        """An entry of the model list: a bundle trained here is chosen; a published one waits for Download."""
        if itemID.startswith("local:"):
            self.chooseBundle(itemID[len("local:"):])

    def download(self, itemID: str, keepAlive: Callable[[], None] = lambda: None) -> None:
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
        self._show(mapping, {g.nodeID: g for g in guesses})

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

    def setDevice(self, key: str) -> None:
        if self.parameters is not None:
            self.parameters.set("device", key or "auto")

    def setCompareSubsets(self, on: bool) -> None:
        if self.parameters is not None:
            self.parameters.set("compareSubsets", bool(on))

    def _onDevices(self, devices: list[tuple[str, str]], problem: str) -> None:
        self.devices = devices
        showDeviceList(self.view, devices, self.parameters.get("device") if self.parameters else "auto", problem)

    # --- run -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def _updateApply(self) -> None:
        mapped = any(self.mapping.values())
        self.view.showApply("Cancel" if self.running else "Apply", self.running or (self.info is not None and mapped))

    def applyOrCancel(self, ensureDependencies: Callable[[], bool] = lambda: True) -> None:
        """Apply starts a segmentation of the mapped volumes; while one runs, the button cancels it."""
        if self.running:
            self.cancel()
            return
        if self.info is None or self.parameters is None or not ensureDependencies():
            return
        device = self.parameters.get("device")
        if device not in {key for key, _ in self.devices}:
            self.view.showStatus(f"{device} is not available: running on the CPU")
            device = "cpu"
        self.job = self.newJob()
        self.job.progress.connect(self._onProgress)
        self.job.finished.connect(self._onFinished)
        self.job.failed.connect(self._onFailed)
        self.job.cancelled.connect(self._onCancelled)
        self.started = time.monotonic()
        try:
            self.job.start(self.mapping, self.bundlePath, device=device,
                           subsets="all" if self.parameters.get("compareSubsets") else None, modelName=Path(self.bundlePath).name)
        except MAGMSError as err:
            self.view.showError(f"Cannot segment: {err}")
        self._updateApply()

    def cancel(self) -> None:
        if self.running:
            self.job.cancel()

    def poll(self) -> None:
        """Called by the panel's timer."""
        if self.deviceQuery is not None:
            self.deviceQuery.poll()
        if self.job is not None:
            self.job.poll()
            if self.job.running:
                self.view.showStatus(f"{self.statusText} ({time.monotonic() - self.started:.0f} s)")

    def _onProgress(self, fraction: float, text: str) -> None:
        self.view.showProgress(fraction)
        self.statusText = text

    def _end(self, text: str) -> None:
        self.view.showStatus(f"{text} after {time.monotonic() - self.started:.0f} s")
        self._updateApply()

    def _onFinished(self, nodes: list) -> None:
        self._end("Created " + ", ".join(n.GetName() for n in nodes))
        self.view.showResult(nodes)

    def _onFailed(self, message: str) -> None:
        self.view.showProgress(0.0)
        self._end("Failed")
        self.view.showError(f"Segmentation failed: {message}")

    def _onCancelled(self) -> None:
        self.view.showProgress(0.0)
        self._end("Cancelled; nothing was changed")
