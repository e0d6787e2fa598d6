"""MAGMS Segmenter logic against the real MRML of `slicer-core`: slots, mapping checks, a real run, cancel."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[test]')")

from conftest import DATA, load_scene_volume, needs_data, scene_volume  # noqa: E402
from magms.data.io import write_labelmap  # noqa: E402
from magms.errors import ConfigError  # noqa: E402
from magms.labels import get_scheme  # noqa: E402
from magms.protocol import EngineChoice  # noqa: E402
from MAGMSCommonLib import volumes  # noqa: E402
from MAGMSCommonLib.runner import ProcessRunner, RunState  # noqa: E402
from MAGMSSegmenterLib import logic  # noqa: E402

SLOTS = ("flair", "t1", "t1c", "t2")


def add_volume(scene, name: str, shape=(6, 7, 8), origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0), seed: int = 0):
    """A small scalar volume of random values (array in z, y, x order)."""
    return scene_volume(scene, name, np.random.default_rng(seed).normal(size=shape), origin, spacing)




def living_in_group(group: int) -> list[int]:
    """PIDs of the process group that are not zombies (a zombie is dead, just not yet reaped by init)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def snapshot(scene) -> list[tuple]:
    """Every node's ID, class, name and modification time: equal snapshots = an untouched scene."""
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    return [(n.GetID(), n.GetClassName(), n.GetName(), n.GetMTime()) for n in nodes]


# ---------------------------------------------------------------------------------------------
# slots


@needs_data
@pytest.mark.parametrize(
    "folder",
    ["brats_flair_t1c/brats_2013_pat0003_1", "brats_unlabelled/BraTS-GLI-00001-000", "brats_unlabelled/AURORA-metastasis", "mni_avg152"],
)
def test_real_volumes_get_their_slots_from_their_names(folder):
    expected = {"Flair": "flair", "T1c": "t1c", "t1n": "t1", "t1c": "t1c", "t2w": "t2", "t2f": "flair", "flair": "flair",
                "avg152T1": "t1", "avg152T2": "t2"}
    scene = slicer.vtkMRMLScene()
    names = {}
    for path in sorted((DATA / folder).glob("*.nii.gz")):
        name = path.name.split(".")[0]
        if any(word in name for word in ("mask", "OTMultiClass", "OldSeg", "PD")):
            continue
        names[load_scene_volume(scene, path, name).GetID()] = name
    mapping, guesses = volumes.guessMapping(scene, SLOTS)
    assert len(guesses) == len(names) >= 2
    for guess in guesses:
        want = next(slot for key, slot in expected.items() if key in guess.name)
        assert guess.slot == want, guess
        assert mapping[want] == guess.nodeID


def test_dicom_series_names_and_descriptions():
    scene = slicer.vtkMRMLScene()
    for name in ("AX T2 FLAIR", "T1 POST GAD", "Ax T1 MPRAGE", "T2W_TSE", "Localizer", "Series 7"):
        add_volume(scene, name)
    described = add_volume(scene, "8: unnamed")
    described.SetAttribute(volumes.SERIES_DESCRIPTION_ATTRIBUTE, "sag 3D FLAIR")
    mapping, guesses = volumes.guessMapping(scene, SLOTS)
    by_name = {g.name: g for g in guesses}
    assert by_name["Ax T1 MPRAGE"].slot == "t1" and by_name["T1 POST GAD"].slot == "t1c" and by_name["T2W_TSE"].slot == "t2"
    for name in ("Localizer", "Series 7"):
        assert by_name[name].slot is None and by_name[name].reason
    # two FLAIR-looking volumes: neither is chosen, and the reason says so
    assert by_name["AX T2 FLAIR"].slot is None and by_name["8: unnamed"].slot is None
    assert "'AX T2 FLAIR' and '8: unnamed' both look like flair" in by_name["AX T2 FLAIR"].reason
    assert mapping["flair"] is None and mapping["t1c"] == by_name["T1 POST GAD"].nodeID
    # a description is used when the name says nothing
    scene2 = slicer.vtkMRMLScene()
    only = add_volume(scene2, "Series 3")
    only.SetAttribute(volumes.SERIES_DESCRIPTION_ATTRIBUTE, "AX T2 FLAIR")
    assert volumes.guessMapping(scene2, SLOTS)[0]["flair"] == only.GetID()


