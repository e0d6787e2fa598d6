"""The panels' controllers on the real MRML of `slicer-core`, with stand-in views: each test
reproduces what a user of the real Slicer panel hit (the findings read against Slicer's source)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[test]')")

from conftest import DATA, REPO, load_scene_volume, make_bundle, needs_data, scene_volume  # noqa: E402
from magms.protocol import RUN_OPTIONS_FILE  # noqa: E402
from MAGMSCommonLib.runner import ProcessRunner, RunState  # noqa: E402
from MAGMSCommonLib.signal import Signal  # noqa: E402
from MAGMSSegmenterLib.controller import SegmenterController  # noqa: E402
from MAGMSTrainingLib import logic as training  # noqa: E402
from MAGMSTrainingLib.controller import DEFAULTS, PLOT_VIEW_TAG, TrainingController  # noqa: E402

SHAPE = (20, 22, 24)


class View:
    """Records what a controller shows; ``on`` hooks let a test act like Qt would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.on: dict = {}

    def __getattr__(self, name):
        if not name.startswith("show"):
            raise AttributeError(name)

        def record(*args):
            self.calls.append((name, args))
            if name in self.on:
                self.on[name](*args)

        return record

    def last(self, name):
        return next((args for n, args in reversed(self.calls) if n == name), None)


def parameter_node(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "MAGMS parameters")
    return node




@pytest.fixture
def bundle(tmp_path):
    from magms.config import PreprocessConfig

    return make_bundle(tmp_path / "bundle", "msd_task01", slots=("flair", "t1c"), seed=None,
                       preprocessing=PreprocessConfig(patch_size=(16, 16, 16)))


# --- Segmenter -----------------------------------------------------------------------------------


def test_choosing_a_bundle_with_volumes_loaded_keeps_it(bundle, tmp_path):
    """Finding 1. In Slicer, writing the slot mapping modified the parameter node, the GUI was then
    refreshed from the node's OLD bundle path, and the path field re-emitted it: the choice snapped back.
    The stand-in view does what Qt and the node observer did: re-emit the stored path on every
    modification of the parameter node."""
    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "AX FLAIR", np.random.default_rng(0).normal(size=SHAPE))
    scene_volume(scene, "T1 POST GAD", np.random.default_rng(1).normal(size=SHAPE))
    node = parameter_node(scene)
    view = View()
    controller = SegmenterController(scene, node, view, newJob=lambda: None, localBundles=lambda: [], devices=None)
    shown = {"path": ""}

    def gui_refresh(caller, event):  # the wrapper's observer + ctkPathLineEdit::setCurrentPath
        stored = controller.bundlePath
        if stored != shown["path"]:
            shown["path"] = stored
            controller.chooseBundle(stored)

    node.AddObserver("ModifiedEvent", gui_refresh)
    controller.chooseBundle(str(bundle))
    assert controller.bundlePath == str(bundle)
    assert controller.info is not None and controller.info.slots == ("flair", "t1c")
    mapping = view.last("showMapping")[0]
    assert {slot: scene.GetNodeByID(i).GetName() for slot, i in mapping.items()} == {"flair": "AX FLAIR", "t1c": "T1 POST GAD"}
    assert view.last("showApply") == ("Apply", True)
    controller.chooseBundle(".")  # an emptied path field
    assert controller.bundlePath == "" and controller.info is None and view.last("showApply") == ("Apply", False)


def test_a_scene_closed_and_reopened_gets_a_working_panel(bundle):
    """Finding 8: after Close Scene every button raised until the module was entered again."""
    scene = slicer.vtkMRMLScene()
    view = View()
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: None, localBundles=lambda: [], devices=None)
    controller.chooseBundle(str(bundle))
    controller.sceneClosing()
    scene.Clear()
    controller.guess(), controller.applyOrCancel(), controller.poll()  # nothing raises while closed
    controller.setParameterNode(parameter_node(scene))
    assert controller.bundlePath == "" and view.last("showBundle")[0] == ""
    controller.chooseBundle(str(bundle))
    assert controller.info is not None


