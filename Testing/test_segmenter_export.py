"""The MAGMS Segmenter's Export to DICOM (MAGMSSegmenterLib.logic.ExportJob) on real MRML from
`slicer-core`, a real DICOM MR series written from a BraTS 2018 case, and one real `magms export`
child process.

The volume is read from the DICOM files by Slicer's own volume storage node and given the
``DICOM.instanceUIDs`` attribute that Slicer's DICOMScalarVolumePlugin sets; the DICOM database is
a lookup over the files written here (``slicer.dicomDatabase.fileForInstance`` in Slicer).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[test]')")
pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (pip install 'magms-slicer[dicom]')")
pytest.importorskip("highdicom", reason="highdicom is not installed (pip install 'magms-slicer[dicom]')")
pytest.importorskip("rt_utils", reason="rt-utils is not installed (pip install 'magms-slicer[dicom]')")

from dicom_series import write_mr_series  # noqa: E402
from test_controllers import FakeRunner  # noqa: E402
from test_dicom import _check_rtstruct, _check_seg  # noqa: E402 - the round-trip checks of the core's export
from test_segmenter_logic import snapshot  # noqa: E402

from conftest import DATA, make_bundle  # noqa: E402
from magms.data.io import read_image, write_labelmap  # noqa: E402
from magms.devices import DICOM_REQUIREMENTS, RequirementState  # noqa: E402
from magms.errors import ConfigError  # noqa: E402
from magms.labels import get_scheme  # noqa: E402
from MAGMSCommonLib.runner import RunState  # noqa: E402
from MAGMSSegmenterLib import logic  # noqa: E402

CASE = "Brats18_CBICA_AQR_1"
SCHEME = get_scheme("brats2021")  # the BraTS 2018 label values 0, 1, 2, 4


@pytest.fixture(scope="module")
def dicom_files(tmp_path_factory):
    return make_dicom_files(tmp_path_factory.mktemp("export"))


def make_dicom_files(root: Path) -> dict:
    """The case's FLAIR as a DICOM MR series, its label map as a .seg.nrrd on that series' grid, and a bundle
    with the case's label scheme, in ``root``."""
    case = DATA / "brats18" / CASE
    if not case.is_dir():
        pytest.skip(f"no real data: {case} (set MAGMS_TEST_DATA)")
    from magms.config import PreprocessConfig

    files = write_mr_series(sitk.ReadImage(str(case / f"{CASE}_flair.nii.gz")), root / "flair", "AX FLAIR")
    grid = read_image(root / "flair")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case / f"{CASE}_seg.nii.gz"))).astype(np.uint8)
    write_labelmap(truth, grid, root / "truth.seg.nrrd", SCHEME)
    bundle = make_bundle(root / "bundle", SCHEME.key, seed=None, preprocessing=PreprocessConfig(patch_size=(16, 16, 16)))
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    return {"files": files, "folder": root / "flair", "grid": grid, "truth": truth, "seg": root / "truth.seg.nrrd",
            "bundle": bundle, "database": dict(zip(uids, map(str, files))), "uids": uids}


def load_dicom_volume(scene, dicom_files, uids: bool = True):
    """The series read by Slicer's volume storage node, with the attribute Slicer's DICOM plugin sets."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "3: AX FLAIR")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(dicom_files["files"][0]))
    assert storage.ReadData(node)
    assert node.GetImageData().GetDimensions() == dicom_files["grid"].GetSize()
    if uids:
        node.SetAttribute(logic.DICOM_UIDS_ATTRIBUTE, " ".join(dicom_files["uids"]))
    return node


def set_segment(segmentation_node, segment_id: str, mask: np.ndarray, reference) -> None:
    """Replace a segment's voxels by ``mask`` (z, y, x on ``reference``'s grid), as a Segment Editor
    effect does (``vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment``)."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.astype(np.uint8).ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)


def segment_id(node, name: str) -> str:
    return node.GetSegmentation().GetSegmentIdBySegmentName(name)


