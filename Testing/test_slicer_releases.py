"""The Slicer side on every release it supports (5.8 and 5.10), not only on ``slicer-core`` 5.13.

Each test reproduces one finding of the reading of both modules against Slicer's source at v5.8.1 and
v5.10.0 (issue "MAGMS on every Slicer it supports"). What 5.8 lacks is played by stand-ins that refuse
the methods 5.10 added (read in ``Libs/vtkSegmentationCore/vtkSegment.h`` at both tags); the API gate
(``test_slicer_api.py``) finds such calls in the code itself.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[test]')")

import vtk  # noqa: E402
from test_controllers import FakeRunner, RecordingJob, View, parameter_node  # noqa: E402

from conftest import REPO, make_bundle, scene_volume  # noqa: E402
from magms.data.io import write_labelmap  # noqa: E402
from magms.labels import get_scheme  # noqa: E402
from magms.protocol import ENGINES, PRECISIONS, EngineChoice, EngineRan, format_ran, parse_ran  # noqa: E402
from MAGMSCommonLib import segments, volumes  # noqa: E402
from MAGMSCommonLib.runner import RunState  # noqa: E402
from MAGMSSegmenterLib import logic as segmenter  # noqa: E402
from MAGMSSegmenterLib.controller import ENGINE_ITEMS, PRECISION_ITEMS, SegmenterController  # noqa: E402
from MAGMSTrainingLib import logic as training  # noqa: E402

#: What vtkSegment gained in v5.10.0 (vtkSegment.h: SetTerminology, GetTerminology, HasTerminology).
VTKSEGMENT_SINCE_5_10 = frozenset({"SetTerminology", "GetTerminology", "HasTerminology"})
SHAPE = (20, 22, 24)


class Segment58:
    """A real vtkSegment seen as Slicer 5.8 has it: the methods 5.10 added raise AttributeError, as there."""

    def __init__(self, segment) -> None:
        self._segment = segment

    def __getattr__(self, name):
        if name in VTKSEGMENT_SINCE_5_10:
            raise AttributeError(f"'vtkSegment' object has no attribute '{name}'")
        return getattr(self._segment, name)


class Segmentation58:
    """A real vtkSegmentation whose segments are :class:`Segment58`."""

    def __init__(self, segmentation) -> None:
        self._segmentation = segmentation

    def GetSegment(self, segmentID):  # noqa: N802 - VTK's name
        segment = self._segmentation.GetSegment(segmentID)
        return None if segment is None else Segment58(segment)

    def GetNthSegment(self, index):  # noqa: N802
        return Segment58(self._segmentation.GetNthSegment(index))

    def __getattr__(self, name):
        return getattr(self._segmentation, name)


class SegmentationNode58(slicer.vtkMRMLSegmentationNode):
    """A real segmentation node (it goes into the scene, storage nodes read into it) with Slicer 5.8's segments."""

    def GetSegmentation(self):  # noqa: N802
        return Segmentation58(super().GetSegmentation())


def test_the_stand_in_refuses_what_slicer_5_8_lacks():
    segment = Segment58(slicer.vtkSegment())
    with pytest.raises(AttributeError, match="SetTerminology"):
        segment.SetTerminology("x")
    assert segment.GetTerminologyEntryTagName() == slicer.vtkSegment.GetTerminologyEntryTagName()


def _seg_nrrd(tmp_path, scheme):
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:10, 5:10, 5:10], labels[6:8, 6:8, 6:8] = 2, 3
    reference = sitk.GetImageFromArray(np.zeros(SHAPE, np.float32))
    path = tmp_path / "labels.seg.nrrd"
    write_labelmap(labels, reference, path, scheme)
    return path


