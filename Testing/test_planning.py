"""The planning CT (magms.planning, --planning-ct): registration, its quality check, structures on the CT.

No public repository reachable here holds a CT and an MR of one patient, so the CT is simulated from
a real MR (the MNI avg152 T1 template and its tissue maps, ``Testing/simulated_ct.py``) and moved by a
known rigid transform (3, -4, 5 degrees; 15, -10, 25 mm) onto a 1 x 1 x 2.5 mm grid.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, needs_data

pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (pip install 'magms-slicer[dicom]')")
pytest.importorskip("rt_utils", reason="rt-utils is not installed (pip install 'magms-slicer[dicom]')")

from dicom_series import write_ct_series, write_mr_series  # noqa: E402
from simulated_ct import mni_images, simulated_ct  # noqa: E402

from magms.cli import main  # noqa: E402
from magms.errors import ImageError  # noqa: E402
from magms.planning import MIN_BRAIN_ON_SOFT_TISSUE, brain_on_soft_tissue, register_mr_to_ct, rotation_angle_deg  # noqa: E402

MNI = DATA / "mni_avg152"


@pytest.fixture(scope="module")
def simulated():
    if not (MNI / "canonical_avg152T1.nii.gz").exists():
        pytest.skip(f"no real data: {MNI} (set MAGMS_TEST_DATA)")
    t1, brain, tissues = mni_images(MNI)
    ct, truth = simulated_ct(t1, brain, tissues)
    return t1, brain, ct, truth


def _errors(found: sitk.Transform, truth: sitk.Transform, t1: sitk.Image, brain: sitk.Image) -> tuple[float, float]:
    """The largest distance (mm) between where the two transforms put the brain's points, and the angle between them."""
    inverse = truth.GetInverse()
    points = [inverse.TransformPoint(t1.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]]))
              for p in np.argwhere(sitk.GetArrayViewFromImage(brain))[::100]]
    distance = max(np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p))) for p in points)
    relative = np.reshape(found.GetMatrix(), (3, 3)) @ np.reshape(truth.GetMatrix(), (3, 3)).T
    return float(distance), rotation_angle_deg(relative.ravel())


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("stripped", [True, False], ids=["skull-stripped MR", "whole-head MR"])
def test_registration_recovers_a_known_rigid_transform(simulated, stripped):
    t1, brain, ct, truth = simulated
    mr = sitk.Mask(t1, brain) if stripped else t1
    found = register_mr_to_ct(ct, mr, brain)
    distance, angle = _errors(found.transform, truth, t1, brain)
    print(f"{'stripped' if stripped else 'head'}: {found.describe()}; largest error {distance:.2f} mm, {angle:.2f} degrees")
    assert distance < 1.0 and angle < 1.0
    assert found.brain_on_soft_tissue > 0.9


@needs_data
def test_the_quality_check_refuses_a_wrong_fit(simulated):
    t1, brain, ct, truth = simulated
    assert brain_on_soft_tissue(ct, brain, truth) > 0.9
    off = sitk.Euler3DTransform(truth)
    off.SetTranslation(np.add(truth.GetTranslation(), (0, 10.0, 0)))  # 10 mm off: the brain's edge on bone and air
    assert brain_on_soft_tissue(ct, brain, off) < MIN_BRAIN_ON_SOFT_TISSUE
    noise = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 500, (40, 60, 60)).astype(np.float32))
    noise.CopyInformation(sitk.Image(noise))
    with pytest.raises(ImageError, match="--planning-ct noise.dcm: .*(share no information|failed)"):
        register_mr_to_ct(noise, t1, brain, "noise.dcm")


def _tumour(t1: sitk.Image, brain: sitk.Image) -> np.ndarray:
    """A tumour in the left hemisphere: enhancing rim, necrotic centre, oedema around (BraTS 2021 values)."""
    b = sitk.GetArrayFromImage(brain).astype(bool)
    centre = np.argwhere(b).mean(axis=0) + (4, 0, 12)
    distance = np.linalg.norm(np.indices(b.shape).transpose(1, 2, 3, 0) - centre, axis=-1) * 2.0  # 2 mm voxels
    labels = np.zeros(b.shape, np.uint8)
    labels[(distance <= 24) & b] = 2
    labels[distance <= 14] = 4
    labels[distance <= 8] = 1
    return labels


