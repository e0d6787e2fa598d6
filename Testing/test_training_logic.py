"""MAGMS Training logic against the real MRML of `slicer-core`: live metrics, stop/resume, scene data sets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[test]')")

from conftest import scene_volume  # noqa: E402
from magms.errors import ConfigError  # noqa: E402
from magms.labels import get_scheme  # noqa: E402
from MAGMSCommonLib import models  # noqa: E402
from MAGMSTrainingLib import logic  # noqa: E402

SHAPE = (20, 22, 24)  # z, y, x
# magms train options (TrainOptions fields but data and out), as the module passes them
FAST = dict(labels="brats2013", slots=("flair", "t1c"), epochs=3, max_minutes=None, patch=(16,), spacing=0.0,
            channels=(4, 8, 16), device="cpu", val_fraction=0.25)


def _label() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[5:12, 6:14, 7:15] = 2
    label[7:10, 8:11, 9:12] = 4
    return label


@pytest.fixture
def folder_data(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(4):
        case = tmp_path / "data" / f"c{k}"
        case.mkdir(parents=True)
        label = _label()
        for name, scale in (("Flair.nii.gz", 1), ("T1c.nii.gz", 2)):
            sitk.WriteImage(sitk.GetImageFromArray((scale * label + rng.normal(5, 1, SHAPE)).astype(np.float32)), str(case / name))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(case / "OTMultiClass.nii.gz"))
    return tmp_path / "data"


def run_until_done(job, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while job.running:
        job.poll()
        assert time.monotonic() < deadline, "training did not end in time"
        time.sleep(0.1)
    job.poll()


def test_metrics_fill_the_table_and_plots_while_training_runs(folder_data, tmp_path):
    scene = slicer.vtkMRMLScene()
    job = logic.TrainingJob(scene, localModels=tmp_path / "local.json")
    seen_while_running, finished = [], []
    job.metricsAdded.connect(lambda n: seen_while_running.append(job.table.GetNumberOfRows()) if job.running else None)
    job.finished.connect(finished.append)
    job.start(folder_data, tmp_path / "model", {**FAST, "epochs": 4})
    run_until_done(job)
    assert finished == [tmp_path / "model"], job.runner.lines[-3:]
    assert job.table.GetNumberOfRows() == 4
    assert len(seen_while_running) >= 2 and seen_while_running == sorted(seen_while_running)  # rows came in as it ran
    assert scene.GetNodeByID(job.chart.GetID()) is job.chart
    assert "loss" in job.seriesNames() and any(n.startswith("val_dice:") for n in job.seriesNames())
    step = job.table.GetTable().GetColumnByName("step")
    assert [step.GetValue(i) for i in range(4)] == [2.0, 4.0, 6.0, 8.0]  # 3 training cases, 2 per step
    # the finished bundle is in the Segmenter's model list
    assert models.localBundles(tmp_path / "local.json") == [(tmp_path / "model").resolve()]


def test_stop_then_resume_continues_at_the_same_step(folder_data, tmp_path):
    scene = slicer.vtkMRMLScene()
    out = tmp_path / "model"
    job = logic.TrainingJob(scene, localModels=tmp_path / "local.json")
    stopped, finished, steps = [], [], []
    job.stopped.connect(lambda: stopped.append(True))
    job.finished.connect(finished.append)
    job.runner.progress.connect(lambda step, total: steps.append(step))
    options = {**FAST, "epochs": 6}
    job.start(folder_data, out, options)
    while job.running and len(steps) < 4:  # stop in epoch 2
        job.poll()
        time.sleep(0.05)
    job.stop()
    run_until_done(job)
    assert stopped == [True] and finished == []
    saved = json.loads((out / "checkpoint" / "state.json").read_text(encoding="utf-8"))["step"]
    assert saved >= 4 and not (out / "magms.json").exists()
    steps.clear()
    job.resume(folder_data, out, options)
    run_until_done(job)
    assert steps[0] == saved + 1, (steps[:3], saved)
    assert finished == [out] and models.localBundles(tmp_path / "local.json") == [out.resolve()]




def add_segmentation(scene, name: str, reference, masks: dict[str, np.ndarray]):
    """A segmentation node with one painted segment per name, on the reference's grid."""
    from MAGMSCommonLib.volumes import ensureSegmentationConverters

    ensureSegmentationConverters()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    for segment_name, mask in masks.items():
        segment_id = node.GetSegmentation().AddEmptySegment(segment_name, segment_name)
        image = slicer.vtkOrientedImageData()
        image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
        image.GetPointData().SetScalars(
            numpy_support.numpy_to_vtk(mask.astype(np.uint8).ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
        image.SetImageToWorldMatrix(matrix)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    return node


def scene_cases(scene, n: int = 3):
    rng = np.random.default_rng(1)
    cases = []
    for k in range(n):
        label = _label()
        flair = scene_volume(scene, f"P{k} AX FLAIR", label + rng.normal(5, 1, SHAPE), origin=(10.0 * k, 0, 0))
        t1c = scene_volume(scene, f"P{k} T1 POST GAD", 2 * label + rng.normal(5, 1, SHAPE), origin=(10.0 * k, 0, 0))
        seg = add_segmentation(scene, f"P{k} contours", flair, {"Edema": label == 2, "Enhancing tumour": label == 4})
        cases.append(logic.SceneCase(f"P{k}", {"flair": flair.GetID(), "t1c": t1c.GetID()}, seg.GetID()))
    return cases


def test_a_data_set_built_from_scene_nodes_trains_with_the_segment_names(tmp_path):
    from magms.bundle import read_bundle_info

    scene = slicer.vtkMRMLScene()
    cases = scene_cases(scene)
    nodes_before = scene.GetNumberOfNodes()
    job = logic.TrainingJob(scene, localModels=tmp_path / "local.json")
    finished = []
    job.finished.connect(finished.append)
    options = {**FAST, "labels": "msd_task01", "slots": (), "epochs": 2, "val_fraction": 0.34}
    manifest = job.startFromScene(cases, tmp_path / "model", options)
    # the exported labelmap holds the painted segments with the scheme's values, on the FLAIR grid
    exported = sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.parent / "P0" / "label.nrrd")))
    np.testing.assert_array_equal(exported, np.select([_label() == 2, _label() == 4], [1, 3], 0))
    run_until_done(job)
    assert finished, job.runner.lines[-3:]
    info = read_bundle_info(tmp_path / "model")
    assert info.slots == ("flair", "t1c")
    segment_names = {"Edema", "Enhancing tumour"}
    assert segment_names <= {label.name for label in info.labels.labels}
    assert not manifest.exists()  # the temporary export is removed once the bundle is written
    assert scene.GetNumberOfNodes() == nodes_before + 2 + len(job.seriesNames())  # only the table, chart and series


