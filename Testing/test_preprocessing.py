"""Foreground, normalisation and the foreground crop, shared by training and inference."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity

from conftest import DATA, needs_data
from magms.config import PreprocessConfig
from magms.data.tensors import sitk_to_metatensor, spatial_transform
from magms.labels import get_scheme
from magms.data.preprocessing import foreground_box, foreground_mask, normalize, run_in_foreground
from magms.data.dataset import case_transforms


def _head(shape=(24, 28, 20), seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw MRI-like channel (zero air, positive head) and its head mask, (1, X, Y, Z)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(shape)
    head = ((x - 12) ** 2 / 64 + (y - 14) ** 2 / 81 + (z - 10) ** 2 / 49) < 1
    raw = head * (300 + 50 * np.sin(x / 2.0) + rng.normal(0, 10, shape))
    return torch.from_numpy(raw[None].astype(np.float32)), torch.from_numpy(head[None])


def _z_scored_before(raw: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """What the BraTS 2013 ``*_subtrMeanDivStd`` files are: z-scored in the head, air at -mean/std."""
    inside = raw[head]
    return (raw - inside.mean()) / inside.std()


def test_foreground_of_zero_filled_and_of_z_scored_images_is_the_head():
    raw, head = _head()
    assert torch.equal(foreground_mask(raw), head)
    zs = _z_scored_before(raw, head)
    assert zs.min() < -1  # the air is a negative constant, nothing is zero
    assert torch.equal(foreground_mask(zs), head)


def test_without_a_fill_value_everything_is_foreground_and_a_constant_channel_nothing():
    noisy = torch.rand(1, 10, 10, 10) + 1.0
    assert bool(foreground_mask(noisy).all())
    assert not bool(foreground_mask(torch.zeros(1, 10, 10, 10)).any())
    assert not bool(foreground_mask(torch.full((1, 10, 10, 10), -3.0)).any())


def test_zscore_foreground_is_the_same_for_raw_and_pre_z_scored_images():
    raw, head = _head()
    a, fg_a = normalize(raw, "zscore_foreground")
    b, fg_b = normalize(_z_scored_before(raw, head), "zscore_foreground")
    assert torch.equal(fg_a, head[0]) and torch.equal(fg_b, head[0])
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert abs(float(a[head].mean())) < 1e-5 and abs(float(a[head].std()) - 1) < 1e-5
    assert bool((a[~head] == 0).all())
    # MONAI's non-zero z-score, kept for older bundles, does not see the negative air as background
    legacy, _ = normalize(_z_scored_before(raw, head), "zscore_nonzero")
    assert float((legacy - a).abs().max()) > 0.1


def test_legacy_and_none_methods():
    raw, _ = _head()
    legacy, _ = normalize(raw, "zscore_nonzero")
    torch.testing.assert_close(legacy, NormalizeIntensity(nonzero=True, channel_wise=True)(raw))
    same, fg = normalize(raw, "none")
    assert torch.equal(same, raw) and bool(fg.any())
    with pytest.raises(ValueError, match="zscore_foreground"):
        normalize(raw, "minmax")


def test_foreground_is_the_union_of_present_channels_and_absent_ones_stay_zero():
    raw, head = _head()
    other = torch.zeros_like(raw)
    other[0, :3, :3, :3] = 5.0 + torch.rand(3, 3, 3)  # a channel whose foreground lies apart
    x, fg = normalize(torch.cat([raw, other, torch.zeros_like(raw)]), "zscore_foreground")
    assert torch.equal(fg, head[0] | (other[0] > 0))
    assert bool((x[2] == 0).all())
    hits = np.nonzero(fg.numpy())
    assert foreground_box(fg) == tuple(slice(int(h.min()), int(h.max()) + 1) for h in hits)
    assert foreground_box(fg)[0].start == 0  # the apart channel widens the box


def test_run_in_foreground_runs_on_the_box_only():
    raw, head = _head()
    box = foreground_box(head[0])
    seen = []

    def run(crop):
        seen.append(tuple(crop.shape))
        return torch.full((crop.shape[0], 3, *crop.shape[2:]), 1 / 3)

    probs = run_in_foreground(raw[None], head[0], run, classes=3)
    assert seen == [(1, 1, *(s.stop - s.start for s in box))]
    assert probs.shape == (1, 3, *raw.shape[1:])
    torch.testing.assert_close(probs.sum(1), torch.ones(1, *raw.shape[1:]))
    outside = torch.ones(raw.shape[1:], dtype=torch.bool)
    outside[box] = False
    assert bool((probs[0, 0][outside] == 1).all()) and bool((probs[0, 0][box] == 1 / 3).all())
    assert foreground_box(torch.zeros(4, 5, 6, dtype=torch.bool)) == (slice(0, 4), slice(0, 5), slice(0, 6))


def _write(array_xyz: torch.Tensor, path, spacing=(1.0, 1.0, 1.0)) -> str:
    img = sitk.GetImageFromArray(array_xyz.numpy().transpose(2, 1, 0))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return str(path)


def test_training_and_inference_prepare_the_same_working_image(tmp_path):
    """The invariant the bundle's preprocessing promises: inference sees what training saw."""
    raw, head = _head()
    flair = _write(_z_scored_before(raw, head)[0], tmp_path / "flair.nii.gz")
    t1c = _write(_head(seed=1)[0][0], tmp_path / "t1c.nii.gz")
    label = _write(torch.zeros(raw.shape[1:]), tmp_path / "seg.nii.gz")
    pre = PreprocessConfig(spacing=(1.5, 1.5, 1.5), patch_size=(16, 16, 16))
    slots = ("flair", "t1", "t1c")
    item = {"name": "c", "images": {"flair": flair, "t1c": t1c}, "label": label}
    for step in case_transforms(slots, get_scheme("brats2013"), pre):
        item = step(item)
    volumes = [sitk_to_metatensor(sitk.ReadImage(p)) for p in (flair, t1c)]
    working = spatial_transform(pre)(MetaTensor(torch.cat([v.as_tensor() for v in volumes]), affine=volumes[0].affine))
    x, fg = normalize(working.as_tensor(), pre.normalization)
    torch.testing.assert_close(item["image"].as_tensor()[[0, 2]], x)
    assert bool((item["image"][1] == 0).all())
    assert torch.equal(item["foreground"].as_tensor()[0] > 0.5, fg)


@needs_data
def test_real_z_scored_flair_foreground_is_its_brain_mask():
    case = DATA / "brats_flair_t1c" / "brats_2013_pat0003_1"
    pre = PreprocessConfig(spacing=(2.0, 2.0, 2.0))
    flair = spatial_transform(pre)(sitk_to_metatensor(sitk.ReadImage(str(case / "Flair_subtrMeanDivStd.nii.gz"))))
    brain = spatial_transform(pre)(sitk_to_metatensor(sitk.ReadImage(str(case / "brainmask.nii.gz")))).as_tensor()[0] > 0.5
    x, fg = normalize(flair.as_tensor(), pre.normalization)
    dice = 2 * float((fg & brain).sum()) / float(fg.sum() + brain.sum())
    assert dice > 0.98, f"foreground vs brain mask Dice {dice:.3f}"
    assert abs(float(x[0][fg].mean())) < 1e-4 and bool((x[0][~fg] == 0).all())