def test_finding_1_a_segmentation_is_imported_on_slicer_5_8_with_names_colours_and_terminology(tmp_path, monkeypatch):
    """Finding 1: every Apply on Slicer 5.8 ended in "'vtkSegment' object has no attribute 'SetTerminology'"."""
    scheme = get_scheme("msd_task01")
    path = _seg_nrrd(tmp_path, scheme)
    scene = slicer.vtkMRMLScene()
    reference = scene_volume(scene, "flair", np.zeros(SHAPE))
    monkeypatch.setattr(slicer, "vtkMRMLSegmentationNode", SegmentationNode58)
    node = segmenter.importSegmentation(scene, path, reference, scheme, "flair MAGMS")
    segmentation = node.GetSegmentation()
    assert isinstance(segmentation, Segmentation58)
    for label in scheme.labels[1:]:
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(label.name))
        assert segment is not None, label.name
        assert segments.segmentTerminology(segment) == scheme.slicer_terminology(label.value)
        assert segment.GetColor() == pytest.approx(tuple(c / 255 for c in label.color))


def test_terminology_written_through_the_tag_is_what_slicer_5_10_reads():
    """The tag is SetTerminology's own storage in 5.10 (vtkSegment.cxx): both releases read the same entry."""
    entry = get_scheme("brats2023").slicer_terminology(2)
    segment = slicer.vtkSegment()
    segments.setSegmentTerminology(Segment58(segment), entry)
    assert segment.GetTerminology() == entry  # slicer-core 5.13 has the 5.10 method
    other = slicer.vtkSegment()
    other.SetTerminology(entry)
    assert segments.segmentTerminology(Segment58(other)) == entry
    fresh = slicer.vtkSegment()  # a new segment carries Slicer's default entry ("Tissue")
    assert segments.segmentTerminology(fresh) == fresh.GetTerminology()


def test_finding_2_training_maps_segments_by_terminology_on_slicer_5_8():
    """Finding 2: a segment whose name is no label name ("Segment_1") made GetTerminology raise on 5.8."""
    scheme = get_scheme("msd_task01")
    scene = slicer.vtkMRMLScene()
    node = SegmentationNode58()
    scene.AddNode(node)
    real = slicer.vtkMRMLSegmentationNode.GetSegmentation(node)
    coded = real.AddEmptySegment("", "Segment_1")
    real.GetSegment(coded).SetTerminology(scheme.slicer_terminology(2))
    real.AddEmptySegment("", "Segment_2")  # neither a label's name nor a terminology
    values, unknown = training.segmentValues(node, scheme)
    assert values == {coded: 2} and unknown == ["Segment_2"]


def _closed_surface_segmentation(scene, reference, name="RTSTRUCT contours"):
    """A segmentation whose only representation is a closed surface, as SlicerRT imports an RTSTRUCT."""
    volumes.ensureSegmentationConverters()
    sphere = vtk.vtkSphereSource()
    center = [o + s * n / 2 for o, s, n in zip(reference.GetOrigin(), reference.GetSpacing(), reversed(SHAPE))]
    sphere.SetCenter(*center)
    sphere.SetRadius(4.0)
    sphere.SetThetaResolution(24)
    sphere.SetPhiResolution(24)
    sphere.Update()
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    node.GetSegmentation().SetSourceRepresentationName(surface)
    segment = slicer.vtkSegment()
    segment.SetName("Edema")
    segment.AddRepresentation(surface, sphere.GetOutput())
    node.GetSegmentation().AddSegment(segment)
    assert node.GetSegmentation().GetSourceRepresentationName() == surface
    assert not node.GetSegmentation().ContainsRepresentation(
        slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())
    return node


def test_finding_3_training_exports_closed_surface_segments_as_label_maps_and_leaves_the_node_as_it_was(tmp_path):
    """Finding 3: closed-surface segmentations passed Check the data, then failed at Start with a wrong reason."""
    scheme = get_scheme("msd_task01")
    scene = slicer.vtkMRMLScene()
    flair = scene_volume(scene, "FLAIR", np.random.default_rng(0).normal(size=SHAPE))
    contours = _closed_surface_segmentation(scene, flair)
    cases = [training.SceneCase("P0", {"flair": flair.GetID()}, contours.GetID())]
    manifest = training.exportSceneCases(scene, cases, ("flair",), scheme, tmp_path / "export")
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.parent / "P0" / "label.nrrd")))
    assert label.shape == SHAPE
    assert set(np.unique(label)) == {0, 1}  # Edema is value 1 of msd_task01
    assert 4 * 4 * 4 < (label == 1).sum() < 9 * 9 * 9  # about a sphere of radius 4 voxels
    labelmap = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    assert not contours.GetSegmentation().ContainsRepresentation(labelmap), "the user's node was converted in place"


