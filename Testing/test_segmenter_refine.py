"""The Segmenter's Refine section on the real MRML of `slicer-core`, a stand-in view and a real ``magms serve`` worker:
a point placed in a click list updates the segments around it in place, edits elsewhere stay, undo gives back what
the box held, a bad click is refused with the worker alive, and the worker ends with the scene."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[test]')")

from test_controllers import View, parameter_node  # noqa: E402

from conftest import DATA, click_bundle, load_scene_volume, make_bundle, needs_data  # noqa: E402

CASE = DATA / "brats18" / "Brats18_CBICA_AMH_1"
FLAIR = CASE / "Brats18_CBICA_AMH_1_flair.nii.gz"
pytestmark = needs_data


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    """A model that takes clicks, and the automatic result on the case as a .seg.nrrd (what Apply imports)."""
    from magms.cli import main

    folder = tmp_path_factory.mktemp("refine")
    bundle = click_bundle(folder / "bundle")
    result = folder / "auto.seg.nrrd"
    assert main(["segment", "--model", str(bundle), "--input", f"flair={FLAIR}", "--output", str(result), "--engine", "eager",
                 "--device", "cpu", "--progress", "none"]) == 0
    return bundle, result


@pytest.fixture
def panel(guided):
    """A scene with the FLAIR and the imported result, and the Segmenter's controller on them."""
    from magms.bundle import read_bundle_info
    from MAGMSSegmenterLib.controller import SegmenterController
    from MAGMSSegmenterLib.results import importSegmentation

    bundle, result = guided
    scene = slicer.vtkMRMLScene()
    flair = load_scene_volume(scene, FLAIR, "FLAIR")
    segmentation = importSegmentation(scene, result, flair, read_bundle_info(bundle).scheme, "auto")
    view = View()
    controller = SegmenterController(scene, parameter_node(scene), view, newJob=lambda: None, localBundles=lambda: [], devices=None)
    controller.chooseBundle(str(bundle))
    controller.mappingChanged({"flair": flair.GetID(), "t1": None, "t1c": None, "t2": None})
    controller.refine.setSegmentation(segmentation.GetID())
    yield scene, view, controller, segmentation, flair
    controller.cleanup()


def _labels(segmentation, reference) -> np.ndarray:
    from magms.labels import get_scheme
    from MAGMSSegmenterLib.dicomexport import segmentLabelValues
    from MAGMSSegmenterLib.labelmaps import labelArray

    return labelArray(segmentation, reference, segmentLabelValues(segmentation, get_scheme("brats2021")))


def _tumour_centre_ras() -> list[float]:
    label = sitk.ReadImage(str(CASE / "Brats18_CBICA_AMH_1_seg.nii.gz"))
    k, j, i = (int(v.mean()) for v in np.nonzero(sitk.GetArrayViewFromImage(label) > 0))
    x, y, z = label.TransformIndexToPhysicalPoint([i, j, k])
    return [-x, -y, z]


def _place(controller, positive: bool, ras) -> str:
    """What the widget does on PointPositionDefinedEvent: a point placed in the click list, then (after the event) the
    handler, with the point's ID."""
    points = controller.refine.clickLists()[positive]
    pointID = points.GetNthControlPointID(points.AddControlPoint(*ras))
    controller.refine.pointPlaced(points.GetID(), pointID)
    return pointID


