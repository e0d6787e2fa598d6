"""``magms segment``: bad inputs refused with nothing written, geometry kept, real cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, needs_data, random_unet_bundle
from magms.cli import main
from magms.inference import Segmenter
from magms.labels import get_scheme

SCHEME = get_scheme("brats2023")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return random_unet_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def _volume(shape=(20, 24, 28), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    head = ((z - shape[0] / 2) ** 2 / 64 + (y - shape[1] / 2) ** 2 / 90 + (x - shape[2] / 2) ** 2 / 130) < 1
    return (head * (100 + 40 * np.sin(x / 3.0) + rng.normal(0, 5, shape))).astype(np.float32)


def _image(array, spacing=(1.0, 1.2, 1.5), origin=(10.0, -5.0, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


@pytest.fixture
def case(tmp_path):
    paths = {}
    for i, name in enumerate(("pat_FLAIR.nii.gz", "pat_T1Gd.nrrd", "pat_t2w.mha")):
        paths[name] = tmp_path / name
        sitk.WriteImage(_image(_volume(seed=i)), str(paths[name]))
    return tmp_path, paths


def _segment(bundle, *args) -> int:
    return main(["segment", "--model", str(bundle), "--progress", "none", *map(str, args)])


def _geometry(img: sitk.Image):
    return img.GetSize(), tuple(np.round(img.GetSpacing(), 6)), tuple(np.round(img.GetOrigin(), 6)), tuple(np.round(img.GetDirection(), 6))


def test_output_on_reference_grid_with_scheme_values(bundle, case, capsys):
    folder, paths = case
    out = folder / "out.nii.gz"
    assert _segment(bundle, "--input", f"t1c={paths['pat_T1Gd.nrrd']}", "--input", f"flair={paths['pat_FLAIR.nii.gz']}",
                    "--output", out) == 0
    seg = sitk.ReadImage(str(out))
    assert _geometry(seg) == _geometry(sitk.ReadImage(str(paths["pat_FLAIR.nii.gz"])))
    assert set(np.unique(sitk.GetArrayViewFromImage(seg))) <= set(SCHEME.values)
    assert "flair+t1c\treference=flair" in capsys.readouterr().out


def test_seg_nrrd_carries_names_colours_terminology(bundle, case):
    folder, paths = case
    out = folder / "out.seg.nrrd"
    assert _segment(bundle, "--input", f"flair={paths['pat_FLAIR.nii.gz']}", "--output", out) == 0
    seg = sitk.ReadImage(str(out))
    names = [seg.GetMetaData(f"Segment{i}_Name") for i in range(3)]
    assert names == [label.name for label in SCHEME.labels[1:]]
    assert seg.GetMetaData("Segment2_LabelValue") == "3"
    assert seg.GetMetaData("Segment0_Tags").startswith("TerminologyEntry:Segmentation category and type")
    slicerio = pytest.importorskip("slicerio")
    info = slicerio.read_segmentation(str(out), skip_voxels=True)
    assert [s["name"] for s in info["segments"]] == names
    assert [s["labelValue"] for s in info["segments"]] == [1, 2, 3]


def _bad_inputs(folder, paths):
    flair = paths["pat_FLAIR.nii.gz"]
    nan = _volume()
    nan[3, 3, 3] = np.nan
    far = _image(_volume(), origin=(500.0, 500.0, 500.0))
    cases = {
        "missing file": ([f"flair={folder / 'nope.nii.gz'}"], "nope.nii.gz: no such file"),
        "2-D": ([f"flair={_write(folder / 'slice.nii.gz', sitk.GetImageFromArray(_volume()[5]))}"], "slice.nii.gz: 2-D image"),
        "4-D": ([f"flair={_write(folder / 'four.nii.gz', sitk.JoinSeries([_image(_volume())] * 2))}"], "four.nii.gz: 4-D image"),
        "single slice": ([f"flair={_write(folder / 'one.nii.gz', _image(_volume()[:1]))}"], "one.nii.gz: a single slice"),
        "NaN": ([f"flair={_write(folder / 'nan.mha', _image(nan))}"], "nan.mha: 1 voxels are NaN"),  # NIfTI writing drops NaN
        "constant": ([f"flair={_write(folder / 'flat.nii.gz', _image(np.full((20, 24, 28), 7, np.float32)))}"],
                     "flat.nii.gz: constant image"),
        "no overlap": ([f"flair={flair}", f"t2={_write(folder / 'far.nii.gz', far)}"], "t2: far.nii.gz covers only 0% of the space"),
        "slot not in bundle": ([f"pd={flair}"], "'pd' not in the model"),
        "unknown slot": ([f"xyz={flair}"], "'xyz'"),
        "bad pair": ([str(flair)], "expected SLOT=PATH"),
        "no input": ([], "--input SLOT=PATH"),
    }
    return cases


def _write(path, img):
    sitk.WriteImage(img, str(path))
    return path


BAD = ["missing file", "2-D", "4-D", "single slice", "NaN", "constant", "no overlap", "slot not in bundle", "unknown slot", "bad pair",
       "no input"]


@pytest.mark.parametrize("which", BAD)
def test_bad_input_exit_2_message_and_no_output(bundle, case, capsys, which):
    folder, paths = case
    args, message = _bad_inputs(folder, paths)[which]
    out = folder / "out.seg.nrrd"
    argv = [a for pair in args for a in ("--input", pair)]
    assert _segment(bundle, *argv, "--output", out) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not out.exists()
    assert not list(folder.glob(".*tmp*")), "temporary file left behind"


def test_existing_output_untouched_without_overwrite(bundle, case, capsys):
    folder, paths = case
    out = folder / "mine.nii.gz"
    out.write_bytes(b"the user's own file")
    args = ["--input", f"flair={paths['pat_FLAIR.nii.gz']}", "--output", out]
    assert _segment(bundle, *args) == 2
    assert "exists already (use --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's own file"
    assert _segment(bundle, *args, "--overwrite") == 0
    assert sitk.ReadImage(str(out)).GetSize() == (28, 24, 20)


def test_missing_bundle_is_named(case, capsys, tmp_path):
    _, paths = case
    assert main(["segment", "--model", str(tmp_path / "nomodel"), "--input", f"flair={paths['pat_FLAIR.nii.gz']}",
                 "--output", str(tmp_path / "o.nii.gz")]) == 2
    assert "nomodel: no such bundle folder" in capsys.readouterr().err


def test_lps_and_ras_storage_give_the_same_segmentation_in_world_space(bundle, tmp_path):
    array = _volume(seed=3)
    lps = _image(array)
    # the same voxels stored with the x and y axes reversed (RAS-like direction), same world positions
    ras = _image(array[:, ::-1, ::-1].copy(), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    ras.SetOrigin(lps.TransformIndexToPhysicalPoint((27, 23, 0)))
    assert np.allclose(ras.TransformIndexToPhysicalPoint((0, 0, 0)), lps.TransformIndexToPhysicalPoint((27, 23, 0)))
    segmenter = Segmenter(bundle, device="cpu")
    a = segmenter.segment({"flair": lps})
    b = segmenter.segment({"flair": ras})
    assert _geometry(b.reference) == _geometry(ras)
    np.testing.assert_array_equal(a.labels, b.labels[:, ::-1, ::-1])


def test_overlapping_grids_are_resampled_and_segmented(bundle, case, capsys):
    folder, paths = case
    coarse = sitk.Resample(sitk.ReadImage(str(paths["pat_T1Gd.nrrd"])), [14, 12, 10], sitk.Transform(), sitk.sitkLinear,
                           (10.0, -5.0, 3.0), (2.0, 2.4, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    coarse_path = _write(folder / "t1c_coarse.nii.gz", coarse)
    out = folder / "out.nii.gz"
    assert _segment(bundle, "--input", f"flair={paths['pat_FLAIR.nii.gz']}", "--input", f"t1c={coarse_path}", "--output", out) == 0
    assert "t1c: t1c_coarse.nii.gz resampled onto the grid of flair" in capsys.readouterr().err
    assert _geometry(sitk.ReadImage(str(out))) == _geometry(sitk.ReadImage(str(paths["pat_FLAIR.nii.gz"])))


def test_probabilities_sum_to_one(bundle, case):
    folder, paths = case
    out, probs = folder / "o.nii.gz", folder / "p.nii.gz"
    assert _segment(bundle, "--input", f"t2={paths['pat_t2w.mha']}", "--output", out, "--probabilities", probs) == 0
    p = sitk.GetArrayFromImage(sitk.ReadImage(str(probs)))
    assert p.shape == (20, 24, 28, 4)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)


def test_nothing_is_segmented_outside_the_heads_box_even_with_a_negative_fill(bundle, tmp_path):
    """Images z-scored before (BraTS 2013 files) fill the air with a negative constant: the network
    must still run only where the head is, as in training, whatever its weights say about air."""
    raw = np.pad(_volume(), 12)  # head in the middle, air around it
    head = raw > 0
    zs = np.where(head, (raw - raw[head].mean()) / raw[head].std(), -raw[head].mean() / raw[head].std()).astype(np.float32)
    assert zs.min() < -1 and (zs == 0).sum() == 0
    sitk.WriteImage(_image(zs), str(tmp_path / "flair.nii.gz"))
    seg = Segmenter(bundle, device="cpu").segment({"flair": tmp_path / "flair.nii.gz"}, probabilities=True)
    hits = np.nonzero(head)
    outside = np.ones(head.shape, dtype=bool)
    margin = 4  # the working grid is coarser (3 mm) and its probabilities are resampled back
    outside[tuple(slice(h.min() - margin, h.max() + 1 + margin) for h in hits)] = False
    assert outside.sum() > 0.4 * outside.size
    assert not seg.labels[outside].any()
    assert seg.labels[~outside].any()  # random weights do label voxels inside the box
    np.testing.assert_allclose(seg.probabilities[0][outside], 1.0, atol=1e-6)


def test_input_dir_guesses_and_prints_mapping(bundle, case, capsys):
    folder, _ = case
    out = folder.parent / f"{folder.name}_out.seg.nrrd"
    assert _segment(bundle, "--input-dir", folder, "--output", out) == 0
    captured = capsys.readouterr()
    assert "pat_T1Gd.nrrd: t1c" in captured.err and "pat_t2w.mha: t2" in captured.err
    assert "flair+t1c+t2\treference=flair" in captured.out


def test_progress_lines_for_the_slicer_runner(bundle, case, capsys):
    _, paths = case
    out = paths["pat_FLAIR.nii.gz"].parent / "o.nrrd"
    assert main(["segment", "--model", str(bundle), "--progress", "lines", "--input", f"flair={paths['pat_FLAIR.nii.gz']}",
                 "--output", str(out)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress ")]
    assert lines and lines[-1].split()[1].split("/")[0] == lines[-1].split()[1].split("/")[1]


def test_batch_goes_on_past_a_bad_case(bundle, tmp_path, capsys):
    for name, array in (("good", _volume()), ("bad", np.full((20, 24, 28), 3, np.float32))):
        (tmp_path / "cases" / name).mkdir(parents=True)
        sitk.WriteImage(_image(array), str(tmp_path / "cases" / name / "flair.nii.gz"))
    (tmp_path / "out").mkdir()
    assert _segment(bundle, "--batch", tmp_path / "cases", "--output-dir", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "1 of 2 case(s) failed" in err and "bad: flair: flair.nii.gz: constant image" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.seg.nrrd"]


def test_batch_says_each_case_in_order_with_progress_over_the_cases(bundle, tmp_path, capsys):
    names = ["c1", "c2", "c3", "c4", "c5"]
    for seed, name in enumerate(names):
        (tmp_path / "cases" / name).mkdir(parents=True)
        sitk.WriteImage(_image(_volume(seed=seed)), str(tmp_path / "cases" / name / "flair.nii.gz"))
    (tmp_path / "out").mkdir()
    assert _segment(bundle, "--batch", tmp_path / "cases", "--output-dir", tmp_path / "out", "--progress", "lines") == 0
    captured = capsys.readouterr()
    # two cases are in work at once, but each one's lines come in the cases' order
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(tmp_path / "out" / f"{n}.seg.nrrd") for n in names]
    progress = [line.split()[1] for line in captured.err.splitlines() if line.startswith("progress ")]
    assert progress == [f"{k}/5" for k in range(1, 6)]
    for name in names:  # each output is that case's own, as a run of it alone gives it
        alone = tmp_path / f"{name}-alone.seg.nrrd"
        assert _segment(bundle, "--input", f"flair={tmp_path / 'cases' / name / 'flair.nii.gz'}", "--output", alone) == 0
        batch = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{name}.seg.nrrd")))
        assert np.array_equal(batch, sitk.GetArrayFromImage(sitk.ReadImage(str(alone)))), name


def test_two_threads_segment_at_once_with_one_network_call_at_a_time(bundle):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    segmenter = Segmenter(bundle, device="cpu")
    inner, inside, most = segmenter.predictor, [0], [0]
    guard = threading.Lock()

    class Counting:  # the predictor, counting the calls in it at once
        def __getattr__(self, name):
            return getattr(inner, name)

        def __call__(self, windows, present):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)  # a slow network: calls would overlap without the Segmenter's lock
            try:
                return inner(windows, present)
            finally:
                with guard:
                    inside[0] -= 1

    images = [{"flair": _image(_volume(seed=seed))} for seed in range(4)]
    expected = [segmenter.segment(case).labels for case in images]
    segmenter.predictor = Counting()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(segmenter.segment, images))
    assert most[0] == 1
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))


@needs_data
@pytest.mark.parametrize(
    "case_dir, expected",
    [
        ("BraTS-GLI-00001-000", {"flair": "t2f", "t1": "t1n", "t1c": "t1c", "t2": "t2w"}),
        ("AURORA-metastasis", {"flair": "flair", "t1c": "t1c"}),
    ],
)
def test_real_unlabelled_cases_via_input_dir(bundle, tmp_path, capsys, case_dir, expected):
    folder = DATA / "brats_unlabelled" / case_dir
    out = tmp_path / f"{case_dir}.seg.nrrd"
    assert _segment(bundle, "--input-dir", folder, "--output", out) == 0
    err = capsys.readouterr().err
    for slot, token in expected.items():
        assert any(line.startswith(f"{n}: {slot} ")
                   for n in (p.name for p in folder.iterdir() if token in p.name.lower()) for line in err.splitlines()), (slot, err)
    flair_file = next(p for p in folder.iterdir() if expected["flair"] in p.name.lower())
    seg = sitk.ReadImage(str(out))
    assert _geometry(seg) == _geometry(sitk.ReadImage(str(flair_file)))
    assert seg.GetMetaData("Segment0_Name") == SCHEME.labels[1].name


def _write_dicom_series(img: sitk.Image, folder, description: str) -> None:
    """A real DICOM MR series, one file per slice, as SimpleITK's own example writes one."""
    folder.mkdir(parents=True)
    img16 = sitk.Cast(sitk.RescaleIntensity(img, 0, 1000), sitk.sitkInt16)
    d = img16.GetDirection()
    common = {
        "0008|0060": "MR",
        "0008|103e": description,
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
        "0020|000e": f"1.2.826.0.1.3680043.2.1125.1.{abs(hash(description)) % 10**8}",
        "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7]))),
        "0018|0050": str(img16.GetSpacing()[2]),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img16.GetDepth()):
        slice_ = img16[:, :, k]
        for tag, value in common.items():
            slice_.SetMetaData(tag, value)
        slice_.SetMetaData("0020|0032", "\\".join(map(str, img16.TransformIndexToPhysicalPoint((0, 0, k)))))
        slice_.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series_folders_as_inputs(bundle, tmp_path, capsys):
    case = tmp_path / "patient"
    _write_dicom_series(_image(_volume(seed=1), spacing=(1.0, 1.0, 2.0)), case / "AX T2 FLAIR", "AX T2 FLAIR")
    _write_dicom_series(_image(_volume(seed=2), spacing=(1.0, 1.0, 2.0)), case / "T1 POST GAD", "T1 POST GAD")
    out = tmp_path / "out.seg.nrrd"
    assert _segment(bundle, "--input-dir", case, "--output", out) == 0
    captured = capsys.readouterr()
    assert "AX T2 FLAIR: flair" in captured.err and "T1 POST GAD: t1c" in captured.err
    series = sitk.ImageSeriesReader()
    series.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(case / "AX T2 FLAIR")))
    assert _geometry(sitk.ReadImage(str(out))) == _geometry(series.Execute())
    assert _segment(bundle, "--input", f"flair={case / 'AX T2 FLAIR'}", "--output", tmp_path / "o2.nii.gz") == 0


def test_folder_without_dicom_is_named(bundle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _segment(bundle, "--input", f"flair={tmp_path / 'empty'}", "--output", tmp_path / "o.nii.gz") == 2
    assert "empty: a folder without a DICOM series" in capsys.readouterr().err