# --- finding 4: volumes loaded after the panel opened -------------------------------------------------


def _tiny_bundle(tmp_path):
    from magms.config import PreprocessConfig

    return make_bundle(tmp_path / "bundle", "msd_task01", slots=("flair", "t1c"), seed=None,
                       preprocessing=PreprocessConfig(patch_size=(16, 16, 16)))


def _segmenter(scene, bundle, **kw):
    view = View()
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=kw.pop("newJob", lambda: None),
                                     localBundles=lambda: [], devices=None, **kw)
    controller.chooseBundle(str(bundle))
    return controller, view


def _names(scene, mapping):
    return {slot: scene.GetNodeByID(i).GetName() if i else None for slot, i in mapping.items()}


def test_finding_4_volumes_loaded_after_the_panel_opened_get_their_slots(tmp_path):
    """Finding 4: open the Segmenter, then load the volumes: the slots stayed empty and Apply disabled."""
    bundle = _tiny_bundle(tmp_path)
    scene = slicer.vtkMRMLScene()
    controller, view = _segmenter(scene, bundle)
    assert view.last("showApply") == ("Apply", False)
    scene_volume(scene, "AX FLAIR", np.random.default_rng(0).normal(size=SHAPE))  # drag and drop, DICOM...
    controller.poll()  # the panel's timer
    assert _names(scene, controller.mapping) == {"flair": "AX FLAIR", "t1c": None}
    assert view.last("showApply") == ("Apply", True)
    assert _names(scene, view.last("showMapping")[0]) == {"flair": "AX FLAIR", "t1c": None}


def test_finding_4_a_slot_the_user_set_is_never_overridden_by_a_later_volume(tmp_path):
    bundle = _tiny_bundle(tmp_path)
    scene = slicer.vtkMRMLScene()
    mine = scene_volume(scene, "my series 7", np.random.default_rng(0).normal(size=SHAPE))
    controller, view = _segmenter(scene, bundle)
    controller.mappingChanged({"flair": None, "t1c": mine.GetID()})  # the user chose it by hand
    scene_volume(scene, "T1 POST GAD", np.random.default_rng(1).normal(size=SHAPE))
    scene_volume(scene, "AX FLAIR", np.random.default_rng(2).normal(size=SHAPE))
    controller.poll()
    assert _names(scene, controller.mapping) == {"flair": "AX FLAIR", "t1c": "my series 7"}
    controller.mappingChanged({"flair": None, "t1c": mine.GetID()})  # the user empties FLAIR again
    controller.poll()  # no volume arrived since: the choice stays
    assert _names(scene, controller.mapping) == {"flair": None, "t1c": "my series 7"}


def test_finding_4_a_volume_counts_once_it_has_image_data(tmp_path):
    """A script (or a reader) may add a volume node before its image."""
    bundle = _tiny_bundle(tmp_path)
    scene = slicer.vtkMRMLScene()
    controller, _ = _segmenter(scene, bundle)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "AX FLAIR")
    controller.poll()
    assert controller.mapping["flair"] is None
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    node.SetAndObserveImageData(image)
    controller.poll()
    assert controller.mapping["flair"] == node.GetID()


# --- finding 5: vector, tensor and DWI volumes -----------------------------------------------------


@pytest.mark.parametrize("cls, kind", [("vtkMRMLVectorVolumeNode", "vector"), ("vtkMRMLDiffusionTensorVolumeNode", "diffusion tensor"),
                                       ("vtkMRMLDiffusionWeightedVolumeNode", "diffusion-weighted")])