def test_opening_either_panel_imports_no_torch():
    """Finding 12: listing devices imported torch into Slicer just to open a module. The skull-strip detection
    shown for the mapped volumes imports neither torch nor SimpleITK either (magms.data.skull is numpy only)."""
    code = """
import sys
sys.path[:0] = [{common!r}, {segmenter!r}, {training!r}]
import slicer
from MAGMSSegmenterLib.controller import SegmenterController
from MAGMSTrainingLib.controller import TrainingController
from MAGMSCommonLib.runner import ProcessRunner

class View:
    def __getattr__(self, name):
        return lambda *args: None

scene = slicer.vtkMRMLScene()
node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
segmenter = SegmenterController(scene, node, View(), newJob=lambda: None, localBundles=lambda: [])
trainer = TrainingController(scene, node, View(), newJob=lambda: None)
segmenter.enter(), trainer.enter()
while segmenter.deviceQuery.runner.running or trainer.deviceQuery.runner.running:
    segmenter.poll(), trainer.poll()
import numpy as np
from vtk.util import numpy_support
import vtk
image = vtk.vtkImageData()
image.SetDimensions(8, 7, 6)
image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.arange(336, dtype=np.float32), deep=True))
volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "AX FLAIR")
volume.SetAndObserveImageData(image)
segmenter.mappingChanged({{"flair": volume.GetID()}})  # the skull-strip detection of Part B, in the panel's process
assert "looks" in segmenter.preprocessText(), segmenter.preprocessText()
heavy = [m for m in ("torch", "monai", "SimpleITK") if m in sys.modules]
assert not heavy, heavy
print([key for key, _ in segmenter.devices])
""".format(common=str(REPO / "MAGMSCommon"), segmenter=str(REPO / "MAGMSSegmenter"), training=str(REPO / "MAGMSTraining"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'cpu'" in result.stdout  # the child answered: magms devices


# --- Training ------------------------------------------------------------------------------------


class FakeRunner:
    """A runner that starts nothing: what would run is recorded."""

    def __init__(self) -> None:
        self.progress, self.output, self.finished = Signal(int, int), Signal(str), Signal(RunState, str)
        self.commands: list = []
        self.running = False

    def start(self, command, env=None, cwd=None, stdout=None):
        self.commands.append(command)
        self.running = True

    def poll(self):
        return RunState.RUNNING

    def cancel(self):
        self.running = False


def training_controller(scene, tmp_path, **kw):
    view = View()
    runner = FakeRunner()
    newJob = kw.pop("newJob", lambda: training.TrainingJob(scene, python="python", runner=runner, localModels=tmp_path / "l.json"))
    return TrainingController(scene, parameter_node(scene), view, newJob=newJob, devices=None, **kw), view, runner


def test_start_without_an_output_folder_is_refused(tmp_path):
    """Finding 6: an empty output folder meant Slicer's working directory."""
    scene = slicer.vtkMRMLScene()
    controller, view, runner = training_controller(scene, tmp_path)
    controller.set("data", str(tmp_path))
    controller.start()
    assert "choose an output folder for the model first" in view.last("showError")[0]
    assert runner.commands == [] and not controller.running
    controller.set("out", ".")  # what an emptied path field holds
    controller.start()
    assert runner.commands == []


def test_the_curves_chart_and_table_reach_the_views_scene(tmp_path):
    """Finding 3: the plot widget never got the scene; the chart also went to the layout's first plot view."""
    scene = slicer.vtkMRMLScene()
    layout_view = scene.AddNewNodeByClass("vtkMRMLPlotViewNode", "PlotView1")  # the layout's
    controller, view, runner = training_controller(scene, tmp_path)
    controller.set("data", str(tmp_path)), controller.set("out", str(tmp_path / "out")), controller.set("labels", "brats2013")
    controller.start()
    plot_view = view.last("showPlot")[0]
    assert plot_view is not layout_view and scene.GetSingletonNode(PLOT_VIEW_TAG, "vtkMRMLPlotViewNode") is plot_view
    chart = scene.GetNodeByID(plot_view.GetPlotChartNodeID())
    assert chart is controller.job.chart and scene.GetNodeByID(controller.job.table.GetID()) is controller.job.table
    assert layout_view.GetPlotChartNodeID() is None
    assert runner.commands[0][-2:] == ["--config", str(tmp_path / "out" / RUN_OPTIONS_FILE)]


def test_check_the_data_runs_in_a_child_with_the_checks_of_magms_train(tiny_data, tmp_path):
    """Finding 4: "Check the data" imported magms.training (torch, MONAI) into Slicer, and failed
    before the dependencies were installed. Now it is ``magms train --check-only`` in a child."""
    scene = slicer.vtkMRMLScene()
    runners = []
    controller, view, _ = training_controller(scene, tmp_path, newRunner=lambda: runners.append(ProcessRunner()) or runners[-1],
                                              python=sys.executable)
    controller.set("data", str(tiny_data)), controller.set("labels", "brats2013")
    controller.checkData()
    assert runners and runners[0].pid is not None  # a child process, not Slicer's
    while runners[0].running:
        controller.poll()
        time.sleep(0.05)
    assert view.last("showStatus") == ("3 case(s) are fine; slots flair",)
    (tiny_data / "c1" / "OTMultiClass.nii.gz").unlink()
    controller.checkData()
    while runners[1].running:
        controller.poll()
        time.sleep(0.05)
    assert "c1: no label file" in view.last("showError")[0]


def test_after_a_scene_close_every_button_works(tmp_path):
    """Finding 8, Training: after Close Scene every button raised."""
    scene = slicer.vtkMRMLScene()
    controller, view, runner = training_controller(scene, tmp_path)
    controller.sceneClosing()
    scene.Clear()
    controller.start(), controller.stop(), controller.poll(), controller.checkData()  # closed: nothing happens, nothing raises
    controller.setParameterNode(parameter_node(scene))
    controller.findCases()
    controller.start()
    assert "choose an output folder" in view.last("showError")[0]
    assert view.last("showButtons") == (True, False, True)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    label = np.zeros(SHAPE, np.uint8)
    label[5:12, 6:14, 7:15] = 2
    label[7:10, 8:11, 9:12] = 4
    for k in range(3):
        case = tmp_path / "data" / f"c{k}"
        case.mkdir(parents=True)
        sitk.WriteImage(sitk.GetImageFromArray((label + rng.normal(5, 1, SHAPE)).astype(np.float32)), str(case / "Flair.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(case / "OTMultiClass.nii.gz"))
    return tmp_path / "data"


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in launcher is a POSIX shell script")
def test_stop_reaches_the_trainer_through_a_launcher_that_forwards_no_signal(tiny_data, tmp_path):
    """Finding 2: PythonSlicer does not forward SIGTERM to python-real, so Stop did not stop training,
    the run was reported as failed and no bundle was registered. The stand-in launcher is a shell
    that runs Python as its child and forwards nothing."""
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    out = tmp_path / "model"
    settings = {"labels": "brats2013", "epochs": 500, "patch": (16,), "spacing": 0.0, "channels": (4, 8, 16),
                "device": "cpu", "val_fraction": 0.0, "batch_size": 1}
    job = training.TrainingJob(slicer.vtkMRMLScene(), python=str(launcher), localModels=tmp_path / "l.json")
    stopped, failed, steps = [], [], []
    job.stopped.connect(lambda: stopped.append(True))
    job.failed.connect(failed.append)
    job.runner.progress.connect(lambda step, total: steps.append(step))
    job.start(tiny_data, out, settings)
    deadline = time.monotonic() + 240
    while job.running and len(steps) < 3:
        job.poll()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.stop()
    while job.running:
        job.poll()
        assert time.monotonic() < deadline, "the stop request did not reach the trainer"
        time.sleep(0.05)
    job.poll()
    assert stopped == [True] and failed == []  # stopped, not failed
    import json

    assert json.loads((out / "checkpoint" / "state.json").read_text(encoding="utf-8"))["step"] >= 3
    assert _processes_mentioning(str(out)) == []
    # cancel (and module cleanup, which cancels) ends the whole tree: launcher and Python
    job.resume(tiny_data, out, settings)
    while job.running and not _processes_mentioning(f"{sys.executable} -m magms"):
        job.poll()
        time.sleep(0.05)
    job.cancel()
    assert _processes_mentioning(str(out)) == []


def test_the_panels_plot_takes_no_other_chart_and_a_new_run_gets_new_curves(tmp_path):
    """Review findings: chart selection of other modules is propagated to every plot view that allows
    it, and a second Start appended its rows to the first run's table."""
    scene = slicer.vtkMRMLScene()
    controller, view, runner = training_controller(scene, tmp_path)
    controller.set("data", str(tmp_path)), controller.set("out", str(tmp_path / "a")), controller.set("labels", "brats2013")
    controller.start()
    first_job, first_table = controller.job, controller.job.table
    plot_view = view.last("showPlot")[0]
    assert not plot_view.GetDoPropagatePlotChartSelection()
    assert plot_view.GetParentLayoutNode() is controller.parameters.node  # not one of the layout's views
    controller.job.runner.running = False
    controller.set("out", str(tmp_path / "b"))
    controller.start()
    assert controller.job is not first_job and controller.job.table is not first_table
    assert scene.GetNodeByID(plot_view.GetPlotChartNodeID()) is controller.job.chart
    controller.sceneClosing()
    assert view.last("showSceneCases") == ([], ()) and controller.job is None


def test_a_loaded_scene_reaches_the_panel(tmp_path):
    """Review finding: loading a scene copies its values into the existing parameter node without a
    close event; the panel showed the old values while Start read the loaded ones."""
    from MAGMSCommonLib.widgets import ControllerPanel

    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLScriptedModuleNode()
    node.SetSingletonTag("MAGMSTraining")  # as ScriptedLoadableModuleLogic.getParameterNode makes it
    node = scene.AddNode(node)
    saved = slicer.vtkMRMLScene()
    other = slicer.vtkMRMLScriptedModuleNode()
    other.SetSingletonTag("MAGMSTraining")
    other.SetParameter("epochs", "200")
    saved.AddNode(other)
    saved.SetURL(str(tmp_path / "saved.mrml"))
    assert saved.Commit()

    class Panel(ControllerPanel):
        def addObserver(self, obj, event, callback):
            obj.AddObserver(event, lambda caller, e: callback(caller, e))

    panel = Panel()
    view = View()
    panel.controller = TrainingController(scene, node, view, newJob=lambda: None, devices=None)
    panel.logic = type(
        "Logic", (), {"getParameterNode": lambda self: scene.GetSingletonNode("MAGMSTraining", "vtkMRMLScriptedModuleNode")})()
    panel.observeScene(scene)
    assert view.last("showSettings")[0]["epochs"] == DEFAULTS["epochs"] != 200
    scene.SetURL(str(tmp_path / "saved.mrml"))
    assert scene.Import()
    assert view.last("showSettings")[0]["epochs"] == 200
    scene.RemoveAllObservers()  # the panel goes before the scene


# --- the built-in model --------------------------------------------------------------------------


class RecordingJob:
    """A segmentation job that records what it was asked to run."""

    def __init__(self) -> None:
        self.progress, self.finished, self.failed, self.cancelled = Signal(float, str), Signal(list), Signal(str), Signal()
        self.started: list = []
        self.running = False

    def start(self, mapping, bundle, **kwargs):
        self.started.append((bundle, kwargs))
        self.running = True

    def poll(self):
        pass

    def cancel(self):
        self.running = False


def _damage_index(folder) -> None:
    import json

    index = json.loads((folder / "models.json").read_text(encoding="utf-8"))
    index["models"][0]["sha256"] = "3" * 64
    (folder / "models.json").write_text(json.dumps(index))


def test_the_segmenter_lists_the_builtin_model_first_and_chooses_it_while_nothing_else_is(builtin_models_folder, bundle):
    from magms.builtin import builtin_models

    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "AX FLAIR", np.random.default_rng(0).normal(size=SHAPE))
    view, jobs = View(), []
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: jobs.append(RecordingJob()) or jobs[-1],
                                     localBundles=lambda: [bundle], devices=None, builtinModels=builtin_models())
    folder = builtin_models_folder / "tiny-4seq"
    controller.enter()
    items, current, downloadable = view.last("showModels")
    assert items[0] == ("builtin:tiny-4seq", "tiny-4seq 1 (built in)") and current == "builtin:tiny-4seq" and not downloadable
    assert controller.bundlePath == "builtin:tiny-4seq" and controller.folder == folder  # no download: the installed folder
    assert view.last("showBundle")[0] == str(folder) and view.last("showBundle")[2] == ("flair", "t1", "t1c", "t2")
    assert view.last("showApply") == ("Apply", True)  # the FLAIR volume was placed
    controller.applyOrCancel()
    assert jobs[0].started[0][0] == folder and jobs[0].started[0][1]["modelName"] == "tiny-4seq"
    jobs[0].running = False
    controller.chooseListed(f"local:{bundle}")
    assert controller.folder == bundle and view.last("showModels")[1] == f"local:{bundle}"
    controller.download("builtin:tiny-4seq")
    assert controller.folder == folder and view.last("showStatus") == ("tiny-4seq is built in: nothing to download",)


def test_the_segmenter_refuses_builtin_weights_that_differ_from_the_index(builtin_models_folder):
    from magms.builtin import builtin_models

    _damage_index(builtin_models_folder)
    scene = slicer.vtkMRMLScene()
    view = View()
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: None, localBundles=lambda: [],
                                     devices=None, builtinModels=builtin_models())
    path, text, slots = view.last("showBundle")
    assert path == "" and slots == () and text.startswith(f"{builtin_models_folder / 'tiny-4seq' / 'model.safetensors'}: sha256 ")
    assert controller.info is None and controller.folder is None and view.last("showApply") == ("Apply", False)


def test_training_offers_the_builtin_model_to_start_from_and_takes_its_network(builtin_models_folder, tmp_path):
    import json

    from magms.builtin import builtin_models

    scene = slicer.vtkMRMLScene()
    controller, view, runner = training_controller(scene, tmp_path, builtinModels=builtin_models())
    items, current, folder = view.last("showInit")
    assert items[:2] == [("", "nothing: train from scratch"), ("builtin:tiny-4seq", "the built-in model tiny-4seq 1")]
    assert (current, folder) == ("", "") and controller.settings()["init"] is None  # from scratch by default
    controller.chooseInit("builtin:tiny-4seq")
    assert view.last("showInit")[1:] == ("builtin:tiny-4seq", "")
    assert controller.settings()["init"] == builtin_models_folder / "tiny-4seq"
    values = view.last("showSettings")[0]
    assert (values["slots"], values["labels"], values["backbone"], values["patch"]) == ("flair,t1,t1c,t2", "brats2021", "unet", 16)
    assert view.last("showStatus")[0].startswith("Fine-tuning from tiny-4seq: slots flair,t1,t1c,t2, backbone unet, labels brats2021")
    controller.set("data", str(tmp_path)), controller.set("out", str(tmp_path / "out"))
    controller.start()
    options = json.loads((tmp_path / "out" / RUN_OPTIONS_FILE).read_text(encoding="utf-8"))
    assert (options["init"], options["slots"], options["patch"]) == (
        str(builtin_models_folder / "tiny-4seq"), ["flair", "t1", "t1c", "t2"], [16])
    controller.chooseInitFolder(str(tmp_path / "mine"))  # a folder typed in the path field
    assert view.last("showInit")[1:] == ("folder", str(tmp_path / "mine")) and controller.settings()["init"] == tmp_path / "mine"
    controller.chooseInit("")
    assert controller.settings()["init"] is None


def test_training_from_damaged_builtin_weights_is_refused_naming_the_file(builtin_models_folder, tmp_path):
    from magms.builtin import builtin_models

    _damage_index(builtin_models_folder)
    scene = slicer.vtkMRMLScene()
    controller, view, runner = training_controller(scene, tmp_path, builtinModels=builtin_models())
    controller.chooseInit("builtin:tiny-4seq")
    assert "model.safetensors: sha256" in view.last("showStatus")[0]
    controller.set("data", str(tmp_path)), controller.set("out", str(tmp_path / "out"))
    controller.start()
    assert "Cannot start training" in view.last("showError")[0] and "model.safetensors: sha256" in view.last("showError")[0]
    assert runner.commands == []


# --- the Segmenter's Export to DICOM and compare-subsets messages ----------------------------------


class RecordingExportJob:
    """An export job that records what it was asked to export."""

    def __init__(self) -> None:
        self.progress, self.finished, self.failed, self.cancelled = Signal(float, str), Signal(list), Signal(str), Signal()
        self.started: list = []
        self.running = False

    def start(self, segmentationNode, bundle, folder, formatKey, lookup, positions=None):
        self.started.append((segmentationNode, bundle, folder, formatKey, lookup))
        self.running = True

    def poll(self):
        pass

    def cancel(self):
        self.running = False
        self.cancelled.emit()


def _export_scene(dicom: bool = True):
    from MAGMSCommonLib.volumes import ensureSegmentationConverters

    scene = slicer.vtkMRMLScene()
    volume = scene_volume(scene, "3: AX FLAIR", np.random.default_rng(0).normal(size=SHAPE))
    if dicom:  # one instance per slice, as Slicer's DICOMScalarVolumePlugin records them
        volume.SetAttribute("DICOM.instanceUIDs", " ".join(f"1.2.3.{k + 1}" for k in range(SHAPE[0])))
    ensureSegmentationConverters()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reviewed")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return scene, volume, segmentation


def test_export_is_enabled_only_when_it_can_run_and_says_why_not(bundle, tmp_path):
    scene, volume, segmentation = _export_scene()
    view, jobs = View(), []
    lookup = {"1.2.3.1": "a.dcm"}.get
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: None, localBundles=lambda: [], devices=None,
                                     newExportJob=lambda: jobs.append(RecordingExportJob()) or jobs[-1], dicomFiles=lookup)
    assert view.last("showExportSettings") == (export_module().EXPORT_FORMAT_ITEMS, "both", "")
    assert view.last("showExport") == ("Export to DICOM", False, "Choose a segmentation to export.")
    controller.export.setExportSegmentation(segmentation.GetID())
    assert view.last("showExport")[2] == "Choose the model whose labels the segmentation has (Model, above)."
    controller.chooseBundle(str(bundle))
    assert view.last("showExport") == ("Export to DICOM", False, "Choose a folder for the DICOM files.")
    controller.export.setExportFolder(str(tmp_path))
    assert view.last("showExport") == ("Export to DICOM", True,
                                       f"Writes an RT Structure Set and a DICOM SEG of 'reviewed' into {tmp_path}, "
                                       "referencing the DICOM series of its reference volume.")
    controller.export.setExportFormat("seg")
    assert view.last("showExport")[2].startswith("Writes a DICOM SEG of 'reviewed'")
    # kept on the parameter node (saved with the scene) and shown again from it
    assert (controller.parameters.get("exportFormat"), controller.parameters.get("exportFolder")) == ("seg", str(tmp_path))
    controller.setParameterNode(controller.parameters.node)
    assert view.last("showExportSettings")[1:] == ("seg", str(tmp_path)) and view.last("showExportSegmentation") == (segmentation.GetID(),)

    # the packages are asked for first; declined: nothing starts
    controller.export.exportOrCancel(ensureDependencies=lambda kinds: False)
    assert jobs == []
    controller.export.exportOrCancel()
    assert jobs[0].started == [(segmentation, bundle, str(tmp_path), "seg", lookup)]
    assert view.last("showExport") == ("Cancel export", True, "Exporting...")
    jobs[0].running = False
    jobs[0].finished.emit([tmp_path / "reviewed.seg.dcm"])
    assert view.last("showStatus") == (f"Exported to DICOM: {tmp_path / 'reviewed.seg.dcm'}",)
    assert view.last("showExport")[:2] == ("Export to DICOM", True)
    controller.export.exportOrCancel()
    jobs[1].running = False
    jobs[1].failed.emit("reviewed.nrrd: holds values [3] that are not labels")
    assert view.last("showError") == ("Export to DICOM failed: reviewed.nrrd: holds values [3] that are not labels",)
    controller.export.exportOrCancel()
    controller.export.exportOrCancel()  # the button cancels while it runs
    assert not jobs[2].running and view.last("showStatus") == ("Export cancelled; nothing was written",)