def scene_with_case(dicom_files, name: str = "3: AX FLAIR MAGMS model (flair)"):
    """A scene with the case's DICOM volume and its label map imported as a MAGMS segmentation named ``name``."""
    scene = slicer.vtkMRMLScene()
    volume = load_dicom_volume(scene, dicom_files)
    node = logic.importSegmentation(scene, dicom_files["seg"], volume, SCHEME, name)
    return scene, volume, node


@pytest.fixture
def scene_with_segmentation(dicom_files):
    return scene_with_case(dicom_files)


def test_export_writes_the_segments_as_they_are_now_as_rtstruct_and_seg(dicom_files, scene_with_segmentation, tmp_path):
    """A reviewer erased part of the oedema and drew an enhancing blob: both objects hold the edited
    segments, the SEG voxel for voxel, on the DICOM series the volume was loaded from."""
    scene, volume, node = scene_with_segmentation
    truth = dicom_files["truth"]
    edited = truth.copy()
    box = np.zeros(truth.shape, bool)
    box[:, :, : int(np.median(np.argwhere(truth == 2)[:, 2]))] = True  # half the oedema erased
    edited[box & (truth == 2)] = 0
    blob = np.zeros(truth.shape, bool)
    background = np.argwhere(truth == 0)
    z, y, x = background[len(background) // 3]
    blob[max(z - 3, 0):z + 3, max(y - 3, 0):y + 3, max(x - 3, 0):x + 3] = True
    blob &= truth == 0
    edited[blob] = 4
    set_segment(node, segment_id(node, SCHEME.label(2).name), edited == 2, volume)
    set_segment(node, segment_id(node, SCHEME.label(4).name), edited == 4, volume)
    assert (edited != truth).sum() > 1000
    before = snapshot(scene)

    out = tmp_path / "dicom"
    out.mkdir()
    job = logic.ExportJob(scene)
    written, failures = [], []
    job.finished.connect(written.extend)
    job.failed.connect(failures.append)
    job.start(node, dicom_files["bundle"], out, "both", dicom_files["database"].get)
    temporary = job.folder
    job.wait(timeout=300)
    assert failures == [] and written == [out / "3_ AX FLAIR MAGMS model (flair).rtstruct.dcm",
                                          out / "3_ AX FLAIR MAGMS model (flair).seg.dcm"]
    _check_seg(written[1], dicom_files["folder"], edited)  # exactly the current segments
    _check_rtstruct(written[0], dicom_files["folder"], dicom_files["grid"], edited)  # the scheme's structures, contours Dice >= 0.95
    assert snapshot(scene) == before  # the scene was only read
    assert not temporary.exists()
    # a second export never replaces the first
    assert logic.exportPaths(out, node.GetName(), ("rtstruct", "seg"))["seg"].name == "3_ AX FLAIR MAGMS model (flair) 2.seg.dcm"


def test_a_reference_volume_not_from_the_dicom_database_is_refused_with_nothing_started(dicom_files, tmp_path):
    scene = slicer.vtkMRMLScene()
    volume = load_dicom_volume(scene, dicom_files, uids=False)  # as if loaded from NIfTI
    node = logic.importSegmentation(scene, dicom_files["seg"], volume, SCHEME, "seg")
    before = snapshot(scene)
    runner = FakeRunner()
    job = logic.ExportJob(scene, runner=runner)
    with pytest.raises(ConfigError) as info:
        job.start(node, dicom_files["bundle"], tmp_path, "both", dicom_files["database"].get)
    message = str(info.value)
    assert "'3: AX FLAIR', the reference volume of 'seg', was not loaded from Slicer's DICOM database" in message
    assert "DICOM.instanceUIDs" in message and "SlicerRT" in message
    assert logic.exportProblem(node) == message
    assert runner.commands == [] and not job.running and list(tmp_path.iterdir()) == [] and snapshot(scene) == before
    # a segmentation without a reference volume says so
    bare = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn")
    assert "segmentation 'drawn' has no reference volume" in logic.exportProblem(bare)


def test_missing_export_packages_stop_the_export_with_the_install_message(scene_with_segmentation, dicom_files, tmp_path):
    scene, volume, node = scene_with_segmentation
    runner = FakeRunner()
    missing = [RequirementState(DICOM_REQUIREMENTS[1], "0.20.0"), RequirementState(DICOM_REQUIREMENTS[2], None)]
    job = logic.ExportJob(scene, runner=runner, unmet=lambda kinds: missing)
    with pytest.raises(ConfigError) as info:
        job.start(node, dicom_files["bundle"], tmp_path, "rtstruct", dicom_files["database"].get)
    message = str(info.value)
    assert message.startswith("Export to DICOM needs these Python packages:")
    assert "highdicom>=0.22: 0.20.0 is installed, which is outside that range" in message and "rt-utils>=1.2.7: not installed" in message
    assert "pip: 'highdicom>=0.22' 'rt-utils>=1.2.7'" in message
    assert runner.commands == [] and list(tmp_path.iterdir()) == []


def test_segments_that_are_not_the_models_labels_and_instances_not_in_the_database_are_refused(
        scene_with_segmentation, dicom_files, tmp_path):
    scene, volume, node = scene_with_segmentation
    runner = FakeRunner()
    job = logic.ExportJob(scene, runner=runner)
    database = dict(dicom_files["database"])
    del database[dicom_files["uids"][5]]
    with pytest.raises(ConfigError, match=r"'3: AX FLAIR': 1 of its \d+ DICOM instances are not in Slicer's DICOM database"):
        job.start(node, dicom_files["bundle"], tmp_path, "seg", database.get)
    node.GetSegmentation().AddEmptySegment("gtv", "GTV")
    with pytest.raises(ConfigError, match=r"segment\(s\) 'GTV' of .* are not labels of bundle \(Necrotic"):
        job.start(node, dicom_files["bundle"], tmp_path, "seg", dicom_files["database"].get)
    node.GetSegmentation().RemoveSegment("gtv")
    with pytest.raises(ConfigError, match="the output folder .* does not exist"):
        job.start(node, dicom_files["bundle"], tmp_path / "missing", "seg", dicom_files["database"].get)
    assert runner.commands == []
    # names are matched case-insensitively, by name or key, as imported or renamed
    segmentation = node.GetSegmentation()
    segmentation.GetSegment(segment_id(node, SCHEME.label(2).name)).SetName("EDEMA")
    assert sorted(v for _, v in logic.segmentLabelValues(node, SCHEME)) == [1, 2, 4]
    # with everything in place the job writes the labels and starts magms export on the series' files
    job.start(node, dicom_files["bundle"], tmp_path, "seg", dicom_files["database"].get)
    command = runner.commands[0]
    assert command[1:4] == ["-m", "magms", "export"]
    import json

    options = json.loads(Path(command[-1]).read_text(encoding="utf-8"))
    # the child writes into the job's temporary folder; the file reaches the chosen folder only when it has succeeded
    assert options["dicom_seg"] == str(job.folder / "3_ AX FLAIR MAGMS model (flair).seg.dcm") and options["rtstruct"] is None
    assert job.paths == {"seg": tmp_path / "3_ AX FLAIR MAGMS model (flair).seg.dcm"}
    assert sorted(options["series"]) == sorted(map(str, dicom_files["files"]))
    labels = sitk.ReadImage(options["labels"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), dicom_files["truth"])
    assert np.allclose(labels.GetOrigin(), dicom_files["grid"].GetOrigin())
    job.cancel()
    runner.finished.emit(RunState.CANCELLED, "")
    assert not job.running and not Path(options["labels"]).exists()


# --- the review's findings on the export ----------------------------------------------------------


class FailingRunner(FakeRunner):
    """A runner whose child cannot be started (PythonSlicer missing, no permission)."""

    def start(self, command, env=None, cwd=None, stdout=None):
        self.commands.append(command)
        raise FileNotFoundError(2, "No such file or directory", command[0])


def _started_export(scene_with_segmentation, dicom_files, out, formatKey="both"):
    scene, volume, node = scene_with_segmentation
    runner = FakeRunner()
    job = logic.ExportJob(scene, runner=runner)
    events = {"finished": [], "failed": [], "cancelled": []}
    job.finished.connect(events["finished"].extend)
    job.failed.connect(events["failed"].append)
    job.cancelled.connect(lambda: events["cancelled"].append(True))
    job.start(node, dicom_files["bundle"], out, formatKey, dicom_files["database"].get)
    return job, runner, events


def test_a_child_that_cannot_start_leaves_no_label_map_and_the_job_ready(scene_with_segmentation, dicom_files, tmp_path):
    """Finding 3: the start of the child sat outside the clean-up, so its OSError left the temporary folder
    with labels.nrrd (patient data) and the job 'running' for ever, its Cancel doing nothing."""
    scene, volume, node = scene_with_segmentation
    runner = FailingRunner()
    job = logic.ExportJob(scene, runner=runner)
    temporaries = set(Path(tempfile.gettempdir()).glob("magms-export-*"))
    with pytest.raises(FileNotFoundError):
        job.start(node, dicom_files["bundle"], tmp_path, "seg", dicom_files["database"].get)
    assert len(runner.commands) == 1 and not job.running and job.folder is None
    assert set(Path(tempfile.gettempdir()).glob("magms-export-*")) == temporaries and list(tmp_path.iterdir()) == []
    job.runner = FakeRunner()  # the same job starts again once the child can run
    job.runner.finished.connect(job._onRunFinished)
    job.start(node, dicom_files["bundle"], tmp_path, "seg", dicom_files["database"].get)
    assert job.running
    job.cancel()
    job.runner.finished.emit(RunState.CANCELLED, "")
    assert not job.running


def test_cancel_and_failure_leave_nothing_in_the_folder_not_even_a_temporary_file(scene_with_segmentation, dicom_files, tmp_path):
    """Finding 7: a killed child left its atomic-write temporaries (.<name>.XXXX.dcm) in the user's folder. The
    child now writes into the job's temporary folder, which goes in every case; nothing reaches the chosen folder."""
    import json

    job, runner, events = _started_export(scene_with_segmentation, dicom_files, tmp_path)
    staged = job.folder
    options = json.loads(Path(runner.commands[0][-1]).read_text(encoding="utf-8"))
    seg, rtstruct = Path(options["dicom_seg"]), Path(options["rtstruct"])
    (seg.parent / f".{seg.name}.k2j4.dcm").write_bytes(b"half")  # what a child killed in magms.files.atomic_write leaves
    rtstruct.write_bytes(b"done")
    job.cancel()
    runner.finished.emit(RunState.CANCELLED, "")
    assert events["cancelled"] == [True] and not job.running and not staged.exists() and list(tmp_path.iterdir()) == []
    job, runner, events = _started_export(scene_with_segmentation, dicom_files, tmp_path)
    runner.finished.emit(RunState.FAILED, "labels.nrrd: not on the series' grid")
    assert events["failed"] == ["labels.nrrd: not on the series' grid"] and list(tmp_path.iterdir()) == []


def test_a_file_made_meanwhile_under_the_chosen_name_is_never_replaced_nor_deleted(scene_with_segmentation, dicom_files, tmp_path):
    """Finding 7: the job deleted its target names after a failure, also a file it had not made. Now it only ever
    creates files (exclusively), after the child has succeeded, under a free name."""
    job, runner, events = _started_export(scene_with_segmentation, dicom_files, tmp_path)
    mine = tmp_path / "3_ AX FLAIR MAGMS model (flair).seg.dcm"
    mine.write_bytes(b"someone else's")  # written by another program while the export ran
    for kind, suffix in (("rtstruct", ".rtstruct.dcm"), ("seg", ".seg.dcm")):
        (job.folder / f"3_ AX FLAIR MAGMS model (flair){suffix}").write_bytes(kind.encode())
    runner.finished.emit(RunState.SUCCEEDED, "")
    numbered = [tmp_path / "3_ AX FLAIR MAGMS model (flair) 2.rtstruct.dcm", tmp_path / "3_ AX FLAIR MAGMS model (flair) 2.seg.dcm"]
    assert events["finished"] == numbered and [p.read_bytes() for p in numbered] == [b"rtstruct", b"seg"]
    assert mine.read_bytes() == b"someone else's" and not job.running
    # the folder went away while the child ran: a failure naming it, nothing raised, nothing left
    gone = tmp_path / "gone"
    gone.mkdir()
    job, runner, events = _started_export(scene_with_segmentation, dicom_files, gone, "seg")
    (job.folder / "3_ AX FLAIR MAGMS model (flair).seg.dcm").write_bytes(b"seg")
    staged = job.folder
    gone.rmdir()
    runner.finished.emit(RunState.SUCCEEDED, "")
    assert events["finished"] == [] and events["failed"][0].startswith(f"the DICOM files could not be written into {gone}")
    assert not staged.exists() and not job.running


def test_only_the_packages_of_the_chosen_objects_are_asked_for(scene_with_segmentation, dicom_files, tmp_path):
    """Finding 11: a SEG-only export asked for rt-utils (and OpenCV)."""
    scene, volume, node = scene_with_segmentation
    asked, runner = [], FakeRunner()
    job = logic.ExportJob(scene, runner=runner, unmet=lambda kinds: asked.append(kinds) or [])
    job.start(node, dicom_files["bundle"], tmp_path, "seg", dicom_files["database"].get)
    assert asked == [("seg",)]
    job.cancel()
    runner.finished.emit(RunState.CANCELLED, "")


def _grid_transform(scene, name):
    """A grid transform node as Slicer's DICOMScalarVolumePlugin makes one (identity displacements)."""
    transform = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    grid = vtk.vtkImageData()
    grid.SetDimensions(2, 2, 2)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    grid.GetPointData().GetScalars().Fill(0.0)
    oriented = slicer.vtkOrientedGridTransform()
    oriented.SetDisplacementGridData(grid)
    transform.SetAndObserveTransformToParent(oriented)
    return transform


def test_a_transform_shared_with_the_volume_is_exported_on_its_grid_and_irregular_geometry_is_named(
        scene_with_segmentation, dicom_files, tmp_path):
    """Finding 1: every transform was refused with "harden or remove it". Slicer's DICOM import puts a series with
    irregular slice geometry under a grid "acquisition transform" by default; hardening or removing it leaves a grid
    that is not the files', so magms export failed late. A transform the segmentation shares with its volume moves
    both alike: the label map on the volume's own grid is the series' grid, and the export goes on."""
    import json

    scene, volume, node = scene_with_segmentation
    moved = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 12.0)
    matrix.SetElement(1, 3, -7.0)
    moved.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(moved.GetID())
    assert "registration" in logic.exportProblem(node) and "under no transform" in logic.exportProblem(node)
    assert "harden" not in logic.exportProblem(node)
    volume.SetAndObserveTransformNodeID(moved.GetID())
    assert logic.exportProblem(node) == ""
    runner = FakeRunner()
    job = logic.ExportJob(scene, runner=runner)
    job.start(node, dicom_files["bundle"], tmp_path, "seg", dicom_files["database"].get)
    options = json.loads(Path(runner.commands[0][-1]).read_text(encoding="utf-8"))
    labels = sitk.ReadImage(options["labels"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), dicom_files["truth"])
    assert np.allclose(labels.GetOrigin(), dicom_files["grid"].GetOrigin())  # the files' grid, not the moved one
    job.cancel()
    runner.finished.emit(RunState.CANCELLED, "")

    # the plugin's name: "<volume> acquisition transform", made unique by the scene
    acquisition = _grid_transform(scene, scene.GenerateUniqueName("3: AX FLAIR acquisition transform"))
    moved.SetAndObserveTransformNodeID(acquisition.GetID())  # higher up the chain counts too
    assert logic.acquisitionTransform(volume) is acquisition
    problem = logic.exportProblem(node)
    assert problem.startswith("'3: AX FLAIR' has irregular slice geometry") and "'3: AX FLAIR acquisition transform'" in problem
    assert "cannot be exported as is" in problem and "SlicerRT" in problem and "hardening that transform does not" in problem
    with pytest.raises(ConfigError, match="irregular slice geometry"):
        job.start(node, dicom_files["bundle"], tmp_path, "seg", dicom_files["database"].get)
    # another grid transform, shared, is no acquisition transform
    acquisition.SetName("my warp")
    assert logic.acquisitionTransform(volume) is None and logic.exportProblem(node) == ""