def test_finding_5_vector_tensor_and_dwi_volumes_are_neither_offered_nor_guessed_and_are_refused_by_name(cls, kind):
    """Finding 5: they derive from vtkMRMLScalarVolumeNode, were guessed as MRI sequences and failed late in the child."""
    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "T1 POST GAD", np.zeros(SHAPE))
    odd = scene.AddNewNodeByClass(cls, "AX FLAIR")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk.VTK_FLOAT, 3 if cls == "vtkMRMLVectorVolumeNode" else 1)
    odd.SetAndObserveImageData(image)
    assert [n.GetName() for n in volumes.scalarVolumes(scene)] == ["T1 POST GAD"]
    mapping, _ = volumes.guessMapping(scene, ("flair", "t1c"))
    assert mapping["flair"] is None
    assert odd.IsA(volumes.NOT_IMAGE_VOLUME_TYPES[1]) or odd.IsA(volumes.NOT_IMAGE_VOLUME_TYPES[2])  # hidden by the selectors
    with pytest.raises(Exception, match=rf"'AX FLAIR' is a {kind}.*single-component scalar"):
        volumes.checkMapping(scene, {"flair": odd.GetID()}, ("flair", "t1c"))


def test_finding_5_a_scalar_volume_of_several_components_is_refused_too():
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "RGB screenshot")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    node.SetAndObserveImageData(image)
    assert volumes.scalarVolumes(scene) == []
    with pytest.raises(Exception, match="3 components per voxel"):
        volumes.checkMapping(scene, {"flair": node.GetID()}, ("flair",))


# --- finding 6: the module category -------------------------------------------------------------


@pytest.mark.parametrize("module", ["MAGMSSegmenter", "MAGMSTraining"])
def test_finding_6_the_category_is_translated_in_slicers_own_context(module):
    """Finding 6: ``_()`` (tr) made a context of its own; Slicer's modules (SegmentEditor.py at v5.8.1 and
    v5.10.0) use ``translate("qSlicerAbstractCoreModule", "Segmentation")``."""
    tree = ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "categories" for t in node.targets):
            found.append(node.value)
    assert len(found) == 1
    calls = found[0].elts
    assert calls and all(isinstance(c, ast.Call) and getattr(c.func, "id", "") == "translate" for c in calls)
    assert [[a.value for a in c.args] for c in calls] == [["qSlicerAbstractCoreModule", "Segmentation"]]


# --- finding 7: one engine record from panel to child, and what ran back ------------------------------


def test_finding_7_the_engine_record_names_what_magms_segment_takes():
    assert {k for k, _ in ENGINE_ITEMS} == set(ENGINES) and {k for k, _ in PRECISION_ITEMS} == set(PRECISIONS)
    with pytest.raises(ValueError, match="engine"):
        EngineChoice(engine="tensorrt")
    with pytest.raises(ValueError, match="precision"):
        EngineChoice(precision="int8")
    ran = EngineRan("openvino", "bf16", "cpu")
    assert parse_ran(format_ran(ran)) == ran and parse_ran("progress 1/2") is None


def test_finding_7_the_panels_engine_and_precision_reach_the_child_and_what_ran_is_shown(tmp_path):
    """Finding 7: the Segmenter never told the child which engine and precision to use."""
    bundle = _tiny_bundle(tmp_path)
    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "AX FLAIR", np.zeros(SHAPE))
    runner = FakeRunner()
    job = segmenter.SegmentationJob(scene, python="python", runner=runner)
    controller, view = _segmenter(scene, bundle, newJob=lambda: job)
    assert view.last("showEngine")[1::2] == ("auto", "auto")
    controller.setEngine("openvino")
    controller.setPrecision("fp32")
    assert view.last("showEngine")[1::2] == ("openvino", "fp32")
    controller.applyOrCancel()
    command = runner.commands[-1]  # python -m magms segment --config FILE
    options = json.loads(Path(command[command.index("--config") + 1]).read_text(encoding="utf-8"))
    assert (options["engine"], options["precision"], options["device"]) == ("openvino", "fp32", "cpu")
    runner.output.emit("ran openvino fp32 on cpu")  # the child's line once its network is ready
    assert job.ran == EngineRan("openvino", "fp32", "cpu")
    job.cancel()
    job._onRunFinished(RunState.CANCELLED, "")


