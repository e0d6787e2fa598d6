"""``magms evaluate``: metrics equal hand computation; reports per subset."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, make_bundle, needs_data
from magms.cli import main
from magms.config import PreprocessConfig
from magms.evaluate import FIELDS, LESION_FIELDS
from magms.labels import get_scheme
from magms.metrics import binary_metrics, case_metrics
from magms.modalities import subsets_of


def _mask(shape, *points):
    m = np.zeros(shape, bool)
    for p in points:
        m[p] = True
    return m


def test_dice_and_hd95_equal_hand_computation():
    shape = (8, 8, 8)
    cube = np.zeros(shape, bool)
    cube[2:4, 2:4, 2:4] = True
    assert binary_metrics(cube, cube, (1, 1, 1)) == (1.0, 0.0)
    # two single voxels 3 apart along axis 0, which is 2 mm thick: Dice 0, HD95 6 mm
    dice, hd95 = binary_metrics(_mask(shape, (2, 2, 2)), _mask(shape, (5, 2, 2)), (2.0, 1.0, 1.0))
    assert dice == 0.0 and hd95 == pytest.approx(6.0)
    # prediction {a}, truth {a, b} with b one voxel away: Dice 2*1/(1+2); the truth->prediction
    # distances are {0, 1}, whose 95th percentile (linear) is 0.95
    dice, hd95 = binary_metrics(_mask(shape, (2, 2, 2)), _mask(shape, (2, 2, 2), (2, 2, 3)), (1.0, 1.0, 1.0))
    assert dice == pytest.approx(2 / 3) and hd95 == pytest.approx(0.95)
    empty = np.zeros(shape, bool)
    assert binary_metrics(empty, empty, (1, 1, 1)) == (1.0, 0.0)
    d, h = binary_metrics(cube, empty, (1, 1, 1))
    assert d == 0.0 and math.isnan(h)


def test_case_metrics_labels_and_regions():
    scheme = get_scheme("brats2023")
    truth = np.zeros((6, 6, 6), np.int64)
    truth[1:3, 1:3, 1:3] = 2  # edema, 8 voxels
    truth[3:5, 3:5, 3:5] = 3  # enhancing, 8 voxels
    pred = truth.copy()
    pred[3:5, 3:5, 3:5] = 1  # enhancing called necrotic core
    rows = {r["target"]: r for r in case_metrics(pred, truth, scheme, (1, 1, 1))}
    assert rows["edema"]["dice"] == 1.0
    assert rows["enhancing"]["dice"] == 0.0 and rows["necrotic_core"]["dice"] == 0.0
    assert rows["wt"]["dice"] == 1.0  # whole tumour is right
    assert rows["tc"]["dice"] == 1.0  # core = necrotic + enhancing: right as a region
    assert rows["et"]["dice"] == 0.0
    assert [r["kind"] for r in rows.values()] == ["label"] * 3 + ["region"] * 3


def test_subsets_of():
    assert subsets_of(("flair", "t1c")) == [("flair",), ("t1c",), ("flair", "t1c")]
    assert len(subsets_of(("flair", "t1", "t1c", "t2"))) == 15


@pytest.fixture
def dataset(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", "brats2023", slots=("flair", "t1c"))
    rng = np.random.default_rng(0)
    for name in ("case1", "case2"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        label = np.zeros((12, 14, 16), np.uint8)
        label[3:8, 4:9, 5:10] = 2
        label[5:7, 6:8, 7:9] = 4  # BraTS 2013 enhancing -> 3 in BraTS 2023
        for file, scale in (("Flair.nii.gz", 1.0), ("T1c.nii.gz", 2.0)):
            image = (scale * (label + rng.normal(5, 1, label.shape))).astype(np.float32)
            sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / file))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(folder / "OTMultiClass.nii.gz"))
    return bundle, tmp_path / "data"


def test_evaluate_writes_all_reports(dataset, tmp_path, capsys):
    bundle, data = dataset
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(bundle), "--data", str(data), "--out", str(out), "--labels", "brats2013",
                 "--device", "cpu"]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 6  # cases x subsets x (3 labels + 3 regions)
    assert {r["subset"] for r in rows} == {"flair", "t1c", "flair+t1c"}
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert list(rows[0]) == list(FIELDS + LESION_FIELDS)
    # lesion-wise values on region rows only; the 125-voxel edema is a lesion, the 8-voxel core is too small
    assert all(r[k] == "" for r in rows if r["kind"] == "label" for k in LESION_FIELDS)
    regions = [r for r in rows if r["kind"] == "region"]
    assert all(0.0 <= float(r["lesion_dice"]) <= 1.0 and 0.0 <= float(r["lesion_hd95"]) <= 374.0 for r in regions)
    assert {(r["target"], r["lesions"]) for r in regions} == {("wt", "1"), ("tc", "0"), ("et", "0")}
    assert all(int(r["lesions_missed"]) <= int(r["lesions"]) and int(r["false_positives"]) >= 0 for r in regions)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Best subset per region" in summary and "- WT (whole tumour): " in summary
    assert "| subset | WT | WT lesion-wise | TC | TC lesion-wise | ET | ET lesion-wise |" in summary
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "evaluating case1: flair+t1c" in capsys.readouterr().err
    # reports are not replaced without --overwrite
    assert main(["evaluate", "--model", str(bundle), "--data", str(data), "--out", str(out), "--labels", "brats2013"]) == 2
    assert "exist already" in capsys.readouterr().err


def test_evaluate_names_unlabelled_cases(dataset, tmp_path, capsys):
    bundle, data = dataset
    (data / "case2" / "OTMultiClass.nii.gz").unlink()
    assert main(["evaluate", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path / "r"), "--device", "cpu"]) == 2
    assert "case(s) without a label file: case2" in capsys.readouterr().err


def test_evaluate_unmappable_scheme_is_refused(dataset, tmp_path, capsys):
    bundle, data = dataset
    assert main(["evaluate", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path / "r"), "--labels", "brain_tissue",
                 "--device", "cpu"]) == 2
    assert "brain_tissue" in capsys.readouterr().err


@needs_data
def test_evaluate_real_case_via_manifest(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "bundle", "msd_task01", slots=("flair", "t1c"), network={"img_size": (32, 32, 32)},
                         preprocessing=PreprocessConfig(spacing=(3.0, 3.0, 3.0), patch_size=(32, 32, 32), overlap=0.25))
    case = DATA / "brats_flair_t1c" / "brats_2013_pat0003_1"
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,Flair,T1c,label\npat0003,{case / 'Flair_subtrMeanDivStd.nii.gz'},"
                        f"{case / 'T1c_subtrMeanDivStd.nii.gz'},{case / 'OTMultiClass.nii.gz'}\n")
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(bundle), "--data", str(manifest), "--out", str(out), "--labels", "brats2013", "--device", "cpu",
                 "--progress", "none", "--subset", "t1c,flair"]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["subset"] for r in rows} == {"flair+t1c"}
    assert {r["target"] for r in rows} == {"edema", "necrotic_core", "enhancing", "wt", "tc", "et"}