def test_label_maps_are_not_offered_as_inputs():
    scene = slicer.vtkMRMLScene()
    add_volume(scene, "flair")
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "seg").SetAndObserveImageData(vtk.vtkImageData())
    assert [n.GetName() for n in volumes.scalarVolumes(scene)] == ["flair"]


def test_slot_mapping_is_kept_on_the_parameter_node():
    scene = slicer.vtkMRMLScene()
    a = add_volume(scene, "a")
    parameters = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "MAGMSSegmenter")
    logic.writeSlotMapping(parameters, {"flair": a.GetID(), "t1c": None})
    assert logic.readSlotMapping(parameters, ("flair", "t1c")) == {"flair": a.GetID(), "t1c": None}


# ---------------------------------------------------------------------------------------------
# mapping checks, each naming the volume


def test_each_bad_mapping_names_the_volume():
    scene = slicer.vtkMRMLScene()
    flair = add_volume(scene, "AX FLAIR")
    far = add_volume(scene, "T1 POST far", origin=(500.0, 0.0, 0.0))
    twice = add_volume(scene, "T2 twice")
    moved = add_volume(scene, "T1 moved")
    moved.SetAndObserveTransformNodeID(scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift").GetID())
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "old contours")
    label.SetAndObserveImageData(vtk.vtkImageData())

    def problems(mapping, slots=SLOTS) -> str:
        with pytest.raises(ConfigError) as info:
            volumes.checkMapping(scene, mapping, slots)
        return str(info.value)

    assert "no volume is mapped" in problems({"flair": None, "t1c": ""})
    assert "volume 'AX FLAIR' is mapped to slot ct, which the model does not have" in problems({"ct": flair.GetID()})
    assert "volume 'T2 twice' is mapped to 2 slots (t1, t2)" in problems({"t1": twice.GetID(), "t2": twice.GetID()})
    assert "volume 'T1 POST far' (t1c) covers only 0% of the space of 'AX FLAIR' (flair)" in problems(
        {"flair": flair.GetID(), "t1c": far.GetID()})
    assert "volume 'T1 moved' is under transform 'shift'" in problems({"t1": moved.GetID()})
    assert "volume 'old contours' is a label map" in problems({"t2": label.GetID()})
    # all at once
    message = problems({"flair": flair.GetID(), "t1c": far.GetID(), "t2": moved.GetID()})
    assert "T1 POST far" in message and "T1 moved" in message
    # a good mapping comes back in the model's slot order, the reference first
    assert [s for s, _ in volumes.checkMapping(scene, {"t2": twice.GetID(), "flair": flair.GetID()}, SLOTS)] == ["flair", "t2"]


# ---------------------------------------------------------------------------------------------
# the process runner


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_runner_reports_progress_and_the_error_line():
    runner = ProcessRunner()
    seen, ends = [], []
    runner.progress.connect(lambda d, t: seen.append((d, t)))
    runner.finished.connect(lambda state, message: ends.append((state, message)))
    runner.start(_python("import sys\nfor i in range(3): print(f'progress {i+1}/3', file=sys.stderr)\n"
                         "print('x.nii.gz: constant image', file=sys.stderr)\nsys.exit(2)"))
    assert runner.wait(timeout=30) is RunState.FAILED
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert ends == [(RunState.FAILED, "x.nii.gz: constant image")]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the process group")
def test_cancel_ends_the_whole_process_tree():
    runner = ProcessRunner()
    # the child starts a grandchild, then both sleep
    runner.start(_python("import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
                         "print('progress 0/1', file=sys.stderr, flush=True)\ntime.sleep(120)"))
    deadline = time.monotonic() + 30
    started = []
    runner.progress.connect(lambda d, t: started.append(d))
    while not started and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    group = runner.pid
    runner.cancel(grace=2)
    assert runner.state is RunState.CANCELLED
    assert living_in_group(group) == []