def test_finding_7_an_exported_engine_runs_on_the_cpu_whatever_the_device(tmp_path):
    bundle = _tiny_bundle(tmp_path)
    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "AX FLAIR", np.zeros(SHAPE))
    job = RecordingJob()
    controller, _ = _segmenter(scene, bundle, newJob=lambda: job)
    controller.devices = [("auto", "auto"), ("cpu", "CPU"), ("cuda:0", "GPU 0")]
    controller.setDevice("cuda:0")
    controller.setEngine("onnxruntime")
    controller.applyOrCancel()
    assert job.started[-1][1]["engineChoice"] == EngineChoice(device="cpu", engine="onnxruntime", precision="auto")
    controller.setEngine("eager")
    job.running = False
    controller.applyOrCancel()
    assert job.started[-1][1]["engineChoice"] == EngineChoice(device="cuda:0", engine="eager", precision="auto")


# --- what the reviewer's reading against the releases' source found (issue #27, the fresh reading) -------


def test_review_an_engine_chosen_by_name_gets_its_packages_or_nothing_runs(monkeypatch):
    """D2: choosing ONNX Runtime (never offered: auto never picks it) or OpenVINO after a "no" failed in the
    child with a pip command a Slicer user cannot run. Now Apply asks to install that engine's packages."""
    from magms.devices import RequirementState
    from MAGMSCommonLib import dependencies

    assert [r.module for r in dependencies.engineRequirements("onnxruntime")] == ["onnxruntime", "onnx"]
    assert [r.module for r in dependencies.engineRequirements("openvino")] == ["openvino", "onnx"]
    assert dependencies.engineRequirements("auto") == () == dependencies.engineRequirements("eager")
    testing = {"on": False}
    monkeypatch.setattr(slicer, "app", type("App", (), {"testingEnabled": staticmethod(lambda: testing["on"])}), raising=False)
    monkeypatch.setattr(dependencies, "ensureInSlicer", lambda brain=False: True)
    monkeypatch.setattr(dependencies, "unmet_requirements", lambda wanted: [RequirementState(r, None) for r in wanted])
    installed, questions = [], []
    monkeypatch.setattr(dependencies, "installInSlicer", lambda states: installed.append([s.requirement.module for s in states]) or False)
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text: questions.append(text) or False, raising=False)
    assert dependencies.ensureForSegmentation(False, "onnxruntime") is False and installed == []
    assert "onnxruntime" in questions[0] and "onnxruntime>=1.17" in questions[0]
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text: True, raising=False)
    assert dependencies.ensureForSegmentation(False, "onnxruntime") is True and installed == [["onnxruntime", "onnx"]]
    # a package Slicer had loaded changed: the restart is offered and nothing starts (Apply again runs)
    restarts = []
    monkeypatch.setattr(dependencies, "installInSlicer", lambda states: True)
    monkeypatch.setattr(dependencies, "_offerRestart", lambda: restarts.append(1))
    assert dependencies.ensureForSegmentation(False, "onnxruntime") is False and restarts == [1]
    # testing mode: nothing is asked or downloaded; the child says what is missing
    testing["on"] = True
    assert dependencies.ensureForSegmentation(False, "onnxruntime") is True and restarts == [1]


def test_review_the_panel_asks_for_the_chosen_engines_packages(tmp_path):
    bundle = _tiny_bundle(tmp_path)
    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "AX FLAIR", np.zeros(SHAPE))
    job = RecordingJob()
    controller, view = _segmenter(scene, bundle, newJob=lambda: job)
    controller.setEngine("onnxruntime")
    asked = []
    controller.applyOrCancel(lambda brain, engine: asked.append((engine, view.last("showApply"))) or False)
    assert asked == [("onnxruntime", ("Installing packages...", False))] and job.started == []


