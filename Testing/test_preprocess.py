"""``--preprocess``: skull-strip detection, brain extraction, co-registration, on real images (issue #16)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, make_bundle, needs_data
from magms.cli import main
from magms.config import PreprocessConfig
from magms.data import clinical
from magms.data.clinical import preprocess_inputs, register_rigid, skull_check
from magms.data.inputs import prepare_inputs
from magms.data.io import same_grid
from magms.errors import ConfigError, ImageError

SLOTS = ("flair", "t1", "t1c", "t2", "pd")
BRATS = DATA / "brats18" / "Brats18_CBICA_AQR_1" / "Brats18_CBICA_AQR_1_"
MNI = DATA / "mni_avg152"
# the known motion of the moved T1c: rotation about x, y, z (degrees) about the FLAIR's centre, shift (mm)
ROTATION_DEG, SHIFT_MM = (6.0, -5.0, 7.0), (12.0, -8.0, 6.0)


@pytest.fixture(autouse=True)
def _one_thread():
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)


def _geometry(img: sitk.Image):
    return img.GetSize(), tuple(np.round(img.GetSpacing(), 6)), tuple(np.round(img.GetOrigin(), 6)), tuple(np.round(img.GetDirection(), 6))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _never(_image):
    raise AssertionError("brain extraction ran")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    pre = PreprocessConfig(spacing=(3.0, 3.0, 3.0), patch_size=(32, 32, 32), overlap=0.25)
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "brats2021", network={"img_size": (32, 32, 32)},
                       preprocessing=pre, training={"data": "none: random weights for tests"})


# --------------------------------------------------------------------------------------------
# detection, without real data


def _ellipsoid(shape=(40, 48, 56), spacing=(1.0, 1.0, 1.0), air=None, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    inside = ((z - shape[0] / 2) ** 2 / 300 + (y - shape[1] / 2) ** 2 / 400 + (x - shape[2] / 2) ** 2 / 600) < 1
    array = np.where(inside, 100 + 20 * np.sin(x / 3.0) + rng.normal(0, 5, shape), 0.0)
    if air is not None:
        array = np.where(inside, array, np.abs(rng.normal(0, air, shape)))
    img = sitk.GetImageFromArray(array.astype(np.float32))
    img.SetSpacing(spacing)
    return img


def test_skull_check_reads_the_background_and_the_volume():
    assert skull_check(_ellipsoid()).stripped  # one exact background value, a small object
    noisy = skull_check(_ellipsoid(air=3.0))
    assert not noisy.stripped and noisy.fill_fraction < 0.01  # air holds noise
    big = skull_check(_ellipsoid(spacing=(5.0, 5.0, 5.0)))  # zero air, but 125x the volume: a head, not a brain
    assert big.fill_fraction > 0.3 and big.tissue_ml > clinical.STRIPPED_MAX_ML and not big.stripped


def test_none_notes_an_unstripped_input_and_changes_nothing():
    img = _ellipsoid(air=3.0)
    done = preprocess_inputs({"t1": img}, SLOTS, "none", extractor=_never)
    assert "t1: image looks not skull-stripped" in done.notes[0] and "--preprocess auto" in done.notes[0]
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(done.reference), sitk.GetArrayViewFromImage(img))
    with pytest.raises(ConfigError, match="preprocess must be one of"):
        preprocess_inputs({"t1": img}, SLOTS, "skullstrip")


def test_auto_takes_the_brain_of_a_stripped_input_for_the_others():
    stripped, head = _ellipsoid(seed=1), _ellipsoid(air=3.0, seed=2)
    done = preprocess_inputs({"flair": head, "t2": stripped}, SLOTS, "auto", extractor=_never)
    assert done.mask_source == "t2 (skull-stripped)" and not done.registrations
    outside = sitk.GetArrayViewFromImage(stripped) == 0
    assert not sitk.GetArrayViewFromImage(done.images["flair"])[outside].any()
    assert _geometry(done.reference) == _geometry(head)


# --------------------------------------------------------------------------------------------
# detection and extraction on real images


@needs_data
@pytest.mark.slow
def test_stripped_brats_is_detected_and_left_alone():
    inputs = {"flair": f"{BRATS}flair.nii.gz", "t1": f"{BRATS}t1.nii.gz", "t1c": f"{BRATS}t1ce.nii.gz", "t2": f"{BRATS}t2.nii.gz"}
    done = preprocess_inputs(inputs, SLOTS, "auto", extractor=_never)
    assert all(c.stripped for c in done.skull.values()), done.skull
    assert done.brain_mask is None and not done.registrations and not done.notes
    plain = prepare_inputs(inputs, SLOTS)
    for slot, image in plain.images.items():
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(done.images[slot]), sitk.GetArrayViewFromImage(image))
    unlabelled = DATA / "brats_unlabelled" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1n.nii.gz"
    assert skull_check(sitk.ReadImage(str(unlabelled))).stripped


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("contrast, slot", [("T1", "t1"), ("T2", "t2"), ("PD", "pd")])
def test_brain_extraction_of_the_whole_head_mni_template_matches_its_brain_mask(contrast, slot):
    pytest.importorskip("deepbet")
    path = MNI / f"canonical_avg152{contrast}.nii.gz"
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    assert not skull_check(image).stripped
    done = preprocess_inputs({slot: path}, SLOTS, "auto")
    assert done.mask_source == f"deepbet on {slot}" and "brain extracted with deepbet" in done.notes[-1]
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(MNI / "toolbox_FieldMap_brainmask.nii.gz"))) > 0.5
    mask = sitk.GetArrayFromImage(done.brain_mask).astype(bool)
    dice = _dice(mask, truth)
    print(f"\ndeepbet on the MNI {contrast} template: Dice {dice:.3f} to toolbox_FieldMap_brainmask")
    assert dice >= 0.90
    assert _geometry(done.reference) == _geometry(image)  # the user's grid, skull and all
    assert not sitk.GetArrayViewFromImage(done.reference)[~mask].any()


# --------------------------------------------------------------------------------------------
# co-registration on a real case moved by a known motion


def _motion(fixed: sitk.Image) -> sitk.Euler3DTransform:
    motion = sitk.Euler3DTransform()
    motion.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    motion.SetRotation(*(math.radians(a) for a in ROTATION_DEG))
    motion.SetTranslation(SHIFT_MM)
    return motion


@pytest.fixture(scope="module")
def moved_case(tmp_path_factory):
    """FLAIR as it is, T1c moved by :func:`_motion` and resampled onto an oblique 1.2 x 1.2 x 3 mm grid
    (another size, spacing, origin and direction), as a second series of the same session would be."""
    folder = tmp_path_factory.mktemp("moved")
    fixed = sitk.ReadImage(f"{BRATS}flair.nii.gz", sitk.sitkFloat32)
    t1c = sitk.ReadImage(f"{BRATS}t1ce.nii.gz", sitk.sitkFloat32)
    motion = _motion(fixed)
    tilt = sitk.Euler3DTransform()
    tilt.SetRotation(0.10, 0.05, -0.08)
    spacing = np.array([1.2, 1.2, 3.0])
    size = np.ceil((np.array(fixed.GetSize()) * np.array(fixed.GetSpacing()) + 40) / spacing).astype(int)  # the head and a margin
    direction = np.array(tilt.GetMatrix()).reshape(3, 3)
    origin = np.array(motion.GetCenter()) - direction @ (size * spacing / 2)
    # moved(q) = t1c(motion(q)): a point p of the FLAIR lies at motion^-1(p) in the moved T1c
    moved = sitk.Resample(t1c, size.tolist(), motion, sitk.sitkLinear, origin.tolist(), spacing.tolist(), direction.ravel().tolist(),
                          0.0, sitk.sitkFloat32)
    path = folder / "t1c_moved.nii.gz"
    sitk.WriteImage(moved, str(path))
    return fixed, path, motion.GetInverse()


def _landmarks(fixed: sitk.Image) -> dict[str, np.ndarray]:
    """The tumour's centre (centroid of its label) and the 8 corners of the brain's bounding box, in mm."""
    label = sitk.GetArrayFromImage(sitk.ReadImage(f"{BRATS}seg.nii.gz")) > 0
    points = {"tumour centre": np.array(fixed.TransformContinuousIndexToPhysicalPoint(np.argwhere(label).mean(0)[::-1].tolist()))}
    brain = np.argwhere(sitk.GetArrayViewFromImage(fixed) > 0)
    low, high = brain.min(0)[::-1], brain.max(0)[::-1]
    for corner in np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1).T:
        points[f"corner {tuple(int(c) for c in corner)}"] = np.array(fixed.TransformIndexToPhysicalPoint(corner.tolist()))
    return points


@needs_data
@pytest.mark.slow
def test_registration_recovers_a_known_motion_within_1_mm(moved_case):
    fixed, moved_path, truth = moved_case
    done = preprocess_inputs({"flair": f"{BRATS}flair.nii.gz", "t1c": moved_path}, SLOTS, "auto", extractor=_never)
    registration = done.registrations["t1c"]
    errors = {name: float(np.linalg.norm(np.subtract(registration.transform.TransformPoint(p.tolist()), truth.TransformPoint(p.tolist()))))
              for name, p in _landmarks(fixed).items()}
    print(f"\nTRE (mm): tumour centre {errors['tumour centre']:.2f}, bounding-box corners up to "
          f"{max(v for k, v in errors.items() if k.startswith('corner')):.2f}; {registration.describe()}")
    assert max(errors.values()) < 1.0, errors
    assert abs(registration.angle_deg - clinical._angle(_motion(fixed))) < 1.0
    assert any(n.startswith("t1c: t1c_moved.nii.gz registered to flair (another grid): rotation") for n in done.notes), done.notes
    assert _geometry(done.images["t1c"]) == _geometry(fixed) == _geometry(done.reference)


@needs_data
@pytest.mark.slow
def test_segmentation_from_moved_inputs_agrees_with_the_original(moved_case, tmp_path, capsys):
    from magms.builtin import builtin_model

    _, moved_path, _ = moved_case
    model = builtin_model()
    base = ["segment", "--model", str(model), "--progress", "none", "--input", f"flair={BRATS}flair.nii.gz"]
    assert main([*base, "--input", f"t1c={BRATS}t1ce.nii.gz", "--output", str(tmp_path / "original.nii.gz")]) == 0
    assert main([*base, "--input", f"t1c={moved_path}", "--preprocess", "auto", "--output", str(tmp_path / "moved.nii.gz")]) == 0
    err = capsys.readouterr().err
    assert "note: t1c: t1c_moved.nii.gz registered to flair" in err and "mutual information" in err
    original, moved = (sitk.ReadImage(str(tmp_path / f"{n}.nii.gz")) for n in ("original", "moved"))
    assert _geometry(moved) == _geometry(sitk.ReadImage(f"{BRATS}flair.nii.gz"))
    wt = [np.isin(sitk.GetArrayFromImage(s), (1, 2, 4)) for s in (original, moved)]
    dice = _dice(*wt)
    print(f"\nWT Dice, moved + registered vs original inputs: {dice:.3f} ({wt[0].sum()} and {wt[1].sum()} voxels)")
    assert wt[0].sum() > 1000 and dice >= 0.95


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["noise", "constant"])
def test_an_input_that_cannot_be_registered_exits_2_naming_it(moved_case, tiny_bundle, tmp_path, capsys, kind):
    """Noise on the extent of the moved T1c (another grid: auto registers it), or a constant image."""
    _, moved_path, _ = moved_case
    moved = sitk.ReadImage(str(moved_path))
    shape = sitk.GetArrayViewFromImage(moved).shape
    values = np.random.default_rng(0).normal(100, 30, shape) if kind == "noise" else np.full(shape, 100.0)
    bad = sitk.GetImageFromArray(values.astype(np.float32))
    bad.CopyInformation(moved)
    path = tmp_path / f"{kind}.nii.gz"
    sitk.WriteImage(bad, str(path))
    out = tmp_path / "out.nii.gz"
    argv = ["segment", "--model", str(tiny_bundle), "--progress", "none", "--input", f"flair={BRATS}flair.nii.gz",
            "--input", f"t1c={path}", "--preprocess", "auto", "--output", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    expected = "t1c (noise.nii.gz): cannot be registered to the reference flair" if kind == "noise" else "constant.nii.gz: constant image"
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


@needs_data
@pytest.mark.slow
def test_an_implausible_motion_is_refused(monkeypatch):
    """The MNI T2 template moved by 10 degrees and 15 mm registers; with a 5-degree limit it is refused by name."""
    t1 = sitk.ReadImage(str(MNI / "canonical_avg152T1.nii.gz"), sitk.sitkFloat32)
    t2 = sitk.Resample(sitk.ReadImage(str(MNI / "canonical_avg152T2.nii.gz"), sitk.sitkFloat32), _motion(t1), sitk.sitkLinear, 0.0)
    monkeypatch.setattr(clinical, "MAX_ROTATION_DEGREES", 5.0)
    with pytest.raises(ImageError, match=r"t2 \(t2\.nii\.gz\): registration to the reference t1 failed: it found an implausible motion"):
        register_rigid(t1, t2, "t2", "t2.nii.gz", "t1")


# --------------------------------------------------------------------------------------------
# the optional brain extractor


@pytest.fixture
def no_deepbet(monkeypatch):
    """deepbet's import fails, as when it is not installed."""
    monkeypatch.setitem(sys.modules, "deepbet", None)
    monkeypatch.setitem(sys.modules, "deepbet.bet", None)