# ---------------------------------------------------------------------------------------------
# a real run


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """Random weights, a tiny U-Net and a 4 mm working grid: the whole path in seconds."""
    from conftest import make_bundle
    from magms.config import PreprocessConfig

    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "msd_task01", slots=("flair", "t1c"), seed=None,
                       preprocessing=PreprocessConfig(spacing=(4.0, 4.0, 4.0), patch_size=(16, 16, 16), overlap=0.0))


@pytest.fixture
def real_scene():
    case = DATA / "brats_flair_t1c" / "brats_2013_pat0003_1"
    scene = slicer.vtkMRMLScene()
    flair = load_scene_volume(scene, case / "Flair_subtrMeanDivStd.nii.gz", "Flair_subtrMeanDivStd")
    t1c = load_scene_volume(scene, case / "T1c_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd")
    volumes.ensureSegmentationConverters()
    mine = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my contours")
    mine.GetSegmentation().AddEmptySegment("gtv", "GTV")
    return scene, flair, t1c, mine


def _geometry(node) -> tuple:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return tuple(round(matrix.GetElement(i, j), 4) for i in range(3) for j in range(4))


@needs_data
def test_a_run_creates_a_new_segmentation_that_matches_the_bundle(tiny_bundle, real_scene):
    scene, flair, t1c, mine = real_scene
    mine_before = (mine.GetMTime(), mine.GetSegmentation().GetNumberOfSegments(), mine.GetSegmentation().GetNthSegment(0).GetName())
    job = logic.SegmentationJob(scene)
    results, failures, fractions = [], [], []
    job.finished.connect(results.extend)
    job.failed.connect(failures.append)
    job.progress.connect(lambda f, text: fractions.append(f))
    # the panel's default, --preprocess auto: these skull-stripped volumes on one grid go through unchanged
    job.start({"flair": flair.GetID(), "t1c": t1c.GetID()}, tiny_bundle, engineChoice=EngineChoice(device="cpu"), modelName="tiny",
              preprocess="auto")
    folder = job.folder
    job.wait(timeout=300)
    assert not failures and len(results) == 1
    assert job.ran is not None and job.ran.device == "cpu"  # the child said what ran (magms.protocol.format_ran)
    node = results[0]
    assert node.GetName() == "Flair_subtrMeanDivStd MAGMS tiny (flair+t1c)"
    assert scene.GetNodeByID(node.GetID()) is node and node.GetDisplayNode() is not None
    scheme = get_scheme("msd_task01")
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    for label in scheme.labels[1:]:
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(label.name))
        assert segment is not None, label.name
        assert tuple(round(c * 255) for c in segment.GetColor()) == label.color
        assert segment.GetTerminology() == scheme.slicer_terminology(label.value)
    # geometry: referenced to the FLAIR volume, and the labelmap lies on its grid
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is flair
    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segmentation.GetNthSegmentID(0), labelmap)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    assert tuple(round(matrix.GetElement(i, j), 4) for i in range(3) for j in range(4)) == _geometry(flair)
    # the user's segmentation is untouched, the temporary folder gone, progress went to 1
    assert (mine.GetMTime(), mine.GetSegmentation().GetNumberOfSegments(), mine.GetSegmentation().GetNthSegment(0).GetName()) == mine_before
    assert not folder.exists() and fractions[-1] == 1.0


def _labels_on(node, reference, scheme, tmp_path) -> np.ndarray:
    """A segmentation node's segments as one label map (scheme values) on ``reference``'s grid."""
    path = tmp_path / f"{node.GetID()}.nrrd"
    logic.writeLabelsForExport(node, reference, logic.segmentLabelValues(node, scheme), path)
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _slice_views(scene, background):
    """The three slice views' composite nodes, as Slicer's layout makes them, the background shown."""
    views = []
    for name in ("Red", "Yellow", "Green"):
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        composite = scene.AddNode(composite)
        composite.SetBackgroundVolumeID(background.GetID())
        views.append(composite)
    return views