def test_export_of_a_volume_not_loaded_from_dicom_is_disabled_naming_slicerrt(bundle, tmp_path):
    scene, volume, segmentation = _export_scene(dicom=False)
    view, jobs = View(), []
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: None, localBundles=lambda: [], devices=None,
                                     newExportJob=lambda: jobs.append(RecordingExportJob()) or jobs[-1])
    controller.chooseBundle(str(bundle))
    controller.export.setExportFolder(str(tmp_path))
    controller.export.setExportSegmentation(segmentation.GetID())
    text, enabled, hint = view.last("showExport")
    assert not enabled and "'3: AX FLAIR', the reference volume of 'reviewed', was not loaded from Slicer's DICOM database" in hint
    assert "SlicerRT" in hint
    controller.export.exportOrCancel()
    assert jobs == [] and view.last("showError")[0].startswith("Cannot export: '3: AX FLAIR', the reference volume")


def test_export_refusals_from_the_job_are_shown_and_leave_the_button_ready(bundle, tmp_path):
    """What only the job can check (the DICOM database's files, the packages, the segment names) is shown as an error."""
    from magms.devices import DICOM_REQUIREMENTS, RequirementState
    from MAGMSSegmenterLib.logic import ExportJob

    scene, volume, segmentation = _export_scene()
    view = View()
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: None, localBundles=lambda: [], devices=None,
                                     newExportJob=lambda: ExportJob(scene, runner=FakeRunner(),
                                                                    unmet=lambda kinds: [RequirementState(DICOM_REQUIREMENTS[2], None)]))
    controller.chooseBundle(str(bundle))
    controller.export.setExportFolder(str(tmp_path))
    controller.export.setExportSegmentation(segmentation.GetID())
    controller.export.exportOrCancel()
    assert view.last("showError")[0].startswith("Cannot export: Export to DICOM needs these Python packages:")
    assert "rt-utils>=1.2.7: not installed" in view.last("showError")[0]
    assert view.last("showExport")[:2] == ("Export to DICOM", True) and not controller.export.exporting


