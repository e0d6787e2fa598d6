"""The ``magms`` CLI: exit codes, one-line errors, and the demo on tiny and real cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_bundle
from magms.cli import main


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(array.astype(np.float32))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


@pytest.fixture
def sample_data(tmp_path):
    """The sample-data layout in miniature: two labelled cases and one unlabelled case."""
    rng = np.random.default_rng(0)
    label = np.zeros((20, 20, 20), np.uint8)
    label[6:13, 6:13, 6:13] = 2
    label[8:11, 8:11, 8:11] = 4
    for name in ("p1", "p2"):
        case = tmp_path / "data" / "brats_flair_t1c" / name
        case.mkdir(parents=True)
        _write(case / "Flair_x.nii.gz", label + rng.normal(5, 1, label.shape))
        _write(case / "T1c_x.nii.gz", 2 * label + rng.normal(5, 1, label.shape))
        _write(case / "OTMultiClass.nii.gz", label)
    case = tmp_path / "data" / "brats_unlabelled" / "new"
    case.mkdir(parents=True)
    _write(case / "new-t2f.nii.gz", label + rng.normal(5, 1, label.shape))
    return tmp_path / "data"


@pytest.fixture
def tiny_bundle(tmp_path):
    """A random FLAIR + T1c bundle validated on the sample case p2."""


    return make_bundle(tmp_path / "bundle", "brats2013", slots=("flair", "t1c"),
                       training={"validation_cases": ["p2", "not_in_the_sample_data"]})


def test_demo_segments_every_subset_and_tables_the_held_out_cases(sample_data, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--data", str(sample_data), "--out", str(out), "--model", str(tiny_bundle), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    # the unlabelled case has FLAIR only; the held-out labelled case p2 both: every subset of each
    assert "new: flair (new-t2f.nii.gz) -> new/flair.seg.nrrd, flair.png" in printed
    for subset in ("flair", "t1c", "flair+t1c"):
        assert f"p2/{subset}.seg.nrrd" in printed
        assert (out / "p2" / f"{subset}.png").read_bytes()[:4] == b"\x89PNG"
        seg = sitk.ReadImage(str(out / "p2" / f"{subset}.seg.nrrd"))
        assert seg.GetSize() == (20, 20, 20) and seg.GetMetaData("Segment0_Name") == "Necrosis"
    assert not (out / "p1").exists()  # p1 trained the model (it is not among the validation cases)
    summary = (out / "evaluation" / "summary.md").read_text(encoding="utf-8")
    assert "| flair+t1c |" in summary and (out / "evaluation" / "heatmap.png").is_file()
    assert "Dice per modality subset on 1 held-out case(s) (p2):" in printed and "| subset |" in printed


def test_demo_train_trains_once_then_reuses_the_model(sample_data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--train", "--data", str(sample_data), "--out", str(out), "--minutes", "0.02", "--spacing", "1",
            "--patch", "16", "--channels", "4,8,16", "--device", "cpu", "--progress", "none"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "new: flair (new-t2f.nii.gz) -> new/flair.seg.nrrd" in printed
    assert (out / "model" / "magms.json").is_file()
    assert main(argv) == 0  # second run reuses the model
    assert "using the model in" in capsys.readouterr().out
    assert main([*argv, "--model", str(out / "model")]) == 2
    assert "give --train or --model, not both" in capsys.readouterr().err


def test_demo_without_sample_data_is_one_line_error(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sample data not found" in err and "Traceback" not in err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_devices_lists_the_cpu_and_the_versions_as_json(tmp_path, capsys):
    import json

    assert main(["devices"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["devices"][-1]["key"] == "cpu" and report["versions"]["torch"] and report["versions"]["magms"]
    assert main(["devices", "--output", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text(encoding="utf-8")) == report


def test_train_check_only_checks_every_case_and_writes_nothing(sample_data, tmp_path, capsys):
    out = tmp_path / "never"
    argv = ["train", "--data", str(sample_data / "brats_flair_t1c"), "--labels", "brats2013", "--out", str(out), "--check-only"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "2 case(s) are fine; slots flair, t1c"
    (sample_data / "brats_flair_t1c" / "p2" / "OTMultiClass.nii.gz").unlink()
    assert main(argv) == 2
    assert "p2: no label file" in capsys.readouterr().err
    assert not out.exists()


def test_a_config_file_gives_the_options_and_flags_win(sample_data, tmp_path, capsys):
    import json

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data": str(sample_data / "brats_flair_t1c"), "labels": "brats2013", "out": str(tmp_path / "o"),
                                  "check_only": True, "slots": ["flair"]}))
    assert main(["train", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "2 case(s) are fine; slots flair"
    assert main(["train", "--config", str(config), "--slots", "flair,t1c"]) == 0
    assert capsys.readouterr().out.strip().endswith("slots flair, t1c")
    config.write_text(json.dumps({"data": "d", "labels": "brats2013", "out": "o", "epoch": 3}))
    assert main(["train", "--config", str(config)]) == 2
    assert "unknown option(s) 'epoch'" in capsys.readouterr().err


def test_check_only_reads_slot_aliases_as_training_does(sample_data, capsys):
    argv = ["train", "--data", str(sample_data / "brats_flair_t1c"), "--labels", "brats2013", "--out", "o", "--check-only"]
    assert main([*argv, "--slots", "t2f,T1ce"]) == 0  # aliases of flair and t1c
    assert capsys.readouterr().out.strip() == "2 case(s) are fine; slots flair, t1c"


def test_demo_uses_the_built_in_model_by_default(sample_data, builtin_models_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--data", str(sample_data), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"model {builtin_models_folder / 'tiny-4seq'}: slots flair, t1, t1c, t2" in printed
    assert (out / "new" / "flair.seg.nrrd").is_file()
    # the tiny model has no validation cases: no table, said so
    assert "no labelled sample case the model was not trained on" in printed


def test_export_options_with_series_files_round_trip_through_a_config_file(tmp_path):
    """The Segmenter hands magms export the DICOM database's files of a series: a tuple of paths in the JSON file."""
    from magms.commands import ExportOptions

    options = ExportOptions(labels=tmp_path / "l.nrrd", series=(tmp_path / "a.dcm", tmp_path / "b.dcm"), rtstruct=tmp_path / "o.dcm")
    options.save(tmp_path / "export.json")
    assert ExportOptions.load(tmp_path / "export.json") == options