@needs_data
def test_compare_subsets_is_one_child_run_whose_subsets_and_disagreement_map_are_added(tiny_bundle, real_scene, tmp_path):
    """Compare subsets: ONE magms segment child (inputs prepared once) gives a node per subset, named
    per subset as before, and the disagreement map, shown over the reference volume in every slice view."""
    scene, flair, t1c, mine = real_scene
    views = _slice_views(scene, flair)
    before = {n[0]: n for n in snapshot(scene) if not n[1] == "vtkMRMLSliceCompositeNode"}
    job = logic.SegmentationJob(scene, reportsFolder=tmp_path / "reports")
    starts = []
    original = job.runner.start
    job.runner.start = lambda command, **kw: (starts.append(command), original(command, **kw))
    results, fractions = [], []
    job.finished.connect(results.extend)
    job.progress.connect(lambda f, text: fractions.append((f, text)))
    job.start({"flair": flair.GetID(), "t1c": t1c.GetID()}, tiny_bundle, engineChoice=EngineChoice(device="cpu"), subsets="all",
              modelName="tiny")
    job.wait(timeout=600)
    assert len(starts) == 1 and "segment" in starts[0]  # one child for the three segmentations
    assert fractions[0][1] == "segmenting from flair + t1c and its 2 smaller subsets" and fractions[-1][0] == 1.0
    assert [n.GetName() for n in results] == [
        "Flair_subtrMeanDivStd MAGMS tiny (flair)", "T1c_subtrMeanDivStd MAGMS tiny (t1c)", "Flair_subtrMeanDivStd MAGMS tiny (flair+t1c)"]
    # every output of the compare run lies on the reference volume's grid, so each node is referenced to it
    assert all(n.GetNodeReference(n.GetReferenceImageGeometryReferenceRole()) is flair for n in results)

    # the disagreement map: a new volume node, 0..2 counts equal to the subsets' differences from the fullest
    doubt = job.disagreementNode
    assert doubt is not None and scene.GetNodeByID(doubt.GetID()) is doubt and job.compared == 2
    assert doubt.GetName() == "Flair_subtrMeanDivStd MAGMS tiny disagreement (flair+t1c)"
    counts = slicer.util.arrayFromVolume(doubt)
    scheme = get_scheme("msd_task01")
    flair_only, t1c_only, full = (_labels_on(n, flair, scheme, tmp_path) for n in results)
    np.testing.assert_array_equal(counts, (flair_only != full).astype(np.uint8) + (t1c_only != full))
    assert counts.min() == 0 and counts.max() <= 2 and _geometry(doubt) == _geometry(flair)
    display = doubt.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.5, 2)  # a count of 1 at a third of the table
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == 1  # 0: transparent
    assert display.GetColorNode() is logic.heatColorNode(scene)
    for view in views:
        assert view.GetForegroundVolumeID() == doubt.GetID() and view.GetForegroundOpacity() == logic.DISAGREEMENT_OPACITY
        assert view.GetBackgroundVolumeID() == flair.GetID()
    # it is no input: the slot guess leaves it alone
    assert doubt not in volumes.scalarVolumes(scene)
    # the report is kept, its path known
    assert job.reportFolder.parent == tmp_path / "reports"
    assert sorted(p.name for p in job.reportFolder.iterdir()) == ["disagreement.nii.gz", "report.md", "report.png", "volumes.csv"]
    # the nodes that were there are untouched
    after = {n[0]: n for n in snapshot(scene)}
    assert all(after[key] == node for key, node in before.items())


