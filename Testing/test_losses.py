"""MAG-MS loss: every term zero where teacher equals student and positive otherwise."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from magms.losses import FeatureMSELoss, MAGMSLoss, PixelwiseKLDivLoss, RegionDiceCELoss
from magms.networks import MAGMSOutput

SHAPE = (2, 3, 8, 8, 8)


def _output(same: bool, slots=("flair", "t1c")) -> tuple[MAGMSOutput, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(SHAPE)
    feats = (torch.randn(2, 4, 8, 8, 8), torch.randn(2, 8, 4, 4, 4))
    m_logits = {s: logits.clone() if same else torch.randn(SHAPE) for s in slots}
    m_feats = {s: tuple(f.clone() if same else torch.randn_like(f) for f in feats) for s in slots}
    rows = {s: torch.arange(2) for s in slots}
    target = torch.randint(0, 3, (2, 1, 8, 8, 8))
    return MAGMSOutput(logits, feats, m_logits, m_feats, rows), target


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_zero_iff_equal(temperature):
    kl = PixelwiseKLDivLoss(temperature)
    a, b = torch.randn(SHAPE), torch.randn(SHAPE)
    assert kl(a, a.clone()).abs().item() < 1e-6
    assert kl(a, b).item() > 0
    assert kl(a, a + 5.0).abs().item() < 1e-5  # softmax is shift-invariant per voxel


def test_kl_is_textbook_temperature_scaled():
    a, b = torch.randn(SHAPE), torch.randn(SHAPE)
    t = 3.0
    p = torch.softmax(b / t, 1)
    expected = (p * (torch.log(p) - torch.log_softmax(a / t, 1))).sum(1).mean() * t * t
    torch.testing.assert_close(PixelwiseKLDivLoss(t)(a, b), expected)


def test_kl_teacher_detached_by_default():
    a = torch.randn(SHAPE, requires_grad=True)
    b = torch.randn(SHAPE, requires_grad=True)
    PixelwiseKLDivLoss()(a, b).backward()
    assert a.grad is not None and b.grad is None
    PixelwiseKLDivLoss(detach_teacher=False)(a, b).backward()
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_feature_mse_zero_iff_equal_and_levels_weighted_equally():
    big = torch.zeros(1, 4, 32, 32, 32)
    small = torch.zeros(1, 64, 2, 2, 2)
    mse = FeatureMSELoss()
    assert mse([big, small], [big.clone(), small.clone()]).item() == 0
    # the same per-element error on each level contributes equally, whatever the level's size
    only_big = mse([big + 1, small], [big, small])
    only_small = mse([big, small + 1], [big, small])
    torch.testing.assert_close(only_big, only_small)
    torch.testing.assert_close(only_big, torch.tensor(0.5))
    weighted = FeatureMSELoss(levels=[1], level_weights=[1.0])
    assert weighted([big + 1, small], [big, small]).item() == 0


def test_magms_loss_terms_zero_where_teacher_equals_student():
    out, target = _output(same=True)
    terms = MAGMSLoss(temperature=2.0).terms(out, target)
    assert set(terms) == {"seg_fused", "seg_flair", "seg_t1c", "kl_flair", "kl_t1c", "feature_flair", "feature_t1c"}
    for name, value in terms.items():
        if name.startswith(("kl_", "feature_")):
            assert abs(value.item()) < 1e-6, name
        else:
            assert value.item() > 0, name


def test_magms_loss_terms_positive_otherwise():
    out, target = _output(same=False)
    assert all(v.item() > 0 for v in MAGMSLoss().terms(out, target).values())


def test_no_distill_equals_sum_of_dice_ce_terms():
    out, target = _output(same=False)
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    expected = dice_ce(out.logits, target) + sum(dice_ce(v, target) for v in out.modality_logits.values())
    loss = MAGMSLoss(distill=False)
    assert set(loss.terms(out, target)) == {"seg_fused", "seg_flair", "seg_t1c"}
    torch.testing.assert_close(loss(out, target), expected)


def test_weights_scale_their_terms():
    out, target = _output(same=False)
    base = MAGMSLoss().terms(out, target)
    scaled = MAGMSLoss(seg_weight=2.0, kl_weight=3.0, feature_weight=0.5).terms(out, target)
    torch.testing.assert_close(scaled["seg_fused"], base["seg_fused"])
    torch.testing.assert_close(scaled["seg_flair"], 2 * base["seg_flair"])
    torch.testing.assert_close(scaled["kl_t1c"], 3 * base["kl_t1c"])
    torch.testing.assert_close(scaled["feature_flair"], 0.5 * base["feature_flair"])


def test_partial_batch_uses_matching_teacher_rows():
    out, target = _output(same=True)
    # t1c present only in sample 1: its prediction equals the fused one of row 1 -> KL zero
    out.modality_batch["t1c"] = torch.tensor([1])
    out.modality_logits["t1c"] = out.logits[1:].clone()
    out.modality_features["t1c"] = tuple(f[1:].clone() for f in out.fused_features)
    terms = MAGMSLoss().terms(out, target)
    assert abs(terms["kl_t1c"].item()) < 1e-6 and abs(terms["feature_t1c"].item()) < 1e-6


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PixelwiseKLDivLoss(temperature=0), "temperature"),
        (lambda: PixelwiseKLDivLoss(reduction="avg"), "reduction"),
        (lambda: FeatureMSELoss(levels=[0, 1], level_weights=[1.0]), "one weight per level"),
        (lambda: FeatureMSELoss(level_weights=[-1.0, 2.0]), "non-negative"),
        (lambda: MAGMSLoss(kl_weight=-1), "kl_weight"),
    ],
)
def test_ill_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8, 8\) and \(2, 4, 8, 8, 8\)"):
        PixelwiseKLDivLoss()(torch.zeros(SHAPE), torch.zeros(2, 4, 8, 8, 8))
    out, _ = _output(same=True)
    with pytest.raises(ValueError, match="target shape"):
        MAGMSLoss()(out, torch.zeros(2, 1, 4, 4, 4))


def test_region_loss_with_one_region_per_class_is_monai_dice_ce():
    """Regions that are the labels themselves give exactly today's Dice+CE over the labels."""
    torch.manual_seed(1)
    logits, target = torch.randn(SHAPE), torch.randint(0, 3, (2, 1, 8, 8, 8))
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target)
    torch.testing.assert_close(RegionDiceCELoss([[0], [1], [2]])(logits, target), expected)


