"""What the MAGMS Training panel does, without Qt: settings, enabling, messages, what to run.

The widget (``MAGMSTraining.py``) only binds: each handler makes one call here, and it shows what
this controller tells its :class:`TrainingView`. The settings live on the module's parameter node
under the names of ``magms train``'s options (:class:`magms.commands.TrainOptions`), with its
defaults and ranges. Heavy work runs in child processes: the folder check (``magms train
--check-only``), the device list (``magms devices``) and training itself.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import slicer

from magms.builtin import BuiltinModel, builtin_model
from magms.bundle import read_bundle_info
from magms.commands import TrainOptions
from magms.errors import ConfigError, MAGMSError
from magms.labels import SCHEMES, get_scheme
from magms.modalities import canonical_slots
from MAGMSCommonLib.child import childEnvironment, childPython
from MAGMSCommonLib.devicelist import KNOWN_WITHOUT_ASKING, DeviceQuery, showDeviceList
from MAGMSCommonLib.models import BUILTIN_PREFIX, chosenBundleFolder
from MAGMSCommonLib.parameters import Parameters
from MAGMSCommonLib.runner import ProcessRunner, RunState

from .logic import SceneCase, TrainingJob, checkSceneCases, guessSceneCases, sceneSlots, trainCommand, trainingOptions

__all__ = ["TrainingView", "TrainingController", "DEFAULTS", "NUMBERS", "PLOT_VIEW_TAG", "INIT_FOLDER"]

_TRAIN = TrainOptions.defaults()
#: The panel's settings on the parameter node: magms train's option names and defaults, plus where
#: the data comes from. ``max_minutes`` 0 means no limit (a spin box has no "none"). ``init`` (the
#: weights training starts from) is empty (from scratch), ``builtin:<name>`` or a bundle folder.
DEFAULTS: dict[str, Any] = {
    "source": "folder", "data": "", "out": "", "init": "", "labels": next(iter(SCHEMES)), "slots": "",
    "backbone": _TRAIN["backbone"], "epochs": _TRAIN["epochs"], "max_minutes": _TRAIN["max_minutes"] or 0.0,
    "patch": _TRAIN["patch"][0], "distill": _TRAIN["distill"], "kl_weight": _TRAIN["kl_weight"],
    "feature_weight": _TRAIN["feature_weight"], "device": _TRAIN["device"],
}
#: The numeric settings, whose spin boxes take magms train's ranges.
NUMBERS = ("epochs", "max_minutes", "patch", "kl_weight", "feature_weight")
PLOT_VIEW_TAG = "MAGMSTraining"
NO_PATH = ("", ".")
INIT_FOLDER = "folder"  # the "Fine-tune from" choice that takes the bundle folder of the path field


def numberRange(name: str) -> tuple[float, float]:
    """The (minimum, maximum) of a numeric setting: its magms train option's range."""
    spec = TrainOptions.spec(name)
    return spec.minimum, spec.maximum


class TrainingView(Protocol):
    """What the controller asks the panel to show."""

    def showSettings(self, values: dict[str, Any]) -> None: ...
    def showInit(self, items: Sequence[tuple[str, str]], current: str, folder: str) -> None: ...
    def showDevices(self, items: Sequence[tuple[str, str]], current: str) -> None: ...
    def showSceneCases(self, cases: Sequence[SceneCase], slots: Sequence[str]) -> None: ...
    def showButtons(self, start: bool, stop: bool, resume: bool) -> None: ...
    def showPlot(self, viewNode) -> None: ...
    def showProgress(self, fraction: float) -> None: ...
    def showStatus(self, text: str) -> None: ...
    def showError(self, text: str) -> None: ...