def test_the_disagreement_map_is_a_heat_overlay_with_zero_transparent_whatever_colour_tables_the_scene_has(tmp_path):
    """In Slicer the scene has the built-in colour tables; a bare MRML scene (slicer-core) has none, and
    one Iron table is made, once."""
    import SimpleITK as sitk

    counts = np.zeros((6, 7, 8), np.uint8)
    counts[1:3, 2:5, 3:6] = 1
    counts[2, 3, 4] = 3
    image = sitk.GetImageFromArray(counts)
    image.SetSpacing((1.0, 1.2, 1.5))
    sitk.WriteImage(image, str(tmp_path / "doubt.nii.gz"))

    bare = slicer.vtkMRMLScene()
    flair = add_volume(bare, "flair")
    views = _slice_views(bare, flair)
    node = logic.importDisagreement(bare, tmp_path / "doubt.nii.gz", "doubt", compared=6)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), counts)
    display = node.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == logic.disagreementWindow(6) and not display.GetInterpolate()
    assert display.GetApplyThreshold() and (display.GetLowerThreshold(), display.GetUpperThreshold()) == (1, 6)
    made = display.GetColorNode()
    assert made.GetName() == logic.FALLBACK_HEAT_NAME and made.GetType() == slicer.vtkMRMLColorTableNode.Iron
    assert logic.heatColorNode(bare) is made and bare.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == 1
    assert logic.showDisagreement(bare, node) == 3
    assert all(v.GetForegroundVolumeID() == node.GetID() and v.GetBackgroundVolumeID() == flair.GetID() for v in views)
    assert logic.showDisagreement(slicer.vtkMRMLScene(), node) == 0  # no views: nothing to set, nothing raised

    full = slicer.vtkMRMLScene()
    colors = slicer.vtkSlicerColorLogic()  # what the application sets up: the built-in colour nodes
    colors.SetMRMLScene(full)
    assert full.GetNodeByID("vtkMRMLColorTableNodeIron") is not None
    chosen = logic.heatColorNode(full)
    # Inferno comes from a colour file slicer-core does not find; PET-Heat is the next choice
    assert chosen.GetID() in logic.HEAT_COLOR_NODE_IDS and chosen.GetID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    colors.SetMRMLScene(None)


@needs_data
def test_cancel_mid_run_leaves_the_scene_unchanged_and_no_process(tiny_bundle, real_scene, tmp_path):
    scene, flair, t1c, _ = real_scene
    before = snapshot(scene)
    job = logic.SegmentationJob(scene, reportsFolder=tmp_path)
    cancelled, finished = [], []
    job.cancelled.connect(lambda: cancelled.append(True))
    job.finished.connect(finished.append)
    job.start({"flair": flair.GetID(), "t1c": t1c.GetID()}, tiny_bundle, engineChoice=EngineChoice(device="cpu"), subsets="all")
    folder, group = job.folder, job.runner.pid
    assert any(folder.iterdir()) and job.reportFolder.is_dir()  # the inputs were written, the report folder made
    time.sleep(1.0)
    job.poll()
    job.cancel()
    assert cancelled == [True] and not finished and not job.running
    assert snapshot(scene) == before
    assert not folder.exists() and list(tmp_path.iterdir()) == []  # no report folder is left either
    assert living_in_group(group) == []


def test_a_bad_mapping_starts_nothing(tiny_bundle):
    scene = slicer.vtkMRMLScene()
    before = snapshot(scene)
    job = logic.SegmentationJob(scene)
    with pytest.raises(ConfigError, match="no volume is mapped"):
        job.start({"flair": None}, tiny_bundle)
    assert not job.running and snapshot(scene) == before


def test_describe_bundle_lists_slots_labels_and_validation(tiny_bundle, tmp_path):
    import json

    from magms.bundle import METADATA_FILE, read_bundle_info

    text = logic.describeBundle(read_bundle_info(tiny_bundle))
    assert "Slots: flair, t1c" in text and "Edema" in text and "No validation table" in text
    meta = json.loads((tiny_bundle / METADATA_FILE).read_text(encoding="utf-8"))
    meta["validation"] = {"flair": {"wt_dice": 0.71}, "flair+t1c": {"wt_dice": 0.8, "et_dice": 0.5}}
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    text = logic.describeBundle(read_bundle_info(tmp_path))
    assert "  flair: wt_dice 0.71" in text and "  flair+t1c: wt_dice 0.80, et_dice 0.50" in text


