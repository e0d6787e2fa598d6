"""The ``magms`` CLI: exit codes, one-line errors, and the demo on tiny and real cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, needs_data
from magms.cli import main


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(array.astype(np.float32))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


@pytest.fixture
def tiny_case(tmp_path):
    rng = np.random.default_rng(0)
    case = tmp_path / "case"
    case.mkdir()
    head = np.zeros((20, 20, 20))
    head[4:16, 4:16, 4:16] = 1
    _write(case / "pat1_FLAIR.nii.gz", head * rng.normal(100, 10, head.shape))
    _write(case / "pat1_T1Gd.nii.gz", head * rng.normal(300, 30, head.shape))
    _write(case / "pat1_seg.nii.gz", head)
    return case


def test_demo_tiny_case_runs_every_subset(tiny_case, capsys):
    assert main(["demo", "--case", str(tiny_case), "--size", "16"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "present" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["flair", "t1c", "flair + t1c"]
    assert "(1, 4, 16, 16, 16)" in out


def test_missing_case_is_one_line_error_exit_2(tmp_path, capsys):
    assert main(["demo", "--case", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: no such folder" in err and "Traceback" not in err


def test_case_without_modality_files(tmp_path, capsys):
    (tmp_path / "seg.nii.gz").write_bytes(b"")
    assert main(["demo", "--case", str(tmp_path)]) == 2
    assert "no image file whose name tells its modality" in capsys.readouterr().err


def test_mismatched_grids_named(tiny_case, capsys):
    _write(tiny_case / "pat1_FLAIR.nii.gz", np.arange(8000.0).reshape(20, 20, 20), spacing=(2.0, 2.0, 2.0))
    assert main(["demo", "--case", str(tiny_case), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "pat1_T1Gd.nii.gz" in err and "differs from pat1_FLAIR.nii.gz" in err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


@needs_data
def test_demo_on_real_case_all_15_subsets(capsys):
    assert main(["demo", "--data", str(DATA), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "T1 <- BraTS-GLI-00001-000-t1n.nii.gz" in out and "FLAIR <- BraTS-GLI-00001-000-t2f.nii.gz" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "present" not in line]
    assert len(rows) == 15
