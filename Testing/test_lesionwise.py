"""Lesion-wise Dice and HD95 (BraTS 2023 conventions) on cases whose scores are worked out by hand.

The lesions are 4x4x4 cubes (64 voxels, above the 50 mm³ threshold at 1 mm). A prediction that is
the cube plus one more layer along an axis has Dice 2*64/(64+80) = 8/9 and, with MONAI's boundary
voxels, HD95 one voxel along that axis: only the added layer (prediction -> truth) and the four
inner voxels of the covered face (truth -> prediction) are 1 voxel from the other boundary, too few
to move the 95th percentile off 1, and all the others are 0.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from magms.evaluate import write_reports
from magms.labels import get_scheme
from magms.lesionwise import HD95_PENALTY_MM, LesionWiseScore, lesion_wise_metrics, region_lesion_metrics

SHAPE = (40, 40, 40)
ISO = (1.0, 1.0, 1.0)


def _cube(mask: np.ndarray, corner: tuple[int, int, int], size: tuple[int, int, int] = (4, 4, 4)) -> np.ndarray:
    """``mask`` with the box of ``size`` voxels from ``corner`` set."""
    out = mask.copy()
    out[tuple(slice(c, c + s) for c, s in zip(corner, size))] = True
    return out


EMPTY = np.zeros(SHAPE, bool)


def test_two_lesions_and_a_false_positive():
    truth = _cube(_cube(EMPTY, (2, 2, 2)), (20, 20, 20))
    pred = _cube(EMPTY, (2, 2, 2))  # lesion 1 exact: Dice 1, HD95 0
    pred = _cube(pred, (20, 20, 20), (4, 4, 5))  # lesion 2 plus a layer: Dice 8/9, HD95 1
    pred = _cube(pred, (32, 2, 32), (2, 2, 2))  # far from both: a false positive
    score = lesion_wise_metrics(pred, truth, ISO)
    assert score.dice == pytest.approx((1 + 8 / 9) / 3)
    assert score.hd95 == pytest.approx((0 + 1 + HD95_PENALTY_MM) / 3)
    assert (score.lesions, score.true_positives, score.false_positives, score.false_negatives) == (2, 2, 1, 0)


def test_dilation_merges_near_components_into_one_lesion():
    # 3 dilation steps each side reach across a gap of 6 voxels (the dilated masks touch), not 7
    pred = _cube(EMPTY, (10, 10, 10))
    merged = lesion_wise_metrics(pred, _cube(pred, (10, 10, 20)), ISO)
    assert merged.lesions == 1 and merged.false_negatives == 0
    assert merged.dice == pytest.approx(2 * 64 / (64 + 128))  # one lesion of 128 voxels, half found
    apart = lesion_wise_metrics(pred, _cube(pred, (10, 10, 21)), ISO)
    assert (apart.lesions, apart.true_positives, apart.false_negatives) == (2, 1, 1)
    assert apart.dice == pytest.approx(1 / 2) and apart.hd95 == pytest.approx(HD95_PENALTY_MM / 2)


def test_component_near_a_lesion_is_matched_not_false_positive():
    truth = _cube(EMPTY, (10, 10, 10))
    # 2 voxels beyond the lesion's face: inside its dilated mask, so it joins the lesion's prediction
    pred = _cube(truth, (11, 11, 16), (2, 2, 2))
    score = lesion_wise_metrics(pred, truth, ISO)
    assert score.false_positives == 0 and score.true_positives == 1
    assert score.dice == pytest.approx(2 * 64 / (64 + 72))


def test_small_lesions_are_left_out_but_claim_their_components():
    big = _cube(EMPTY, (2, 2, 2))
    small = _cube(EMPTY, (20, 20, 20), (5, 5, 2))  # exactly 50 voxels: left out (BraTS drops <= 50)
    missed = lesion_wise_metrics(big, big | small, ISO)
    assert missed == LesionWiseScore(1.0, 0.0, 1, 1, 0, 0)
    found = lesion_wise_metrics(big | small, big | small, ISO)  # its component is no false positive
    assert found == LesionWiseScore(1.0, 0.0, 1, 1, 0, 0)
    # one voxel more and it counts: missed, Dice 0 and the penalty
    small51 = _cube(small, (20, 20, 22), (1, 1, 1))
    scored = lesion_wise_metrics(big, big | small51, ISO)
    assert scored.lesions == 2 and scored.false_negatives == 1
    assert scored.dice == pytest.approx(1 / 2) and scored.hd95 == pytest.approx(HD95_PENALTY_MM / 2)


def test_volume_threshold_is_in_cubic_mm():
    truth = _cube(EMPTY, (10, 10, 10))  # 64 voxels: 64 mm³ at 1 mm, 8 mm³ at 0.5 mm
    assert lesion_wise_metrics(EMPTY, truth, ISO).lesions == 1
    assert lesion_wise_metrics(EMPTY, truth, (0.5, 0.5, 0.5)) == LesionWiseScore(1.0, 0.0, 0, 0, 0, 0)
    assert lesion_wise_metrics(EMPTY, truth, ISO, volume_threshold=64.0).lesions == 0


def test_empty_cases():
    assert lesion_wise_metrics(EMPTY, EMPTY, ISO) == LesionWiseScore(1.0, 0.0, 0, 0, 0, 0)
    truth = _cube(EMPTY, (10, 10, 10))
    assert lesion_wise_metrics(EMPTY, truth, ISO) == LesionWiseScore(0.0, HD95_PENALTY_MM, 1, 0, 0, 1)
    assert lesion_wise_metrics(truth, EMPTY, ISO) == LesionWiseScore(0.0, HD95_PENALTY_MM, 0, 0, 1, 0)


def test_anisotropic_spacing_scales_hd95_along_its_axis():
    truth = _cube(EMPTY, (10, 10, 10))
    pred = _cube(EMPTY, (10, 10, 10), (4, 4, 5))  # one layer more along the last axis
    assert lesion_wise_metrics(pred, truth, ISO).hd95 == pytest.approx(1.0)
    thick_last = lesion_wise_metrics(pred, truth, np.array([1.0, 1.0, 2.5]))  # numpy spacing too
    assert thick_last.hd95 == pytest.approx(2.5) and thick_last.dice == pytest.approx(8 / 9)
    # a thick first axis leaves the one-voxel step along the last axis at 1 mm
    assert lesion_wise_metrics(pred, truth, (3.0, 1.0, 1.0)).hd95 == pytest.approx(1.0)


def test_region_lesion_metrics_per_brats_region():
    scheme = get_scheme("brats2023")  # 1 necrotic core, 2 edema, 3 enhancing
    truth = np.zeros(SHAPE, np.int64)
    truth[10:16, 10:16, 10:16] = 2
    truth[11:15, 11:15, 11:15] = 3
    pred = truth.copy()
    pred[30:32, 30:32, 30:32] = 1  # a spurious core far away: a false positive in WT and TC, not ET
    scores = region_lesion_metrics(pred, truth, scheme, ISO)
    assert list(scores) == ["wt", "tc", "et"]
    assert scores["et"] == LesionWiseScore(1.0, 0.0, 1, 1, 0, 0)
    assert scores["wt"].false_positives == 1 and scores["wt"].dice == pytest.approx(1 / 2)
    assert scores["tc"].false_positives == 1 and scores["tc"].hd95 == pytest.approx(HD95_PENALTY_MM / 2)


def test_ill_arguments():
    with pytest.raises(ValueError, match="differ in shape"):
        lesion_wise_metrics(EMPTY, EMPTY[:-1], ISO)
    with pytest.raises(ValueError, match="spacing"):
        lesion_wise_metrics(EMPTY, EMPTY, (1.0, 1.0))
    with pytest.raises(ValueError, match="dilation_iterations"):
        lesion_wise_metrics(EMPTY, EMPTY, ISO, dilation_iterations=-1)


def test_dilation_uses_the_18_connected_element_as_brats_does():
    # lesions offset along the diagonal: 3 steps of the 18-connected element reach L1 <= 6 (Linf <= 3),
    # so corners 5 voxels apart on each axis merge and 6 apart do not (the full cube would merge both)
    a = _cube(EMPTY, (10, 10, 10))
    assert lesion_wise_metrics(a, _cube(a, (18, 18, 18)), ISO).lesions == 1
    assert lesion_wise_metrics(a, _cube(a, (19, 19, 19)), ISO).lesions == 2


def test_reports_put_lesion_wise_beside_whole_image(tmp_path):
    def row(case, target, kind, dice, hd95, **lesion):
        return {"case": case, "subset": "flair", "target": target, "kind": kind, "dice": dice, "hd95": hd95, **lesion}

    rows = [
        row("c1", "edema", "label", 1.0, 0.0),
        row("c1", "wt", "region", 0.9, 2.0, lesion_dice=0.6, lesion_hd95=100.0, lesions=2, lesions_missed=1, false_positives=1),
        row("c2", "edema", "label", 0.5, math.nan),
        row("c2", "wt", "region", 0.7, 4.0, lesion_dice=0.4, lesion_hd95=200.0, lesions=1, lesions_missed=0, false_positives=2),
    ]
    write_reports(rows, tmp_path, get_scheme("brats2023"))
    with open(tmp_path / "metrics.csv") as f:
        written = list(csv.DictReader(f))
    assert [r["lesion_dice"] for r in written] == ["", "0.6", "", "0.4"]
    assert written[3]["false_positives"] == "2" and written[2]["hd95"] == "nan"
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    # means and sample sds over the two cases: whole-image first, lesion-wise beside it
    assert "| flair | 0.800 ± 0.141 | 0.500 ± 0.141 |" in summary
    assert "| flair | 3.000 ± 1.414 (n=2) | 150.000 ± 70.711 |" in summary
    assert "| flair | 3 / 1 / 3 |" in summary  # lesions / missed / false positives, summed