def test_slices_that_are_not_where_the_files_put_them_are_refused_before_the_child_starts(scene_with_segmentation, dicom_files, tmp_path):
    """Finding 1 (the database's slice positions): a grid that no longer matches the files (irregular geometry left
    uncorrected or hardened, an edited origin) stopped magms export late; the database's positions say so at once."""
    scene, volume, node = scene_with_segmentation
    positions = {uid: "\\".join(str(float(v)) for v in pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient)
                 for uid, path in dicom_files["database"].items()}
    assert logic.slicePositionProblem(volume, positions.get) == ""
    assert logic.slicePositionProblem(volume, logic.noDicomDatabase) == ""  # unknown: magms export checks the files
    origin = volume.GetOrigin()
    volume.SetOrigin(origin[0], origin[1], origin[2] + 0.4)
    problem = logic.slicePositionProblem(volume, positions.get)
    assert problem.startswith("'3: AX FLAIR': DICOM instance ") and "0.40 mm from the nearest slice of the volume's voxel grid" in problem
    runner = FakeRunner()
    job = logic.ExportJob(scene, runner=runner)
    with pytest.raises(ConfigError, match="from the nearest slice"):
        job.start(node, dicom_files["bundle"], tmp_path, "seg", dicom_files["database"].get, positions=positions.get)
    assert runner.commands == [] and list(tmp_path.iterdir()) == []