def test_bad_scene_data_sets_name_the_case():
    scene = slicer.vtkMRMLScene()
    good, no_seg, odd = scene_cases(scene)
    no_seg = logic.SceneCase(no_seg.name, no_seg.volumes, None)
    odd_seg = add_segmentation(scene, "odd", scene.GetNodeByID(odd.volumes["flair"]), {"Tumour blob": _label() > 0})
    odd = logic.SceneCase(odd.name, odd.volumes, odd_seg.GetID())
    far_t1c = scene_volume(scene, "P3 T1 POST GAD", np.ones(SHAPE), origin=(900.0, 0, 0))
    apart = logic.SceneCase("P3", {"flair": good.volumes["flair"], "t1c": far_t1c.GetID()}, good.segmentationID)
    with pytest.raises(ConfigError) as info:
        logic.checkSceneCases(scene, [good, no_seg, odd, apart], ("flair", "t1c"), get_scheme("msd_task01"))
    message = str(info.value)
    assert message.startswith("3 problem(s) in the data")
    assert "case P1: no segmentation" in message
    assert "case P2: segment(s) 'Tumour blob' of 'odd' are not in scheme 'msd_task01'" in message
    assert "case P3: volume 'P3 T1 POST GAD' (t1c) covers only 0% of the space of 'P0 AX FLAIR'" in message


def test_preflight_of_a_folder_uses_the_messages_of_magms_train(folder_data):
    from magms.errors import ImageError

    assert logic.preflightFolder(folder_data, "brats2013") == (["flair", "t1c"], 4)
    (folder_data / "c1" / "OTMultiClass.nii.gz").unlink()
    with pytest.raises(ImageError, match="c1: no label file"):
        logic.preflightFolder(folder_data, "brats2013")


def test_scene_cases_are_guessed_per_segmentation():
    scene = slicer.vtkMRMLScene()
    rng = np.random.default_rng(2)
    for k, origin in enumerate((0.0, 500.0)):
        flair = scene_volume(scene, f"P{k} AX FLAIR", rng.normal(size=SHAPE), origin=(origin, 0, 0))
        scene_volume(scene, f"P{k} T1 POST GAD", rng.normal(size=SHAPE), origin=(origin, 0, 0))
        add_segmentation(scene, f"P{k} contours", flair, {"Edema": _label() == 2})
    cases = logic.guessSceneCases(scene, ("flair", "t1c"))
    assert [c.name for c in cases] == ["P0 contours", "P1 contours"]
    for k, case in enumerate(cases):
        assert {s: scene.GetNodeByID(i).GetName() for s, i in case.volumes.items()} == {"flair": f"P{k} AX FLAIR",
                                                                                         "t1c": f"P{k} T1 POST GAD"}


def test_the_command_carries_every_option(tmp_path):
    """The module passes its options as a --config file that magms train reads back unchanged."""
    from magms.cli import build_parser
    from magms.commands import TrainOptions
    from magms.options import from_command_line

    settings = {"labels": "msd_task01", "slots": ("flair", "t1c"), "kl_weight": 0.5, "feature_weight": 2.0, "init": "/b",
                "max_minutes": 30, "distill": False}
    options = logic.trainingOptions(Path("data"), Path("out"), settings, resume=True)
    command = logic.trainCommand("python", options, tmp_path / "run.json")
    assert command == ["python", "-m", "magms", "train", "--config", str(tmp_path / "run.json")]
    parsed = from_command_line(TrainOptions, build_parser().parse_args(command[3:]))
    assert parsed == options
    assert (parsed.labels, parsed.slots, parsed.kl_weight, parsed.feature_weight, parsed.init, parsed.max_minutes) == (
        "msd_task01", ("flair", "t1c"), 0.5, 2.0, Path("/b"), 30.0)
    assert parsed.progress == "lines" and parsed.resume and not parsed.distill


def test_a_bad_setting_is_refused_naming_it():
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        logic.trainingOptions(Path("d"), Path("o"), {"labels": "msd_task01", "epochs": 0})
    with pytest.raises(ConfigError, match="unknown option.*'epoch'"):
        logic.trainingOptions(Path("d"), Path("o"), {"labels": "msd_task01", "epoch": 3})
