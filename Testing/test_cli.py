"""The ``magms`` CLI: exit codes, one-line errors, and the demo on tiny and real cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

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


def test_demo_trains_then_segments_with_overlays(sample_data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--data", str(sample_data), "--out", str(out), "--minutes", "0.02", "--spacing", "1",
            "--patch", "16", "--channels", "4,8,16", "--device", "cpu", "--progress", "none"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "new: flair (new-t2f.nii.gz) -> new.seg.nrrd, new.png" in printed
    assert (out / "model" / "magms.json").is_file()
    assert (out / "new.png").read_bytes()[:4] == b"\x89PNG"
    seg = sitk.ReadImage(str(out / "new.seg.nrrd"))
    assert seg.GetSize() == (20, 20, 20) and seg.GetMetaData("Segment0_Name") == "Necrosis"
    assert main(argv) == 0  # second run reuses the model
    assert "using the model in" in capsys.readouterr().out


def test_demo_without_sample_data_is_one_line_error(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
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
    assert json.loads((tmp_path / "d.json").read_text()) == report


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