class TrainingController:
    """The Training panel's behaviour.

    Args:
        scene: the MRML scene.
        parameterNode: the module's ``vtkMRMLScriptedModuleNode``.
        view: the panel.
        newJob: makes a :class:`~MAGMSTrainingLib.logic.TrainingJob` (tests inject one).
        newRunner: makes the runner of the data check (tests inject one).
        devices: makes the device query; None lists only what needs no answer.
        builtinModels: the models that ship with MAGMS (:func:`magms.builtin.builtin_models`), offered
            as starting points for fine-tuning; the default stays "from scratch".
        builtinFolder: a built-in model's verified bundle folder by name (:func:`magms.builtin.builtin_model`).
    """

    def __init__(self, scene, parameterNode, view: TrainingView, newJob: Callable[[], TrainingJob],
                 newRunner: Callable[[], ProcessRunner] = ProcessRunner,
                 devices: Callable[[Callable], DeviceQuery] | None = DeviceQuery, python: str | None = None,
                 builtinModels: Sequence[BuiltinModel] = (), builtinFolder: Callable[[str], Path] = builtin_model) -> None:
        self.scene, self.view, self.newJob, self.newRunner = scene, view, newJob, newRunner
        self.builtinModels, self.builtinFolder = list(builtinModels), builtinFolder
        self.python = python or childPython()
        self.devices = list(KNOWN_WITHOUT_ASKING)
        self.deviceQuery = devices(self._onDevices) if devices is not None else None
        self.job: TrainingJob | None = None
        self.check: tuple[ProcessRunner, Path] | None = None
        self.exported: Path | None = None  # a scene data set written for the run
        self.setParameterNode(parameterNode)

    # --- life cycle ------------------------------------------------------------------------

    def setParameterNode(self, parameterNode) -> None:
        self.parameters = Parameters(parameterNode, DEFAULTS) if parameterNode is not None else None
        if self.parameters is not None:
            self.view.showSettings(self.parameters.values())
            self.showInit()
            self.view.showDevices(self.devices, self.parameters.get("device"))
        self._updateButtons()

    def enter(self) -> None:
        if self.deviceQuery is not None:
            self.deviceQuery.startOnce()

    def sceneClosing(self) -> None:
        """The scene closes: the run's table and plot nodes go with it, so the run ends too, and the
        scene cases shown refer to nodes that are gone (their IDs are given to new nodes)."""
        self.cancel()
        self.parameters, self.job, self.exported = None, None, None
        self.view.showSceneCases([], ())

    def cleanup(self) -> None:
        """The module is closed or Slicer exits: end every child process tree."""
        self.cancel()
        for runner in [self.check[0]] if self.check else []:
            runner.cancel()
        if self.deviceQuery is not None:
            self.deviceQuery.cancel()

    # --- settings --------------------------------------------------------------------------

    def set(self, name: str, value: Any) -> None:
        """The user changed one setting."""
        if self.parameters is not None:
            self.parameters.set(name, value)

    def _slots(self) -> tuple[str, ...]:
        return canonical_slots(s for s in self.parameters.get("slots").split(",") if s.strip())

    def settings(self) -> dict[str, Any]:
        """The run's magms train options (all but data and out) from the parameter node."""
        values = self.parameters.values()
        return {
            "labels": values["labels"], "slots": self._slots(), "backbone": values["backbone"], "epochs": values["epochs"],
            "max_minutes": values["max_minutes"] or None, "patch": (values["patch"],), "distill": values["distill"],
            "kl_weight": values["kl_weight"], "feature_weight": values["feature_weight"], "device": values["device"],
            "init": self._initFolder(),
        }

    # --- fine-tuning -----------------------------------------------------------------------

    def showInit(self) -> None:
        """The "Fine-tune from" choices: from scratch, each built-in model, or the bundle folder of the path field."""
        if self.parameters is None:
            return
        init = self.parameters.get("init")
        items = [("", "nothing: train from scratch")]
        items += [(BUILTIN_PREFIX + m.name, f"the built-in model {m.name} {m.version}") for m in self.builtinModels]
        items += [(INIT_FOLDER, "the bundle folder below")]
        current = "" if init in NO_PATH else init if init.startswith(BUILTIN_PREFIX) else INIT_FOLDER
        self.view.showInit(items, current, init if current == INIT_FOLDER else "")

    def chooseInit(self, choice: str, folder: str = "") -> None:
        """A "Fine-tune from" choice: ``""`` (from scratch), ``builtin:<name>``, or :data:`INIT_FOLDER`
        with the path field's ``folder``. The settings that make the network (slots, label scheme,
        backbone, patch) are set to the chosen bundle's: fine-tuning needs the same network."""
        if self.parameters is None:
            return
        value = (folder if folder not in NO_PATH else "") if choice == INIT_FOLDER else choice
        self.set("init", value)
        if value:
            self._matchNetwork()
        elif choice == INIT_FOLDER:
            self.view.showStatus("Choose the bundle to fine-tune from in the path field")
        self.showInit()

    def chooseInitFolder(self, folder: str) -> None:
        """A bundle folder was typed or browsed in the "Fine-tune from" path field."""
        self.chooseInit(INIT_FOLDER, folder)

    def _initFolder(self) -> Path | None:
        """The bundle whose weights start the run (a built-in model's weights checked by sha256), or None."""
        init = self.parameters.get("init")
        if init in NO_PATH:
            return None
        return chosenBundleFolder(init, self.builtinFolder)

    def _matchNetwork(self) -> None:
        """Set slots, label scheme, backbone and patch to those of the ``init`` bundle, and say so."""
        try:
            folder = self._initFolder()
            info = read_bundle_info(folder)
        except MAGMSError as err:  # a folder being typed, or a built-in model without its weights
            self.view.showStatus(f"Cannot fine-tune from it: {err}")
            return
        network = info.network
        matched = {"slots": ",".join(network.slots), "backbone": network.backbone}
        if info.scheme.key in SCHEMES:
            matched["labels"] = info.scheme.key
        if len(set(network.img_size)) == 1:
            matched["patch"] = network.img_size[0]
        for name, value in matched.items():
            self.set(name, value)
        self.view.showSettings(self.parameters.values())
        told = ", ".join(f"{name} {value}" for name, value in matched.items())
        self.view.showStatus(f"Fine-tuning from {folder.name}: {told}, as the model has (fine-tuning needs the same network)")

    def _path(self, name: str, what: str) -> Path:
        value = self.parameters.get(name) if self.parameters is not None else ""
        if value in NO_PATH:
            raise ConfigError(f"choose {what} first")
        return Path(value)

    def _onDevices(self, devices: list[tuple[str, str]], problem: str) -> None:
        self.devices = devices
        showDeviceList(self.view, devices, self.parameters.get("device") if self.parameters else "auto", problem)

    # --- data ------------------------------------------------------------------------------

    def findCases(self) -> None:
        """One case per segmentation node of the scene, its volumes guessed."""
        if self.parameters is None:  # the scene is closing
            return
        try:
            slots = self._slots() or ("flair", "t1", "t1c", "t2")
        except MAGMSError as err:  # an unknown name in the slots field
            self.view.showError(f"Cannot list the cases: {err}")
            return
        cases = guessSceneCases(self.scene, slots)
        self.set("source", "scene" if cases else "folder")
        self.view.showSceneCases(cases, slots)
        self.view.showSettings(self.parameters.values())
        self.view.showStatus(f"{len(cases)} case(s) found: check the volume of each slot")

    def checkData(self, sceneCases: Sequence[SceneCase] = ()) -> None:
        """Check the data as training will: scene cases here (MRML only), a folder in a child process."""
        if self.parameters is None:  # the scene is closing
            return
        try:
            if self.parameters.get("source") == "scene":
                slots = self._slots() or sceneSlots(sceneCases)
                checkSceneCases(self.scene, sceneCases, slots, get_scheme(self.parameters.get("labels")))
                self.view.showStatus(f"{len(sceneCases)} scene case(s) are fine")
                return
            data = self._path("data", "the data folder")
            options = trainingOptions(data, Path(tempfile.gettempdir()), {**self.settings(), "check_only": True})
        except MAGMSError as err:
            self.view.showError(f"The data has problems:\n{err}")
            return
        self._startCheck(options)

    def _startCheck(self, options: TrainOptions) -> None:
        """``magms train --check-only`` in a child: reading every case needs SimpleITK, and the checks
        are those of training itself."""
        folder = Path(tempfile.mkdtemp(prefix="magms-check-"))
        runner = self.newRunner()
        runner.finished.connect(lambda state, message: self._onChecked(state, message, folder))
        runner.start(trainCommand(self.python, options, folder / "check.json"), env=childEnvironment(), stdout=folder / "result.txt")
        self.check = (runner, folder)
        self.view.showStatus("Checking every case...")

    def _onChecked(self, state: RunState, message: str, folder: Path) -> None:
        result = (folder / "result.txt").read_text(encoding="utf-8").strip() if (folder / "result.txt").is_file() else ""
        shutil.rmtree(folder, ignore_errors=True)
        self.check = None
        if state is RunState.SUCCEEDED:
            self.view.showStatus(result or "The data is fine")
        elif state is RunState.FAILED:
            self.view.showError(f"The data has problems:\n{message}")

    # --- training --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def _updateButtons(self) -> None:
        ready = self.parameters is not None and not self.running
        self.view.showButtons(ready, self.running, ready)

    def start(self, sceneCases: Sequence[SceneCase] = (), resume: bool = False,
              ensureDependencies: Callable[[], bool] = lambda: True) -> None:
        """Start (or resume) training with the panel's settings; errors are shown, nothing raised."""
        if self.running or self.parameters is None or not ensureDependencies():
            return
        try:
            out = self._path("out", "an output folder for the model")
            # a new run gets a new job: its own table and curves (a resume continues the same ones)
            job = self.job if resume and self.job is not None else self._newJob()
            if resume:
                job.resume(self.exported or self._path("data", "the data folder"), out, self.settings())
            elif self.parameters.get("source") == "scene":
                self.exported = job.startFromScene(sceneCases, out, self.settings())
            else:
                self.exported = None
                job.start(self._path("data", "the data folder"), out, self.settings())
        except MAGMSError as err:
            self.view.showError(f"Cannot start training: {err}")
            return
        self.view.showPlot(self.plotView())
        self.view.showStatus("Resuming..." if resume else "Starting...")
        self._updateButtons()

    def _newJob(self) -> TrainingJob:
        self.job = self.newJob()
        self.job.progress.connect(lambda fraction, text: (self.view.showProgress(fraction), self.view.showStatus(text)))
        self.job.finished.connect(lambda bundle: self._ended(f"Finished: {bundle} (listed in MAGMS Segmenter)"))
        self.job.stopped.connect(lambda: self._ended("Stopped; press Resume to continue from the checkpoint"))
        self.job.failed.connect(self._onFailed)
        return self.job

    def plotView(self):
        """The panel's own plot view node (one per scene, found by its tag), showing the run's chart.

        Its parent layout node is the module's parameter node, so the main layout does not make it one
        of its views when it is added (after a scene load Slicer makes a hidden widget for every view
        node all the same), and it takes no chart another module shows (chart selection is propagated to
        every plot view that allows it, vtkMRMLApplicationLogic::PropagatePlotChartSelection). Close
        Scene resets the node, so both are set again at every call.
        """
        view = self.scene.GetSingletonNode(PLOT_VIEW_TAG, "vtkMRMLPlotViewNode")
        added = view is None
        if added:
            view = slicer.vtkMRMLPlotViewNode()
            view.SetSingletonTag(PLOT_VIEW_TAG)
            view.SetName("MAGMS training plot")
        # before AddNode: a view node added without a parent becomes a (hidden) view of the main layout
        view.SetDoPropagatePlotChartSelection(False)
        if self.parameters is not None:
            view.SetAndObserveParentLayoutNodeID(self.parameters.node.GetID())
        if added:
            view = self.scene.AddNode(view)
        view.SetPlotChartNodeID(self.job.chart.GetID())
        return view

    def stop(self) -> None:
        """Ask the run to save its checkpoint and stop; Resume continues from there."""
        if self.running:
            self.job.stop()
            self.view.showStatus("Stopping: the checkpoint is being written...")

    def cancel(self) -> None:
        if self.running:
            self.job.cancel()

    def poll(self) -> None:
        """Called by the panel's timer."""
        for runner in ([self.check[0]] if self.check else []):
            runner.poll()
        if self.deviceQuery is not None:
            self.deviceQuery.poll()
        if self.job is not None:
            self.job.poll()
        self._updateButtons()

    def _ended(self, text: str) -> None:
        self.view.showStatus(text)
        self._updateButtons()

    def _onFailed(self, message: str) -> None:
        self._updateButtons()
        self.view.showError(f"Training failed: {message}")