def test_a_multi_frame_series_is_refused_at_once(scene_with_segmentation):
    """Finding 12: a multi-frame file (one instance for many slices) failed late in magms export."""
    scene, volume, node = scene_with_segmentation
    slices = volume.GetImageData().GetDimensions()[2]
    volume.SetAttribute(logic.DICOM_UIDS_ATTRIBUTE, "1.2.840.99.1")
    problem = logic.exportProblem(node)
    assert problem.startswith(f"'3: AX FLAIR' has {slices} slices but 1 DICOM instance(s)") and "multi-frame" in problem


def test_closed_surface_segments_are_exported_as_slicer_converts_them(dicom_files, tmp_path):
    """Finding 4: a segmentation whose source is a closed surface (an imported RTSTRUCT) could not be merged.
    It is converted to a binary label map first, as Slicer's own export does, on a copy."""
    scene = slicer.vtkMRMLScene()
    volume = load_dicom_volume(scene, dicom_files)
    volumes_module().ensureSegmentationConverters()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "imported RTSTRUCT")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    surfaceName = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    node.GetSegmentation().SetSourceRepresentationName(surfaceName)
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    centre = [(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)]
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(*centre)
    sphere.SetRadius(15.0)
    sphere.SetThetaResolution(48)
    sphere.SetPhiResolution(48)
    sphere.Update()
    segment = slicer.vtkSegment()
    segment.SetName(SCHEME.label(2).name)
    segment.AddRepresentation(surfaceName, sphere.GetOutput())
    node.GetSegmentation().AddSegment(segment, "edema")
    labelmapName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    assert not node.GetSegmentation().ContainsRepresentation(labelmapName)
    path = tmp_path / "labels.nrrd"
    logic.writeLabelsForExport(node, volume, logic.segmentLabelValues(node, SCHEME), path)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    spacing = np.prod(dicom_files["grid"].GetSpacing())
    assert set(np.unique(labels).tolist()) == {0, 2}
    assert abs((labels == 2).sum() * spacing / (4 / 3 * np.pi * 15.0 ** 3) - 1) < 0.1  # the sphere's volume
    assert not node.GetSegmentation().ContainsRepresentation(labelmapName)  # the node itself is unchanged


def volumes_module():
    from MAGMSCommonLib import volumes

    return volumes