def test_missing_deepbet_is_a_config_error_with_the_install_command(no_deepbet):
    with pytest.raises(ConfigError, match=r"pip install 'magms-slicer\[brain\]'"):
        clinical.load_brain_extractor()
    with pytest.raises(ConfigError, match="needs the optional package deepbet"):
        preprocess_inputs({"t1": _ellipsoid(air=3.0)}, SLOTS, "auto")
    # nothing to extract: no deepbet needed
    assert preprocess_inputs({"t1": _ellipsoid()}, SLOTS, "auto").brain_mask is None


@needs_data
@pytest.mark.slow
def test_without_deepbet_strip_exits_2_and_segment_still_works(no_deepbet, tiny_bundle, tmp_path, capsys):
    head = MNI / "canonical_avg152T1.nii.gz"
    base = ["segment", "--model", str(tiny_bundle), "--progress", "none", "--input", f"t1={head}"]
    assert main([*base, "--preprocess", "strip", "--output", str(tmp_path / "a.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "magms segment: error: brain extraction needs the optional package deepbet" in err
    assert "pip install 'magms-slicer[brain]'" in err and err.count("\n") == 1
    assert not (tmp_path / "a.nii.gz").exists()
    assert main([*base, "--output", str(tmp_path / "b.nii.gz")]) == 0  # --preprocess none, the default
    assert "note: t1: canonical_avg152T1.nii.gz looks not skull-stripped" in capsys.readouterr().err
    assert main(["segment", "--model", str(tiny_bundle), "--progress", "none", "--input", f"flair={BRATS}flair.nii.gz",
                 "--preprocess", "auto", "--output", str(tmp_path / "c.nii.gz")]) == 0


# --------------------------------------------------------------------------------------------
# training from raw cases


@needs_data
@pytest.mark.slow
def test_train_preprocesses_raw_cases_once_into_the_run_folder(tmp_path):
    """A whole-head case (MNI T1, and its T2 moved onto another grid) trains with --preprocess full:
    the T2 registered to the T1, both skull-stripped, the label kept; --resume reuses the files."""
    pytest.importorskip("deepbet")
    from magms.bundle import read_bundle_info

    t1 = sitk.ReadImage(str(MNI / "canonical_avg152T1.nii.gz"), sitk.sitkFloat32)
    t2 = sitk.Resample(sitk.ReadImage(str(MNI / "canonical_avg152T2.nii.gz"), sitk.sitkFloat32), [80, 96, 40], _motion(t1),
                       sitk.sitkLinear, t1.TransformContinuousIndexToPhysicalPoint((5, 6, 3)), (2.2, 2.2, 4.4), t1.GetDirection())
    case = tmp_path / "data" / "mni"
    case.mkdir(parents=True)
    sitk.WriteImage(t1, str(case / "T1w.nii.gz"))
    sitk.WriteImage(t2, str(case / "T2w.nii.gz"))
    label = np.zeros(sitk.GetArrayViewFromImage(t1).shape, np.uint8)
    label[40:48, 60:70, 30:40], label[42:46, 63:67, 33:37] = 2, 4  # a made-up "tumour" inside the brain
    seg = sitk.GetImageFromArray(label)
    seg.CopyInformation(t1)
    sitk.WriteImage(seg, str(case / "seg.nii.gz"))
    out = tmp_path / "model"
    argv = ["train", "--data", str(tmp_path / "data"), "--labels", "brats2021", "--slots", "t1,t2", "--out", str(out), "--epochs", "1",
            "--patch", "16", "--spacing", "4", "--channels", "4,8,16", "--val-fraction", "0", "--samples-per-case", "1",
            "--batch-size", "1", "--device", "cpu", "--progress", "none", "--preprocess", "full"]
    assert main(argv) == 0
    done = out.with_name(out.name + ".preprocessed") / "mni"
    stripped = {s: sitk.ReadImage(str(done / f"{s}.nii.gz")) for s in ("t1", "t2")}
    assert _geometry(stripped["t1"]) == _geometry(t1) == _geometry(stripped["t2"])
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(MNI / "toolbox_FieldMap_brainmask.nii.gz"))) > 0.5
    assert _dice(sitk.GetArrayViewFromImage(stripped["t1"]) > 0, truth) >= 0.90
    # the T2 registered back onto the T1: its brain where the T1's is
    t2_brain, t1_brain = (sitk.GetArrayViewFromImage(stripped[s]) > 0 for s in ("t2", "t1"))
    assert _dice(t2_brain, t1_brain) >= 0.95
    assert read_bundle_info(out).training["options"]["preprocess"] == "full"
    assert not any(p.suffix == ".gz" for p in out.rglob("*"))  # no patient image inside the bundle
    stamp = (done / "t1.nii.gz").stat().st_mtime_ns
    assert main([*argv[:argv.index("--epochs") + 1], "2", *argv[argv.index("--epochs") + 2:], "--resume"]) == 0
    assert (done / "t1.nii.gz").stat().st_mtime_ns == stamp  # reused, not made again


# --------------------------------------------------------------------------------------------
# what auto reads from the headers; batch


def _dicom_series(img: sitk.Image, folder, frame: str) -> None:
    folder.mkdir(parents=True)
    img16 = sitk.Cast(img, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img16.GetDepth()):
        slice_ = img16[:, :, k]
        for tag, value in {"0008|0060": "MR", "0020|0052": frame, "0020|000e": f"{frame}.1", "0020|0013": str(k + 1),
                           "0020|0032": "\\".join(map(str, img16.TransformIndexToPhysicalPoint((0, 0, k)))),
                           "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(slice_)


def test_auto_registers_a_series_from_another_dicom_frame_of_reference_on_the_same_grid(tmp_path):
    img = _ellipsoid()
    _dicom_series(img, tmp_path / "a", "1.2.826.0.1.3680043.2.1125.7.1")
    _dicom_series(img, tmp_path / "b", "1.2.826.0.1.3680043.2.1125.7.2")
    _dicom_series(img, tmp_path / "c", "1.2.826.0.1.3680043.2.1125.7.1")
    assert clinical.frame_of_reference(tmp_path / "b") == "1.2.826.0.1.3680043.2.1125.7.2"
    assert clinical.frame_of_reference(img) is None
    images = {s: sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / f))) for s, f in (("flair", "a"), ("t1", "b"))}
    assert same_grid(images["flair"], images["t1"])
    frames = {s: clinical.frame_of_reference(tmp_path / f) for s, f in (("flair", "a"), ("t1", "b"), ("t2", "c"))}
    assert clinical._needs_registration("t1", images, frames, "flair") == "another DICOM frame of reference"
    assert clinical._needs_registration("t2", {**images, "t2": images["flair"]}, frames, "flair") is None


@needs_data
@pytest.mark.slow
def test_batch_applies_preprocess_to_each_case_and_goes_on_past_a_bad_one(moved_case, tiny_bundle, tmp_path, capsys):
    _, moved_path, _ = moved_case
    moved = sitk.ReadImage(str(moved_path))
    noise = sitk.GetImageFromArray(np.random.default_rng(1).normal(100, 30, sitk.GetArrayViewFromImage(moved).shape).astype(np.float32))
    noise.CopyInformation(moved)
    for case in ("good", "bad"):
        (tmp_path / "cases" / case).mkdir(parents=True)
        (tmp_path / "cases" / case / "flair.nii.gz").symlink_to(f"{BRATS}flair.nii.gz")
    sitk.WriteImage(noise, str(tmp_path / "cases" / "bad" / "t1c.nii.gz"))
    (tmp_path / "out").mkdir()
    argv = ["segment", "--model", str(tiny_bundle), "--progress", "none", "--batch", str(tmp_path / "cases"),
            "--output-dir", str(tmp_path / "out"), "--format", ".nii.gz", "--preprocess", "auto"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of 2 case(s) failed" in err and "bad: t1c (t1c.nii.gz): cannot be registered to the reference flair" in err, err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.nii.gz"]