def test_a_finished_compare_run_shows_the_disagreement_map_and_the_report_and_offers_the_fullest_for_export(bundle, tmp_path):
    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "AX FLAIR", np.random.default_rng(0).normal(size=SHAPE))
    view, jobs = View(), []
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: jobs.append(RecordingJob()) or jobs[-1],
                                     localBundles=lambda: [], devices=None)
    controller.chooseBundle(str(bundle))
    controller.setCompareSubsets(True)
    controller.applyOrCancel()  # one volume: nothing to compare with
    assert view.last("showStatus") == ("Compare subsets needs two or more volumes: segmenting once",)
    assert jobs[0].started[0][1]["subsets"] == "all"
    job = jobs[0]
    nodes = [scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name) for name in ("a (flair)", "a (t1c)", "a (flair+t1c)")]
    job.disagreementNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "a disagreement")
    job.compared, job.reportFolder = 2, tmp_path / "report"
    job.running = False
    job.finished.emit(nodes)
    status = view.last("showStatus")[0]
    assert status.startswith("Created a (flair), a (t1c), a (flair+t1c). The disagreement map 'a disagreement'")
    assert "0 to 2" in status and f"Report: {tmp_path / 'report' / 'report.md'}" in status
    assert view.last("showExportSegmentation") == (nodes[-1].GetID(),) and controller.export.exportSegmentation() is nodes[-1]


