"""The MAGMS Segmenter's Targets (MAGMSSegmenterLib.targets) on real MRML from `slicer-core` and a real BraTS case:
targets grown from the segments as they are now, as tagged segments of the same segmentation, exported with it."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[test]')")
pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (pip install 'magms-slicer[dicom]')")

from test_segmenter_export import make_dicom_files, scene_with_case, segment_id, set_segment  # noqa: E402

from magms.errors import ConfigError, ImageError  # noqa: E402
from magms.labels import get_scheme  # noqa: E402
from magms.targets import PROTOCOLS, grow, grow_targets  # noqa: E402
from MAGMSSegmenterLib import logic  # noqa: E402
from MAGMSSegmenterLib.labelmaps import labelArray  # noqa: E402
from MAGMSSegmenterLib.targets import (  # noqa: E402
    TARGET_DESCRIPTION_TAG,
    TARGET_TYPE_TAG,
    growTargetSegments,
    segmentTag,
    targetSegmentIDs,
    volumeArray,
)

SCHEME = get_scheme("brats2021")


@pytest.fixture(scope="module")
def dicom_files(tmp_path_factory):
    return make_dicom_files(tmp_path_factory.mktemp("targets"))


@pytest.fixture
def scene_case(dicom_files):
    return scene_with_case(dicom_files, "case MAGMS")


def _mask(node, volume, name):
    return labelArray(node, volume, [(segment_id(node, name), 1)]) > 0


def test_targets_grow_from_the_segments_as_they_are_now_and_replace_only_themselves(dicom_files, scene_case):
    scene, volume, node = scene_case
    truth = dicom_files["truth"]
    edited = truth.copy()
    edited[edited == 1] = 2  # the reviewer relabelled the necrotic core as oedema: the tumour core shrinks
    set_segment(node, segment_id(node, SCHEME.label(1).name), edited == 1, volume)
    set_segment(node, segment_id(node, SCHEME.label(2).name), edited == 2, volume)
    values = logic.segmentLabelValues(node, SCHEME)
    made = growTargetSegments(node, volume, values, SCHEME, PROTOCOLS["estro-eano-2023"])
    segmentation = node.GetSegmentation()
    assert [segmentation.GetSegment(i).GetName() for i in made] == ["GTV", "CTV", "PTV", "Brain"]
    assert [segmentTag(segmentation.GetSegment(i), TARGET_TYPE_TAG) for i in made] == ["GTV", "CTV", "PTV", "ORGAN"]
    assert segmentTag(segmentation.GetSegment(made[1]), TARGET_DESCRIPTION_TAG) == "CTV = GTV + 15 mm, within the brain"
    gtv = _mask(node, volume, "GTV")
    assert np.array_equal(gtv, edited == 4)  # the edit counts: GTV = the enhancing tumour + the (now empty) core
    spacing = tuple(volume.GetSpacing())[::-1]
    brain = _mask(node, volume, "Brain")
    assert np.array_equal(_mask(node, volume, "CTV"), grow_targets(edited, _sitk(spacing, edited), SCHEME,
                                                                   PROTOCOLS["estro-eano-2023"], brain)[1].mask)
    assert np.array_equal(_mask(node, volume, "PTV"), grow(_mask(node, volume, "CTV"), spacing, 3.0))
    # the label segments are as they were; growing again (another margin) replaces the targets only
    labels_before = labelArray(node, volume, values)
    again = growTargetSegments(node, volume, values, SCHEME, PROTOCOLS["estro-eano-2023"].with_margins({"CTV": 10}))
    assert len(targetSegmentIDs(node)) == 4 and set(again).isdisjoint(made)
    assert segmentation.GetNumberOfSegments() == 3 + 4
    assert np.array_equal(labelArray(node, volume, logic.segmentLabelValues(node, SCHEME)), labels_before)
    assert _mask(node, volume, "CTV").sum() < grow(gtv, spacing, 15.0).sum()


def _sitk(spacing_zyx, array):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    return image


def test_a_brain_mask_off_the_grid_and_an_unstripped_volume_are_refused_with_nothing_changed(dicom_files, scene_case):
    scene, volume, node = scene_case
    values = logic.segmentLabelValues(node, SCHEME)
    small = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "brain (2 mm)")
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(10, 10, 10)
    image.AllocateScalars(3, 1)  # VTK_UNSIGNED_CHAR
    small.SetAndObserveImageData(image)
    count = node.GetSegmentation().GetNumberOfSegments()
    with pytest.raises(ConfigError, match="the brain mask 'brain \\(2 mm\\)' is not on the grid of '3: AX FLAIR'"):
        growTargetSegments(node, volume, values, SCHEME, PROTOCOLS["lgg"], brainNode=small)
    head = volumeArray(volume).astype(np.float32)
    head[head == head.min()] = np.random.default_rng(0).normal(50, 5, (head == head.min()).sum())  # air with noise: a head scan
    from vtk.util import numpy_support

    volume.GetImageData().GetPointData().SetScalars(numpy_support.numpy_to_vtk(head.ravel(), deep=True))
    with pytest.raises(ImageError, match="looks not skull-stripped.*--brain-mask FILE \\(Targets section, Brain mask\\)"):
        growTargetSegments(node, volume, values, SCHEME, PROTOCOLS["lgg"])
    assert node.GetSegmentation().GetNumberOfSegments() == count


def test_export_writes_the_target_segments_as_targets(dicom_files, scene_case, tmp_path):
    """The targets as the reviewer left them (the PTV trimmed by hand) go into the RT Structure Set with their types."""
    scene, volume, node = scene_case
    values = logic.segmentLabelValues(node, SCHEME)
    growTargetSegments(node, volume, values, SCHEME, PROTOCOLS["estro-eano-2023"])
    ptv = _mask(node, volume, "PTV")
    trimmed = ptv.copy()
    trimmed[: trimmed.shape[0] // 2] = False
    set_segment(node, segment_id(node, "PTV"), trimmed, volume)
    out = tmp_path / "dicom"
    out.mkdir()
    job = logic.ExportJob(scene)
    written, failures = [], []
    job.finished.connect(written.extend)
    job.failed.connect(failures.append)
    job.start(node, dicom_files["bundle"], out, "rtstruct", dicom_files["database"].get)
    job.wait(timeout=300)
    assert failures == [] and len(written) == 1
    ds = pydicom.dcmread(written[0])
    rois = list(ds.StructureSetROISequence)
    assert [r.ROIName for r in rois][-4:] == ["GTV", "CTV", "PTV", "Brain"]
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence][-4:] == ["GTV", "CTV", "PTV", "ORGAN"]
    assert rois[-3].ROIDescription == "CTV = GTV + 15 mm, within the brain"
    from test_dicom import rasterise_roi

    from magms.dicom import read_series

    series = read_series(dicom_files["folder"], dicom_files["grid"])
    slice_of_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): series.files.index(p) for p in series.files}
    drawn = rasterise_roi(ds, int(rois[-2].ROINumber), dicom_files["grid"], slice_of_uid)
    assert 2 * (drawn & trimmed).sum() / (drawn.sum() + trimmed.sum()) > 0.97  # the trimmed PTV, not the grown one
    assert not drawn[: trimmed.shape[0] // 2 - 1].any()


def test_the_targets_section_says_what_it_will_grow_and_grows_it(dicom_files, scene_case):
    """The controller (the panel without Qt): hints until it can run, the protocol's margins shown and changed by
    name, a protocol change resets them, Grow adds the targets, a refusal is shown, not raised."""
    from test_controllers import View, parameter_node

    from magms.bundle import read_bundle_info
    from MAGMSCommonLib.parameters import Parameters
    from MAGMSSegmenterLib.controller import DEFAULTS
    from MAGMSSegmenterLib.targetscontroller import TargetsController

    scene, volume, node = scene_case
    view = View()
    info = read_bundle_info(dicom_files["bundle"])
    model = [(None, None)]
    section = TargetsController(scene, view, lambda: model[0])
    section.setParameterNode(Parameters(parameter_node(scene), DEFAULTS))
    assert view.last("showTargetsSettings")[1:] == ("estro-eano-2023", [("CTV", 15.0), ("PTV", 3.0)])
    assert view.last("showTargets") == (False, "Choose the segmentation to grow targets from (a MAGMS result, edited or not).")
    section.setSegmentation(node.GetID())
    assert "Choose the model" in view.last("showTargets")[1]
    model[0] = (dicom_files["bundle"], info)
    section.setMargin("CTV", 12.0)
    enabled, hint = view.last("showTargets")
    assert enabled and "CTV = GTV + 12 mm" in hint and "PTV = CTV + 3 mm" in hint
    section.setProtocol("rtog-nrg")
    assert view.last("showTargetsSettings")[2] == [("CTV1", 20.0), ("PTV1", 3.0), ("CTV2", 20.0), ("PTV2", 3.0)]
    section.setProtocol("estro-eano-2023")
    assert section.margins() == {"CTV": 15.0, "PTV": 3.0}  # the 12 mm of before did not carry over
    section.grow()
    names = [node.GetSegmentation().GetSegment(i).GetName() for i in targetSegmentIDs(node)]
    assert names == ["GTV", "CTV", "PTV", "Brain"] and "Grew GTV, CTV, PTV, Brain" in view.last("showStatus")[0]
    node.GetSegmentation().AddEmptySegment("", "my note")  # a segment that is no label of the model
    section.grow()
    assert "Cannot grow targets: segment(s) 'my note'" in view.last("showError")[0]


def test_segments_held_as_surfaces_a_vector_mask_and_a_transform_are_refused_by_name(dicom_files, scene_case):
    """What the grid or the representation would silently get wrong is refused before anything is written."""
    from MAGMSSegmenterLib.targets import targetsProblem

    scene, volume, node = scene_case
    assert targetsProblem(node, volume) == ""
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour photo")
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(3, 3)  # VTK_UNSIGNED_CHAR, 3 components
    vector.SetAndObserveImageData(image)
    assert "volume 'colour photo' is a vector" in targetsProblem(node, volume, [vector])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    node.SetAndObserveTransformNodeID(transform.GetID())
    assert "not all under the same transform" in targetsProblem(node, volume)
    node.SetAndObserveTransformNodeID(None)
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    node.GetSegmentation().CreateRepresentation(surface)
    node.GetSegmentation().SetSourceRepresentationName(surface)
    count = node.GetSegmentation().GetNumberOfSegments()
    with pytest.raises(ConfigError, match="holds its segments as Closed surface .*make Binary labelmap its source representation"):
        growTargetSegments(node, volume, logic.segmentLabelValues(node, SCHEME), SCHEME, PROTOCOLS["lgg"])
    assert node.GetSegmentation().GetNumberOfSegments() == count
