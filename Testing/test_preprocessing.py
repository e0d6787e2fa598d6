"""Foreground, normalisation and the foreground crop, shared by training and inference."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import NormalizeIntensity

from conftest import DATA, needs_data
from magms.config import PreprocessConfig
from magms.data.dataset import case_transforms
from magms.data.grid import to_working, working_grid
from magms.data.preprocessing import foreground_box, foreground_mask, normalize, run_in_foreground
from magms.data.tensors import sitk_to_metatensor, spatial_transform
from magms.labels import get_scheme


def _head(shape=(24, 28, 20), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A raw MRI-like channel (zero air, positive head) and its head mask, (1, X, Y, Z)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(shape)
    head = ((x - 12) ** 2 / 64 + (y - 14) ** 2 / 81 + (z - 10) ** 2 / 49) < 1
    raw = head * (300 + 50 * np.sin(x / 2.0) + rng.normal(0, 10, shape))
    return raw[None].astype(np.float32), head[None]


def _z_scored_before(raw: np.ndarray, head: np.ndarray) -> np.ndarray:
    """What the BraTS 2013 ``*_subtrMeanDivStd`` files are: z-scored in the head, air at -mean/std."""
    inside = raw[head]
    return (raw - inside.mean()) / inside.std(ddof=1)


def test_foreground_of_zero_filled_and_of_z_scored_images_is_the_head():
    raw, head = _head()
    assert np.array_equal(foreground_mask(raw), head)
    zs = _z_scored_before(raw, head)
    assert zs.min() < -1  # the air is a negative constant, nothing is zero
    assert np.array_equal(foreground_mask(zs), head)


def test_without_a_fill_value_everything_is_foreground_and_a_constant_channel_nothing():
    noisy = np.random.default_rng(0).random((1, 10, 10, 10)) + 1.0
    assert foreground_mask(noisy).all()
    assert not foreground_mask(np.zeros((1, 10, 10, 10))).any()
    assert not foreground_mask(np.full((1, 10, 10, 10), -3.0)).any()


def test_zscore_foreground_is_the_same_for_raw_and_pre_z_scored_images():
    raw, head = _head()
    a, fg_a = normalize(raw, "zscore_foreground")
    b, fg_b = normalize(_z_scored_before(raw, head), "zscore_foreground")
    assert np.array_equal(fg_a, head[0]) and np.array_equal(fg_b, head[0])
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert abs(float(a[head].mean())) < 1e-5 and abs(float(a[head].std(ddof=1)) - 1) < 1e-5
    assert (a[~head] == 0).all()
    # MONAI's non-zero z-score, kept for older bundles, does not see the negative air as background
    legacy, _ = normalize(_z_scored_before(raw, head), "zscore_nonzero")
    assert float(np.abs(legacy - a).max()) > 0.1


def test_legacy_and_none_methods():
    raw, _ = _head()
    legacy, _ = normalize(raw, "zscore_nonzero")
    np.testing.assert_allclose(legacy, NormalizeIntensity(nonzero=True, channel_wise=True)(torch.from_numpy(raw)).numpy(), atol=1e-5)
    same, fg = normalize(raw, "none")
    assert np.array_equal(same, raw) and fg.any()
    with pytest.raises(ValueError, match="zscore_foreground"):
        normalize(raw, "minmax")


def test_foreground_is_the_union_of_present_channels_and_absent_ones_stay_zero():
    raw, head = _head()
    other = np.zeros_like(raw)
    other[0, :3, :3, :3] = 5.0 + np.random.default_rng(1).random((3, 3, 3))  # a channel whose foreground lies apart
    x, fg = normalize(np.concatenate([raw, other, np.zeros_like(raw)]), "zscore_foreground")
    assert np.array_equal(fg, head[0] | (other[0] > 0))
    assert (x[2] == 0).all()
    hits = np.nonzero(fg)
    assert foreground_box(fg) == tuple(slice(int(h.min()), int(h.max()) + 1) for h in hits)
    assert foreground_box(fg)[0].start == 0  # the apart channel widens the box


def test_run_in_foreground_runs_on_the_box_only():
    raw, head = _head()
    box = foreground_box(head[0])
    seen = []

    def run(crop):
        seen.append(tuple(crop.shape))
        return np.full((3, *crop.shape[1:]), 1 / 3, np.float32)

    probs = run_in_foreground(raw, head[0], run, classes=3)
    assert seen == [(1, *(s.stop - s.start for s in box))]
    assert probs.shape == (3, *raw.shape[1:])
    np.testing.assert_allclose(probs.sum(0), np.ones(raw.shape[1:]), rtol=1e-6)
    outside = np.ones(raw.shape[1:], bool)
    outside[box] = False
    assert (probs[0][outside] == 1).all() and np.allclose(probs[0][box], 1 / 3)
    assert foreground_box(np.zeros((4, 5, 6), bool)) == (slice(0, 4), slice(0, 5), slice(0, 6))


def _write(array_xyz: np.ndarray, path, spacing=(1.0, 1.0, 1.0)) -> str:
    img = sitk.GetImageFromArray(array_xyz.transpose(2, 1, 0))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return str(path)


def test_training_and_inference_prepare_the_same_working_image(tmp_path):
    """The invariant the bundle's preprocessing promises: inference sees what training saw."""
    raw, head = _head()
    flair = _write(_z_scored_before(raw, head)[0], tmp_path / "flair.nii.gz")
    t1c = _write(_head(seed=1)[0][0], tmp_path / "t1c.nii.gz")
    label = _write(np.zeros(raw.shape[1:]), tmp_path / "seg.nii.gz")
    pre = PreprocessConfig(spacing=(1.5, 1.5, 1.5), patch_size=(16, 16, 16))
    slots = ("flair", "t1", "t1c")
    item = {"name": "c", "images": {"flair": flair, "t1c": t1c}, "label": label}
    for step in case_transforms(slots, get_scheme("brats2013"), pre):
        item = step(item)
    # inference: the working grid of magms.data.grid, in SimpleITK (training: MONAI's transforms)
    images = [sitk.ReadImage(p, sitk.sitkFloat32) for p in (flair, t1c)]
    x, fg = normalize(to_working(images, working_grid(images[0], pre)), pre.normalization)
    np.testing.assert_allclose(item["image"].as_tensor()[[0, 2]].numpy(), x, atol=1e-5, rtol=0)
    assert bool((item["image"][1] == 0).all())
    assert np.array_equal(item["foreground"].as_tensor()[0].numpy() > 0.5, fg)


@needs_data
def test_real_z_scored_flair_foreground_is_its_brain_mask():
    case = DATA / "brats_flair_t1c" / "brats_2013_pat0003_1"
    pre = PreprocessConfig(spacing=(2.0, 2.0, 2.0))
    flair = spatial_transform(pre)(sitk_to_metatensor(sitk.ReadImage(str(case / "Flair_subtrMeanDivStd.nii.gz"))))
    brain = spatial_transform(pre)(sitk_to_metatensor(sitk.ReadImage(str(case / "brainmask.nii.gz")))).as_tensor()[0] > 0.5
    x, fg = normalize(flair.as_tensor().numpy(), pre.normalization)
    brain = brain.numpy()
    dice = 2 * float((fg & brain).sum()) / float(fg.sum() + brain.sum())
    assert dice > 0.98, f"foreground vs brain mask Dice {dice:.3f}"
    assert abs(float(x[0][fg].mean())) < 1e-4 and (x[0][~fg] == 0).all()