@needs_data
@pytest.mark.slow
def test_export_draws_targets_on_the_planning_ct(simulated, tmp_path, capsys):
    """magms export --planning-ct: the RT Structure Set references the CT's series and frame of reference; the
    structures lie on the CT where the true transform puts them; the registration picture is written; dciodvfy passes."""
    t1, brain, ct, truth = simulated
    write_mr_series(sitk.Cast(sitk.RescaleIntensity(t1, 0, 1000), sitk.sitkFloat32), tmp_path / "mr", "T1")
    write_ct_series(ct, tmp_path / "ct", patient_id="MAGMS-TEST")
    labels = _tumour(t1, brain)
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(t1)
    sitk.WriteImage(image, str(tmp_path / "labels.nii.gz"))
    sitk.WriteImage(sitk.Cast(brain, sitk.sitkUInt8), str(tmp_path / "brain.nii.gz"))
    rt = tmp_path / "rt.dcm"
    code = main(["export", "--labels", str(tmp_path / "labels.nii.gz"), "--series", str(tmp_path / "mr"), "--rtstruct", str(rt),
                 "--planning-ct", str(tmp_path / "ct"), "--targets", "estro-eano-2023", "--brain-mask", str(tmp_path / "brain.nii.gz"),
                 "--targets-dir", str(tmp_path / "targets")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "note: MR registered to the planning CT: rotation" in captured.err
    assert str(tmp_path / "rt.registration.png") in captured.out.splitlines() and (tmp_path / "rt.registration.png").stat().st_size > 10000
    ds = pydicom.dcmread(rt)
    ct_header = pydicom.dcmread(sorted((tmp_path / "ct").glob("*.dcm"))[0], stop_before_pixels=True)
    assert ds.FrameOfReferenceUID == ct_header.FrameOfReferenceUID
    referenced = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == ct_header.SeriesInstanceUID
    assert len(referenced.ContourImageSequence) == ct.GetSize()[2]
    # the GTV on the CT grid where the true transform puts the tumour core
    ct_grid = sitk.ReadImage(str(tmp_path / "targets" / "GTV.nii.gz"))
    assert ct_grid.GetSize() == ct.GetSize()
    gtv = sitk.GetArrayFromImage(ct_grid).astype(bool)
    core = sitk.GetImageFromArray(np.isin(labels, (1, 4)).astype(np.uint8))
    core.CopyInformation(t1)
    expected = sitk.GetArrayFromImage(sitk.Resample(core, ct, truth, sitk.sitkNearestNeighbor, 0)).astype(bool)
    assert 2 * (gtv & expected).sum() / (gtv.sum() + expected.sum()) > 0.95
    if shutil.which("dciodvfy"):
        run = subprocess.run(["dciodvfy", str(rt)], capture_output=True, text=True)
        assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == []


@needs_data
def test_a_planning_ct_that_is_no_ct_is_refused(simulated, tmp_path, capsys):
    t1, brain, _, _ = simulated
    write_mr_series(sitk.Cast(sitk.RescaleIntensity(t1, 0, 1000), sitk.sitkFloat32), tmp_path / "mr", "T1")
    image = sitk.GetImageFromArray(np.zeros(sitk.GetArrayViewFromImage(t1).shape, np.uint8))
    image.CopyInformation(t1)
    sitk.WriteImage(image, str(tmp_path / "labels.nii.gz"))
    sitk.WriteImage(sitk.Cast(brain, sitk.sitkUInt8), str(tmp_path / "brain.nii.gz"))
    argv = ["export", "--labels", str(tmp_path / "labels.nii.gz"), "--series", str(tmp_path / "mr"), "--rtstruct", str(tmp_path / "rt.dcm"),
            "--targets", "lgg", "--brain-mask", str(tmp_path / "brain.nii.gz")]
    assert main([*argv, "--planning-ct", str(tmp_path / "mr")]) == 2
    assert f"--planning-ct {tmp_path / 'mr'}: a MR series, not a CT" in capsys.readouterr().err
    assert main([*argv[:5], "--targets", "lgg", "--targets-dir", str(tmp_path / "t"), "--planning-ct", str(tmp_path / "mr")]) == 2
    assert "give --rtstruct and/or --dicom-seg" in capsys.readouterr().err
    assert not (tmp_path / "rt.dcm").exists()


@needs_data
@pytest.mark.slow
def test_segment_draws_on_the_planning_ct_from_nifti_inputs(simulated, tmp_path, capsys):
    """magms segment --planning-ct: the MR is a NIfTI file (no DICOM MR series needed); the objects reference the CT."""
    t1, brain, ct, _ = simulated
    sitk.WriteImage(t1, str(tmp_path / "t1.nii.gz"))
    sitk.WriteImage(sitk.Cast(brain, sitk.sitkUInt8), str(tmp_path / "brain.nii.gz"))
    write_ct_series(ct, tmp_path / "ct")
    seg = tmp_path / "seg.dcm"
    code = main(["segment", "--input", f"t1={tmp_path / 't1.nii.gz'}", "--output", str(tmp_path / "out.seg.nrrd"), "--dicom-seg", str(seg),
                 "--planning-ct", str(tmp_path / "ct"), "--targets", "lgg", "--brain-mask", str(tmp_path / "brain.nii.gz"),
                 "--progress", "none"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    written = pydicom.dcmread(seg, stop_before_pixels=True)
    ct_header = pydicom.dcmread(sorted((tmp_path / "ct").glob("*.dcm"))[0], stop_before_pixels=True)
    assert written.FrameOfReferenceUID == ct_header.FrameOfReferenceUID
    assert written.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_header.SeriesInstanceUID
    assert [s.SegmentLabel for s in written.SegmentSequence][-4:] == ["GTV", "CTV", "PTV", "Brain"]
    assert sitk.ReadImage(str(tmp_path / "out.seg.nrrd")).GetSize() == t1.GetSize()  # the label map stays on the MR grid