def export_module():
    from MAGMSSegmenterLib import exportcontroller

    return exportcontroller


def controller_module():
    from MAGMSSegmenterLib import controller

    return controller


# --- the review's findings on the panel -------------------------------------------------------------


def _export_controller(bundle, tmp_path, **kw):
    scene, volume, segmentation = _export_scene()
    view, jobs = View(), []
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: None, localBundles=lambda: [], devices=None,
                                     newExportJob=kw.pop("newExportJob", lambda: jobs.append(RecordingExportJob()) or jobs[-1]), **kw)
    controller.chooseBundle(str(bundle))
    controller.export.setExportFolder(str(tmp_path))
    controller.export.setExportSegmentation(segmentation.GetID())
    return scene, volume, segmentation, view, controller, jobs


def test_the_export_button_is_off_while_packages_install_and_only_the_chosen_objects_packages_are_asked_for(bundle, tmp_path):
    """Findings 5 and 11: Slicer's pip runs Qt's event loop, and the Export button stayed enabled meanwhile;
    a SEG-only export asked for rt-utils too."""
    scene, volume, segmentation, view, controller, jobs = _export_controller(bundle, tmp_path)
    controller.export.setExportFormat("seg")
    seen = []

    def install(kinds):
        seen.append((kinds, view.last("showExport")))
        segmentation.Modified()  # an observed node changes while pip runs: the button stays off
        seen.append(view.last("showExport"))
        controller.export.exportOrCancel(lambda kinds: True)  # a click that reaches the controller all the same starts nothing
        controller.applyOrCancel(lambda brain, engine: True)
        return True

    controller.export.exportOrCancel(install)
    assert seen[0][0] == ("seg",) and seen[0][1][:2] == seen[1][:2] == ("Installing packages...", False)
    assert len(jobs) == 1 and view.last("showExport") == ("Cancel export", True, "Exporting...")
    # the Apply button likewise, and the question says whether deepbet is needed
    asked = []
    controller.mappingChanged({"flair": volume.GetID(), "t1c": None})
    controller.applyOrCancel(lambda brain, engine: asked.append((brain, view.last("showApply"))) or False)
    assert asked == [(controller.needsBrainExtraction(), ("Installing packages...", False))]
    assert view.last("showApply") == ("Apply", True)