# ---------------------------------------------------------------------------------------------
# the review's findings on the disagreement overlay and on starting children


@pytest.mark.parametrize("compared", [1, 2, 6, 14])
def test_a_count_of_one_is_clearly_visible_in_the_heat_map(compared):
    """Finding 13: with the window from 0, a 1 of 14 (four volumes) sat at 7 % of Inferno: black on a dark MR."""
    low, high = logic.disagreementWindow(compared)
    assert high == compared and low <= 0.5
    share = (1 - low) / (high - low)  # where a count of 1 falls in the colour table
    assert share == pytest.approx(1.0 if compared == 1 else 1 / 3)


def test_a_later_run_without_a_map_takes_the_old_map_out_of_the_views(tmp_path):
    """Finding 6: the disagreement map stayed the foreground over images of a later run it does not describe.
    The user's own foreground is kept."""
    import SimpleITK as sitk

    scene = slicer.vtkMRMLScene()
    flair = add_volume(scene, "flair")
    views = _slice_views(scene, flair)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 7, 8), np.uint8)), str(tmp_path / "doubt.nii.gz"))
    doubt = logic.importDisagreement(scene, tmp_path / "doubt.nii.gz", "doubt", compared=2)
    logic.showDisagreement(scene, doubt)
    mine = add_volume(scene, "my PET", seed=3)
    views[2].SetForegroundVolumeID(mine.GetID())
    assert logic.hideDisagreement(scene) == 2
    assert [v.GetForegroundVolumeID() for v in views] == [None, None, mine.GetID()]
    assert scene.GetNodeByID(doubt.GetID()) is doubt  # the map itself stays in the scene
    assert logic.hideDisagreement(slicer.vtkMRMLScene()) == 0


class _FakeRunner:
    def __init__(self, fail: bool = False) -> None:
        from MAGMSCommonLib.signal import Signal

        self.progress, self.output, self.finished = Signal(int, int), Signal(str), Signal(RunState, str)
        self.fail, self.commands, self.running = fail, [], False

    def start(self, command, env=None, cwd=None, stdout=None):
        self.commands.append(command)
        if self.fail:
            raise PermissionError(13, "Permission denied", command[0])
        self.running = True

    def poll(self):
        return RunState.RUNNING

    def cancel(self):
        self.running = False


def test_a_plain_run_after_a_compare_run_hides_the_old_map(tiny_bundle, tmp_path):
    """Finding 6 through the job: a run that made no map hides the one an earlier run showed."""
    import SimpleITK as sitk

    scene = slicer.vtkMRMLScene()
    flair = add_volume(scene, "flair", shape=(16, 16, 16))
    views = _slice_views(scene, flair)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16, 16), np.uint8)), str(tmp_path / "doubt.nii.gz"))
    logic.showDisagreement(scene, logic.importDisagreement(scene, tmp_path / "doubt.nii.gz", "old map", compared=2))
    runner = _FakeRunner()
    job = logic.SegmentationJob(scene, python="python", runner=runner)
    job.start({"flair": flair.GetID()}, tiny_bundle, engineChoice=EngineChoice(device="cpu"), preprocess="auto")
    options = __import__("json").loads(Path(runner.commands[0][-1]).read_text(encoding="utf-8"))
    assert options["preprocess"] == "auto"  # the panel's choice reaches magms segment
    labels = sitk.GetImageFromArray(np.zeros((16, 16, 16), np.uint8))
    sitk.WriteImage(labels, options["output"])
    runner.output.emit("note: flair: flair.nrrd looks skull-stripped")
    runner.finished.emit(RunState.SUCCEEDED, "")
    assert not job.running and job.disagreementNode is None and job.notes == ["flair: flair.nrrd looks skull-stripped"]
    assert [v.GetForegroundVolumeID() for v in views] == [None, None, None]
    with pytest.raises(ValueError, match="preprocess"):
        job.start({"flair": flair.GetID()}, tiny_bundle, preprocess="sometimes")