def _poll_until(controller, view, text: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        controller.poll()
        status = view.last("showRefineStatus")
        if status and text in status[0]:
            return status[0]
        time.sleep(0.05)
    raise AssertionError(f"no status with {text!r} within {timeout} s; last: {view.last('showRefineStatus')}, "
                         f"errors: {[a for n, a in view.calls if n == 'showError']}")


def test_a_click_updates_the_segments_around_it_keeps_edits_elsewhere_and_undo_restores_the_box(panel):
    scene, view, controller, segmentation, flair = panel
    assert view.last("showRefine")[3] is True  # enabled: a model that takes clicks, a mapping, a segmentation
    # the user's own edit far from the click: a voxel of edema in a corner
    from MAGMSSegmenterLib.labelmaps import labelArray, setSegmentMask

    edemaID = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Peritumoral edema (ED)")
    edema = labelArray(segmentation, flair, [(edemaID, 1)]) > 0
    edema[2, 2, 2] = True
    setSegmentMask(segmentation, edemaID, edema, flair)
    before = _labels(segmentation, flair)

    _place(controller, False, _tumour_centre_ras())
    _poll_until(controller, view, "applied")
    after = _labels(segmentation, flair)
    changed = np.argwhere(after != before)
    assert changed.size and after[2, 2, 2] == before[2, 2, 2] == 2  # changed near the click, the far edit kept
    assert (changed.max(axis=0) - changed.min(axis=0) <= 101).all()  # within the click's box (48 voxels of 2 mm)
    assert controller.refine.clickLists()[False].GetNumberOfControlPoints() == 1

    controller.refine.undo()
    assert np.array_equal(_labels(segmentation, flair), before)
    assert controller.refine.clickLists()[False].GetNumberOfControlPoints() == 0

    # an edit inside the click's box, where the click changes nothing, stays too; undo gives back the box as it was
    assert not controller.refine.session.history
    _place(controller, False, _tumour_centre_ras())
    _poll_until(controller, view, "applied")
    patch = controller.refine.session.history[-1].patch
    assert patch.changed is not None and patch.changed.any() and not patch.changed.all()
    controller.refine.undo()
    corner = tuple(int(np.argwhere(~patch.changed)[0][a]) + patch.region[a].start for a in range(3))
    edema = labelArray(segmentation, flair, [(edemaID, 1)]) > 0
    edema[corner] = not edema[corner]
    setSegmentMask(segmentation, edemaID, edema, flair)
    edited = _labels(segmentation, flair)
    _place(controller, False, _tumour_centre_ras())
    _poll_until(controller, view, "applied")
    assert _labels(segmentation, flair)[corner] == edited[corner]
    controller.refine.undo()
    assert np.array_equal(_labels(segmentation, flair), edited)


def test_undo_takes_the_right_point_after_a_refused_click_and_waits_for_a_click_in_flight(panel):
    scene, view, controller, segmentation, flair = panel
    before = _labels(segmentation, flair)
    kept = _place(controller, True, _tumour_centre_ras())
    _poll_until(controller, view, "Click 1 applied")
    _place(controller, True, [5000.0, 0.0, 0.0])
    _poll_until(controller, view, "Click not applied")
    _place(controller, False, _tumour_centre_ras())
    controller.refine.undo()  # the click just placed is still in flight
    assert "undo once it is" in view.last("showRefineStatus")[0]
    _poll_until(controller, view, "Click 2 applied")
    controller.refine.undo()
    controller.refine.undo()
    adds, removes = controller.refine.clickLists()[True], controller.refine.clickLists()[False]
    assert adds.GetNumberOfControlPoints() == 0 and removes.GetNumberOfControlPoints() == 0
    assert np.array_equal(_labels(segmentation, flair), before)
    assert adds.GetNthControlPointIndexByID(kept) == -1
    _place(controller, True, _tumour_centre_ras())
    _poll_until(controller, view, "Click 1 applied")
    controller.mappingChanged({"flair": None, "t1": None, "t1c": None, "t2": None})  # another case: the worker stops
    assert controller.refine.session is None and adds.GetNumberOfControlPoints() == 0


def test_a_click_outside_the_image_is_refused_its_point_removed_and_the_worker_goes_on(panel):
    scene, view, controller, segmentation, flair = panel
    _place(controller, True, [5000.0, 0.0, 0.0])
    _poll_until(controller, view, "Click not applied")
    assert "lies outside" in view.last("showRefineStatus")[0]
    assert controller.refine.clickLists()[True].GetNumberOfControlPoints() == 0
    worker = controller.refine.session.worker
    _place(controller, True, _tumour_centre_ras())
    _poll_until(controller, view, "Click 1 applied")
    assert controller.refine.session.worker is worker and worker.running

    process = worker._process
    controller.sceneClosing()  # Close Scene: the worker ends with it
    assert controller.refine.session is None and process.wait(timeout=10) is not None


def test_the_section_says_why_it_cannot_refine_and_places_nothing(panel, tmp_path):
    scene, view, controller, segmentation, flair = panel
    controller.chooseBundle(str(make_bundle(tmp_path / "plain", slots=("flair", "t1", "t1c", "t2"))))
    enabled, hint = view.last("showRefine")[3:]
    assert not enabled and "takes no clicks" in hint
    _place(controller, True, _tumour_centre_ras())
    assert controller.refine.session is None and controller.refine.clickLists()[True].GetNumberOfControlPoints() == 0
    assert "takes no clicks" in view.last("showRefineStatus")[0]


def test_the_worker_runs_the_python_the_panel_chose(panel):
    scene, view, controller, segmentation, flair = panel
    _place(controller, True, _tumour_centre_ras())
    assert controller.refine.session.python == sys.executable  # no PythonSlicer here: the child runs this Python
    _poll_until(controller, view, "applied")