def test_review_a_slot_change_while_packages_install_keeps_apply_off(tmp_path):
    """D7: pip runs Qt's event loop; a slot changed meanwhile turned the button back into an enabled Apply."""
    bundle = _tiny_bundle(tmp_path)
    scene = slicer.vtkMRMLScene()
    flair = scene_volume(scene, "AX FLAIR", np.zeros(SHAPE))
    controller, view = _segmenter(scene, bundle, newJob=RecordingJob)
    shown = []

    def installing(brain, engine):
        controller.mappingChanged({"flair": flair.GetID(), "t1c": None})  # the user, while pip runs
        shown.append(view.last("showApply"))
        return False

    controller.applyOrCancel(installing)
    assert shown == [("Installing packages...", False)] and view.last("showApply") == ("Apply", True)


def test_review_a_segmentation_under_a_transform_is_refused_by_name_before_training():
    """D1: the closed-surface copy has no transform, so its labels were written unmoved; labelmaps were moved.
    As for volumes, a transform must be hardened first."""
    scheme = get_scheme("msd_task01")
    scene = slicer.vtkMRMLScene()
    flair = scene_volume(scene, "FLAIR", np.zeros(SHAPE))
    contours = _closed_surface_segmentation(scene, flair)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    contours.SetAndObserveTransformNodeID(transform.GetID())
    cases = [training.SceneCase("P0", {"flair": flair.GetID()}, contours.GetID())]
    with pytest.raises(Exception, match="case P0: segmentation 'RTSTRUCT contours' is under transform 'registration'"):
        training.checkSceneCases(scene, cases, ("flair",), scheme)


def test_review_hidden_volumes_and_magms_maps_are_neither_guessed_nor_taken():
    """D3, D4: the selectors hide volumes hidden from editors (the guess mapped one the user could not see),
    and the disagreement map, offered by the selector, was not refused."""
    scene = slicer.vtkMRMLScene()
    hidden = scene_volume(scene, "AX FLAIR", np.zeros(SHAPE))
    hidden.SetHideFromEditors(True)
    disagreement = scene_volume(scene, "T1 POST GAD disagreement", np.zeros(SHAPE))
    disagreement.SetAttribute(volumes.ROLE_ATTRIBUTE, "disagreement")
    assert volumes.scalarVolumes(scene) == []
    assert volumes.guessMapping(scene, ("flair", "t1c"))[0] == {"flair": None, "t1c": None}
    with pytest.raises(Exception, match="'T1 POST GAD disagreement' is a disagreement map MAGMS made"):
        volumes.checkMapping(scene, {"t1c": disagreement.GetID()}, ("flair", "t1c"))


def test_the_panel_reads_magms_json_once_and_apply_passes_what_it_read(tmp_path, monkeypatch):
    """The bundle path in Slicer (#29): the model is read when chosen, and Apply hands that info to the job
    instead of reading magms.json again; the child then opens the bundle once (test_builtin counts that)."""
    import pathlib

    from magms.bundle import METADATA_FILE

    bundle = _tiny_bundle(tmp_path)
    scene = slicer.vtkMRMLScene()
    scene_volume(scene, "AX FLAIR", np.zeros(SHAPE))
    reads = []
    read_text = pathlib.Path.read_text
    monkeypatch.setattr(pathlib.Path, "read_text", lambda path, *a, **k: reads.append(path.name) or read_text(path, *a, **k))
    job = segmenter.SegmentationJob(scene, python="python", runner=FakeRunner())
    controller, _ = _segmenter(scene, bundle, newJob=lambda: job)
    assert reads.count(METADATA_FILE) == 1  # on choosing the model
    controller.applyOrCancel()
    assert job.running and reads.count(METADATA_FILE) == 1
    job.cancel()
    job._onRunFinished(RunState.CANCELLED, "")
