"""The four data layouts `magms train` and `magms evaluate` read, and the checks made before training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from magms.data.cases import find_cases
from magms.data.checks import check_cases
from magms.data.inputs import prepare_inputs
from magms.data.io import read_image
from magms.errors import ConfigError, ImageError
from magms.labels import get_scheme

SHAPE = (10, 11, 12)  # z, y, x


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def _label() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 3:7, 4:8] = 1
    label[3:5, 4:6, 5:7] = 3
    return label


def _write(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array, isVector=False)
    img.SetSpacing(spacing[: img.GetDimension()] + (1.0,) * (img.GetDimension() - len(spacing)))
    sitk.WriteImage(img, str(path))
    return path


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(read_image(path))


def test_msd_task_folder_reads_each_modality_from_its_4d_volume(tmp_path):
    names = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}  # as in Task01_BrainTumour
    training = []
    for k in range(2):
        stack = np.stack([_volume(10 * k + c) for c in range(4)])  # (4, z, y, x) = 4-D (x, y, z, 4)
        _write(tmp_path / "imagesTr" / f"BRATS_00{k}.nii.gz", stack)
        _write(tmp_path / "labelsTr" / f"BRATS_00{k}.nii.gz", _label())
        training.append({"image": f"./imagesTr/BRATS_00{k}.nii.gz", "label": f"./labelsTr/BRATS_00{k}.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": names, "labels": {"0": "background"}, "training": training}))

    cases = find_cases(tmp_path)
    assert [c.name for c in cases] == ["BRATS_000", "BRATS_001"]
    assert list(cases[1].images) == ["flair", "t1", "t1c", "t2"]
    for c, slot in enumerate(cases[1].images):
        np.testing.assert_array_equal(_array(cases[1].images[slot]), _volume(10 + c))
    assert cases[0].label == tmp_path / "labelsTr" / "BRATS_000.nii.gz"
    # the wanted slots only, in the network's order; the whole case passes the pre-training checks
    picked = find_cases(tmp_path, ("t1c", "flair"))
    assert list(picked[0].images) == ["flair", "t1c"]
    check_cases(picked, ("t1c", "flair"), get_scheme("msd_task01"))
    prepared = prepare_inputs(picked[0].images, ("flair", "t1c"))
    assert prepared.images["flair"].GetSize() == SHAPE[::-1]


def test_nnunet_v2_raw_dataset_with_a_missing_channel(tmp_path):
    meta = {"channel_names": {"0": "T2", "1": "FLAIR"}, "labels": {"background": 0, "edema": 1}, "numTraining": 2, "file_ending": ".nrrd"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for k, case in enumerate(["glio_001", "glio_002"]):
        _write(tmp_path / "imagesTr" / f"{case}_0000.nrrd", _volume(k))
        if case == "glio_001":
            _write(tmp_path / "imagesTr" / f"{case}_0001.nrrd", _volume(k + 5))
        _write(tmp_path / "labelsTr" / f"{case}.nrrd", _label())
    cases = find_cases(tmp_path)
    assert [(c.name, list(c.images)) for c in cases] == [("glio_001", ["t2", "flair"]), ("glio_002", ["t2"])]
    np.testing.assert_array_equal(_array(cases[0].images["flair"]), _volume(5))
    assert all(c.label == tmp_path / "labelsTr" / f"{c.name}.nrrd" for c in cases)


def test_case_folders_and_manifest_agree(tmp_path):
    for k in range(2):
        _write(tmp_path / "folders" / f"p{k}" / "Flair_subtrMeanDivStd.nii.gz", _volume(k))
        _write(tmp_path / "folders" / f"p{k}" / "T1c_subtrMeanDivStd.nii.gz", _volume(k + 5))
        _write(tmp_path / "folders" / f"p{k}" / "OTMultiClass.nii.gz", _label())
    manifest = tmp_path / "folders" / "cases.csv"
    manifest.write_text("case,T1c,FLAIR,label\n"
                        "p0,p0/T1c_subtrMeanDivStd.nii.gz,p0/Flair_subtrMeanDivStd.nii.gz,p0/OTMultiClass.nii.gz\n"
                        "p1,,p1/Flair_subtrMeanDivStd.nii.gz,p1/OTMultiClass.nii.gz\n")
    from_folders = find_cases(tmp_path / "folders")
    from_csv = find_cases(manifest)
    assert [c.name for c in from_folders] == [c.name for c in from_csv] == ["p0", "p1"]
    assert from_folders[0].images == from_csv[0].images and from_folders[0].label == from_csv[0].label
    assert list(from_csv[1].images) == ["flair"]  # the empty cell: T1c missing for p1


def test_dataset_json_errors_name_the_file(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ConfigError, match="dataset.json: cannot be read as JSON"):
        find_cases(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "spectroscopy"}, "training": []}))
    with pytest.raises(ConfigError, match="no channel of 'modality' names a known modality"):
        find_cases(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ConfigError, match="neither an MSD"):
        find_cases(tmp_path)


def test_every_bad_case_is_reported_in_one_run(tmp_path):
    """Missing file, NaN, empty, constant, 2-D, 4-D, images apart in space, label values: one message each."""
    root = tmp_path / "bad"
    lines = ["case,flair,t1c,label"]

    def case(name: str, flair, t1c, label=_label(), t1c_origin=None) -> None:
        paths = []
        for slot, array in (("flair", flair), ("t1c", t1c), ("label", label)):
            if array is None:
                paths.append(f"{name}/{slot}.nii.gz")  # named in the manifest, never written
                continue
            path = _write(root / name / f"{slot}.nii.gz", array)
            if slot == "t1c" and t1c_origin is not None:
                img = sitk.ReadImage(str(path))
                img.SetOrigin(t1c_origin)
                sitk.WriteImage(img, str(path))
            paths.append(f"{name}/{slot}.nii.gz")
        lines.append(",".join([name, *paths]))

    nan = _volume(1)
    nan[0, 0, 0] = np.nan
    bad_label = _label()
    bad_label[0, 0, 0] = 9
    case("good", _volume(0), _volume(1))
    case("missing", _volume(0), None)
    case("nan", nan, _volume(1))
    case("constant", _volume(0), np.full(SHAPE, 3.0, np.float32))
    case("flat", _volume(0)[0], _volume(1))                       # 2-D
    case("series", np.stack([_volume(0)] * 2), _volume(1))         # 4-D
    case("apart", _volume(0), _volume(1), t1c_origin=(500.0, 0.0, 0.0))
    case("labels", _volume(0), _volume(1), bad_label)
    (root / "cases.csv").write_text("\n".join(lines) + "\n")

    with pytest.raises(ImageError) as info:
        check_cases(find_cases(root / "cases.csv"), ("flair", "t1c"), get_scheme("msd_task01"))
    message = str(info.value)
    assert message.startswith("7 problem(s) in the data")
    for expected in (
        "missing: t1c: ", "t1c.nii.gz: no such file",
        "nan: flair: flair.nii.gz: 1 voxels are NaN or infinite",
        "constant: t1c: t1c.nii.gz: constant image",
        "flat: flair: flair.nii.gz: 2-D image",
        "series: flair: flair.nii.gz: 4-D image (2 volumes; extract one)",
        "apart: t1c: t1c.nii.gz covers only 0% of the space",
        "labels: label.nii.gz: label values [9] are not in scheme 'msd_task01'",
    ):
        assert expected in message, (expected, message)
    assert "good" not in message


def test_an_explicit_validation_split(tmp_path, capsys):
    from magms.cli import main
    from magms.data.cases import Case
    from magms.training import split_cases

    cases = [Case(f"p{k}", {"flair": Path(f"p{k}.nii.gz")}, Path("l.nii.gz")) for k in range(4)]
    train, val = split_cases(cases, 0.5, 0, names=("p2",))
    assert [c.name for c in train] == ["p0", "p1", "p3"] and [c.name for c in val] == ["p2"]
    with pytest.raises(ConfigError, match="validation case.s. p9 not in the data"):
        split_cases(cases, 0.2, 0, names=("p9",))
    with pytest.raises(ConfigError, match="every case is a validation case"):
        split_cases(cases, 0.2, 0, names=[c.name for c in cases])
    # through the CLI: refused before anything is written
    for k in range(2):
        _write(tmp_path / "d" / f"p{k}" / "flair.nii.gz", _volume(k))
        _write(tmp_path / "d" / f"p{k}" / "seg.nii.gz", _label())
    assert main(["train", "--data", str(tmp_path / "d"), "--labels", "msd_task01", "--out", str(tmp_path / "m"),
                 "--val-cases", "nobody", "--device", "cpu"]) == 2
    assert "validation case(s) nobody not in the data (cases: p0, p1)" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_training_options_out_of_range_are_refused_in_one_line(tmp_path, capsys):
    from magms.cli import main

    for flags, message in ((["--kl-weight", "-1"], "kl_weight and feature_weight must be >= 0"),
                           (["--epochs", "0"], "epochs must be >= 1")):
        assert main(["train", "--data", str(tmp_path), "--labels", "msd_task01", "--out", str(tmp_path / "m"), *flags]) == 2
        assert message in capsys.readouterr().err


def test_manifest_scheme_column_maps_each_case_into_the_run_scheme(tmp_path):
    """A BraTS 2013 case (label 3, non-enhancing) trains a BraTS 2021 model: 3 -> 1 through the registry."""
    from magms.data.dataset import LoadCased

    label13 = _label()  # values 0, 1, 3: brats2013; 3 is not a brats2021 value
    _write(tmp_path / "a" / "flair.nii.gz", _volume(0))
    _write(tmp_path / "a" / "seg.nii.gz", label13)
    _write(tmp_path / "b" / "flair.nii.gz", _volume(1))
    _write(tmp_path / "b" / "seg.nii.gz", (label13 == 1).astype(np.uint8) * 4)
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case,flair,label,scheme\na,a/flair.nii.gz,a/seg.nii.gz,brats2013\nb,b/flair.nii.gz,b/seg.nii.gz,\n")
    cases = find_cases(manifest)
    assert [c.scheme for c in cases] == ["brats2013", None]
    brats2021 = get_scheme("brats2021")
    check_cases(cases, ["flair"], brats2021)  # label 3 is fine: it is brats2013's
    with pytest.raises(ImageError, match=r"a: seg.nii.gz: label values \[3\] are not in scheme 'brats2021'"):
        check_cases([dataclasses.replace(cases[0], scheme=None)], ["flair"], brats2021)
    with pytest.raises(ImageError, match="a: cannot map label scheme msd_task01 to brats2013"):
        check_cases([dataclasses.replace(cases[0], scheme="msd_task01")], ["flair"], get_scheme("brats2013"))

    loaded = LoadCased(["flair"], brats2021)({"name": "a", "images": {"flair": str(cases[0].images["flair"])},
                                              "label": str(cases[0].label), "scheme": "brats2013"})
    indices = loaded["label"][0].numpy().transpose(2, 1, 0).astype(np.int64)  # back to (z, y, x)
    expected = brats2021.encode(np.where(label13 == 3, 1, label13).astype(np.int64))
    np.testing.assert_array_equal(indices, expected)


def test_manifest_with_an_unknown_scheme_names_the_line(tmp_path):
    _write(tmp_path / "a" / "flair.nii.gz", _volume(0))
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case,flair,label,scheme\na,a/flair.nii.gz,a/seg.nii.gz,brats1999\n")
    with pytest.raises(ConfigError, match=r"cases.csv, line 2: case 'a': .*brats1999"):
        find_cases(manifest)