def test_region_loss_scores_overlapping_regions():
    """BraTS-like nested regions: near zero for a confident right answer; a wrong inner label costs only
    the regions it is wrong for (mistaking one core label for the other costs the core nothing)."""
    target = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6, 2:6] = 1
    target[:, :, 3:5, 3:5, 3:5] = 2
    regions = [[1, 2], [2]]  # "whole" = 1 and 2; "inner" = 2
    loss = RegionDiceCELoss(regions)
    right = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 30
    assert loss(right, target).item() < 1e-3
    inner_missed = right.clone()
    inner_missed[:, :, 3:5, 3:5, 3:5] = torch.tensor([0.0, 30.0, 0.0]).view(1, 3, 1, 1, 1)
    whole_only = RegionDiceCELoss([[1, 2]], lambda_ce=0.0)
    assert whole_only(inner_missed, target).item() < 1e-3  # the whole region is still right
    assert loss(inner_missed, target).item() > 0.3  # the inner region is lost


def test_region_loss_trains_each_output_of_magms_loss():
    output, _ = _output(same=False)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8))
    region = RegionDiceCELoss([[1, 2], [2]])
    terms = MAGMSLoss(distill=False, segmentation_loss=region).terms(output, target)
    torch.testing.assert_close(terms["seg_fused"], region(output.logits, target))
    torch.testing.assert_close(terms["seg_t1c"], region(output.modality_logits["t1c"], target))


@pytest.mark.parametrize("regions, match", [([], "at least one region"), ([[1], []], "at least one region"), ([[5]], "beyond the 3")])
def test_region_loss_refuses(regions, match):
    with pytest.raises(ValueError, match=match):
        RegionDiceCELoss(regions)(torch.randn(SHAPE), torch.zeros(2, 1, 8, 8, 8, dtype=torch.long))