def test_a_child_that_cannot_start_leaves_no_images_and_no_report_folder(tiny_bundle, tmp_path):
    """Finding 3: the child's start sat outside the clean-up: an OSError left the written volumes (patient
    images) and the new report folder behind and the job 'running' for ever."""
    scene = slicer.vtkMRMLScene()
    flair = add_volume(scene, "flair")
    t1c = add_volume(scene, "t1c", seed=1)
    runner = _FakeRunner(fail=True)
    job = logic.SegmentationJob(scene, python="python", runner=runner, reportsFolder=tmp_path / "reports")
    temporaries = set(Path(tempfile.gettempdir()).glob("magms-segment-*"))
    before = snapshot(scene)
    with pytest.raises(PermissionError):
        job.start({"flair": flair.GetID(), "t1c": t1c.GetID()}, tiny_bundle, subsets="all")
    assert len(runner.commands) == 1 and not job.running and job.reportFolder is None
    assert set(Path(tempfile.gettempdir()).glob("magms-segment-*")) == temporaries
    assert list((tmp_path / "reports").iterdir()) == [] and snapshot(scene) == before
    # a later run of an explicit list that cannot start is a failure, not an exception in the panel's timer
    runner.fail, failures = False, []
    job.failed.connect(failures.append)
    job.start({"flair": flair.GetID(), "t1c": t1c.GetID()}, tiny_bundle, subsets=[("flair",), ("t1c",)])
    runner.fail = True
    runner.finished.emit(RunState.SUCCEEDED, "")
    assert failures and failures[0].startswith("the next run could not be started: [Errno 13] Permission denied")
    assert not job.running


def test_the_runner_is_not_running_when_its_child_cannot_start(tmp_path):
    """Finding 3: the runner said RUNNING before Popen, so after a failed start cancel and poll did nothing
    and every later start was refused as 'still running'."""
    runner = ProcessRunner()
    with pytest.raises(FileNotFoundError):
        runner.start([str(tmp_path / "no-such-python"), "-c", "pass"])
    assert not runner.running and runner.state is RunState.IDLE
    runner.cancel()  # nothing to cancel, nothing raised
    runner.start(_python("import sys; sys.exit(0)"))
    assert runner.wait(timeout=30) is RunState.SUCCEEDED


def test_a_result_is_read_inside_the_scene_without_an_error_and_a_bad_file_adds_nothing(tmp_path, capfd):
    """Reading a .seg.nrrd into a node outside any scene makes Slicer's storage node log "Scene is invalid"
    (vtkMRMLSegmentationStorageNode::ReadDataInternal creates the display node): one red error per Apply."""
    scheme = get_scheme("brats2021")
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[3:9, 3:9, 3:9], labels[5:7, 5:7, 5:7] = 2, 4
    path = tmp_path / "result.seg.nrrd"
    write_labelmap(labels, sitk.GetImageFromArray(np.zeros(labels.shape, np.float32)), path, scheme)
    scene = slicer.vtkMRMLScene()
    reference = scene_volume(scene, "flair", np.zeros(labels.shape))
    capfd.readouterr()
    node = logic.importSegmentation(scene, path, reference, scheme, "flair MAGMS")
    assert "ERR" not in capfd.readouterr().err
    assert node.GetScene() is scene and node.GetDisplayNode() is not None
    before = scene.GetNumberOfNodes()
    (tmp_path / "bad.seg.nrrd").write_bytes(b"not a segmentation")
    with pytest.raises(ConfigError, match="bad.seg.nrrd"):
        logic.importSegmentation(scene, tmp_path / "bad.seg.nrrd", reference, scheme, "bad")
    assert scene.GetNumberOfNodes() == before