def test_a_format_no_panel_wrote_falls_back_to_both(bundle, tmp_path):
    """Finding 9: a bad saved exportFormat raised KeyError in every refresh."""
    scene, volume, segmentation, view, controller, jobs = _export_controller(bundle, tmp_path)
    controller.parameters.node.SetParameter("exportFormat", "dicom-sr")
    controller.setParameterNode(controller.parameters.node)
    assert view.last("showExportSettings")[1] == "both"
    assert view.last("showExport")[2].startswith("Writes an RT Structure Set and a DICOM SEG")
    controller.export.exportOrCancel()
    assert jobs[0].started[0][3] == "both"


def test_the_export_hint_follows_the_segmentation_and_its_volume_and_is_refreshed_on_entering(bundle, tmp_path):
    """Finding 8: the hint changed only with the panel's own controls."""
    scene, volume, segmentation, view, controller, jobs = _export_controller(bundle, tmp_path)
    assert view.last("showExport")[:2] == ("Export to DICOM", True)
    other = scene_volume(scene, "NIfTI T1", np.zeros(SHAPE))
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(other)  # a new reference volume, not from DICOM
    assert not view.last("showExport")[1] and "'NIfTI T1', the reference volume of 'reviewed', was not loaded" in view.last("showExport")[2]
    other.SetAttribute("DICOM.instanceUIDs", " ".join(f"9.{k}" for k in range(SHAPE[0])))  # the new volume is followed
    assert view.last("showExport")[:2] == ("Export to DICOM", True)
    moved = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    segmentation.SetAndObserveTransformNodeID(moved.GetID())
    assert "'reviewed' is under transform 'moved' but its reference volume 'NIfTI T1' is under no transform" in view.last("showExport")[2]
    other.SetAndObserveTransformNodeID(moved.GetID())
    assert view.last("showExport")[:2] == ("Export to DICOM", True)
    shown = len([c for c in view.calls if c[0] == "showExport"])
    controller.enter()
    assert len([c for c in view.calls if c[0] == "showExport"]) == shown + 1
    controller.sceneClosing()  # the observers go with the scene
    segmentation.Modified()
    assert len([c for c in view.calls if c[0] == "showExport"]) == shown + 1


def test_a_job_that_cannot_start_its_child_is_an_error_message_not_a_traceback(bundle, tmp_path):
    """Finding 3: an OSError (no PythonSlicer, no permission) escaped the controller into the Qt slot, and the
    panel stayed on "Cancel export". (The jobs' own clean-up: test_segmenter_export.py, test_segmenter_logic.py.)"""
    scene, volume, segmentation, view, controller, jobs = _export_controller(bundle, tmp_path)

    class Job(RecordingExportJob):
        def start(self, *args, **kwargs):
            raise FileNotFoundError(2, "No such file or directory", "PythonSlicer")

    controller.export.newExportJob = Job
    controller.export.exportOrCancel()
    assert view.last("showError") == ("Cannot export: [Errno 2] No such file or directory: 'PythonSlicer'",)
    assert not controller.export.exporting and view.last("showExport")[:2] == ("Export to DICOM", True)

    class Segmentation(RecordingJob):
        def start(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", "PythonSlicer")

    controller.newJob = Segmentation
    controller.mappingChanged({"flair": volume.GetID(), "t1c": None})
    controller.applyOrCancel()
    assert view.last("showError") == ("Cannot segment: [Errno 13] Permission denied: 'PythonSlicer'",)
    assert not controller.running and view.last("showApply") == ("Apply", True)


def test_the_status_says_the_map_replaced_the_views_foreground(bundle):
    """Finding 6: showing the map replaces the user's foreground in every view; the status says so."""
    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "AX FLAIR", np.random.default_rng(0).normal(size=SHAPE))
    view, jobs = View(), []
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: jobs.append(RecordingJob()) or jobs[-1],
                                     localBundles=lambda: [], devices=None)
    controller.chooseBundle(str(bundle))
    controller.applyOrCancel()
    job = jobs[0]
    job.disagreementNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "a disagreement")
    job.compared, job.reportFolder, job.running = 2, Path("/r"), False
    job.notes = ["t1c: t1c.nrrd registered to flair (another grid): rotation 2.0 degrees"]
    job.finished.emit([scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "a")])
    status = view.last("showStatus")[0]
    assert "as the foreground of every slice view, in place of any foreground you had there" in status
    assert status.endswith(". t1c: t1c.nrrd registered to flair (another grid): rotation 2.0 degrees")


# --- issue #16 in the Segmenter: skull-stripped and aligned, or prepared by magms segment --preprocess auto ---




@needs_data
def test_the_panel_shows_what_preprocess_auto_will_do_from_the_same_detection_as_magms_segment(bundle, tmp_path):
    """A stripped BraTS 2018 FLAIR and the whole-head MNI T1, read from their files by Slicer's storage node:
    the panel's detection is the core's on the very files the child reads, and the choice reaches the job."""
    from magms.data.clinical import skull_check
    from MAGMSCommonLib.volumes import writeVolumes

    brats = DATA / "brats18" / "Brats18_CBICA_AQR_1" / "Brats18_CBICA_AQR_1_flair.nii.gz"
    mni = DATA / "mni_avg152" / "canonical_avg152T1.nii.gz"
    scene = slicer.vtkMRMLScene()
    flair = load_scene_volume(scene, brats, "AX FLAIR")
    head = load_scene_volume(scene, mni, "T1 whole head")
    view, jobs = View(), []
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: jobs.append(RecordingJob()) or jobs[-1],
                                     localBundles=lambda: [], devices=None)
    controller.chooseBundle(str(bundle))
    assert controller.parameters.get("imagesPrepared") is False and controller.preprocess == "auto"  # the panel's default

    # the same numbers as magms segment computes on the files the job writes for the child
    files = writeVolumes([("flair", flair), ("t1c", head)], tmp_path)
    controller.mappingChanged({"flair": flair.GetID(), "t1c": head.GetID()})
    checks = controller.skullChecks()
    assert checks["flair"][1] == skull_check(sitk.ReadImage(str(files["flair"])))
    assert checks["t1c"][1] == skull_check(sitk.ReadImage(str(files["t1c"])))
    assert checks["flair"][1].stripped and not checks["t1c"][1].stripped

    prepared, text = view.last("showPreprocess")
    assert prepared is False and text.startswith("MAGMS prepares the volumes first (--preprocess auto)")
    assert f"FLAIR 'AX FLAIR': looks {checks['flair'][1].describe()}" in text and "T1c 'T1 whole head': looks not skull-stripped" in text
    assert "The brain of the skull-stripped one masks the others." in text and not controller.needsBrainExtraction()

    controller.mappingChanged({"flair": None, "t1c": head.GetID()})
    assert "None looks skull-stripped: the brain is extracted with deepbet" in view.last("showPreprocess")[1]
    asked = []
    controller.applyOrCancel(lambda brain, engine: asked.append(brain) or True)
    assert asked == [True] and jobs[-1].started[0][1]["preprocess"] == "auto"
    jobs[-1].running = False

    controller.setImagesPrepared(True)
    prepared, text = view.last("showPreprocess")
    assert prepared is True and text.startswith("The volumes are segmented as they are (--preprocess none).")
    assert "'T1 whole head' does not look skull-stripped: uncheck the box" in text
    controller.applyOrCancel(lambda brain, engine: asked.append(brain) or True)
    assert asked[-1] is False and jobs[-1].started[0][1]["preprocess"] == "none"
    # kept on the parameter node, shown again from it
    controller.setParameterNode(controller.parameters.node)
    assert view.last("showPreprocess")[0] is True
    # computed once per image content
    calls = []
    import MAGMSSegmenterLib.controller as module

    original = module.volumeSkullCheck
    module.volumeSkullCheck = lambda node: calls.append(node) or original(node)
    try:
        controller.skullChecks()
        head.GetImageData().Modified()
        controller.skullChecks()
    finally:
        module.volumeSkullCheck = original
    assert calls == [head]


def test_when_either_install_ends_both_buttons_say_again_what_they_can_do(bundle, tmp_path):
    """Second reading, finding 1: pip runs Qt's event loop, and only the section that installed refreshed its
    button afterwards. An export that ended during Apply's install left "Cancel export" enabled (a click then
    started a second export); Apply, turned off during Export's install, stayed off."""
    scene, volume, segmentation, view, controller, jobs = _export_controller(bundle, tmp_path)
    controller.mappingChanged({"flair": volume.GetID(), "t1c": None})
    controller.export.exportOrCancel()
    assert controller.export.exporting

    def exportEndsWhileAppliesPipRuns(brain, engine):
        jobs[-1].running = False
        jobs[-1].finished.emit([tmp_path / "x.seg.dcm"])
        return False

    controller.applyOrCancel(exportEndsWhileAppliesPipRuns)
    assert view.last("showExport")[:2] == ("Export to DICOM", True)

    def segmenterTouchedWhileExportsPipRuns(kinds):
        controller.mappingChanged({"flair": volume.GetID(), "t1c": None})  # Apply shows "Installing packages..."
        return False

    controller.export.exportOrCancel(segmenterTouchedWhileExportsPipRuns)
    assert view.last("showApply") == ("Apply", True)


def test_a_closed_panel_lets_go_of_the_parameter_node(bundle, tmp_path):
    """Second reading, findings 3 and 4: after cleanup (module closed, or Reload in developer mode), an old
    selector left alive must not write the shared parameter node; setParameterNode(None) reaches the export section."""
    scene, volume, segmentation, view, controller, jobs = _export_controller(bundle, tmp_path)
    node = controller.parameters.node
    before = (node.GetNodeReferenceID("MAGMS.slot.flair"), node.GetNodeReferenceID("MAGMS.slot.t1c"))
    controller.cleanup()
    assert controller.parameters is None and controller.export.parameters is None
    controller.mappingChanged({"flair": None, "t1c": volume.GetID()})
    controller.export.setExportFolder(str(tmp_path / "elsewhere"))
    assert (node.GetNodeReferenceID("MAGMS.slot.flair"), node.GetNodeReferenceID("MAGMS.slot.t1c")) == before
    assert node.GetParameter("exportFolder") == str(tmp_path)
