"""The working grid of inference (SimpleITK) is the one training makes with MONAI's Orientation and
Spacing: same grid, same values, and the same way back onto the reference grid."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from conftest import DATA, needs_data
from magms.config import PreprocessConfig
from magms.data.grid import to_reference, to_working, working_grid
from magms.data.tensors import sitk_to_metatensor, spatial_transform


def _rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    rx, ry, rz = np.radians(degrees)
    x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return z @ y @ x


def _image(size, spacing, direction, origin=(10.0, -20.0, 5.0), seed=0) -> sitk.Image:
    """A smooth head-like volume with noise, zero air around it, on the given grid."""
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(size)
    centre = [(n - 1) / 2 for n in size]
    head = sum(((a - c) / (0.4 * n)) ** 2 for a, c, n in zip((x, y, z), centre, size)) < 1
    values = head * (200 + 40 * np.sin(x / 3.0) + 30 * np.cos(y / 4.0) + rng.normal(0, 5, size))
    image = sitk.GetImageFromArray(values.transpose(2, 1, 0).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetDirection(np.asarray(direction, dtype=float).ravel().tolist())
    image.SetOrigin(origin)
    return image


GRIDS = {
    "identity, anisotropic": ((30, 26, 18), (0.9375, 0.9375, 2.5), np.eye(3)),
    "LPS flipped (radiological)": ((28, 30, 20), (1.0, 1.2, 1.5), np.diag([-1.0, -1.0, 1.0])),
    "axes permuted (sagittal)": ((20, 30, 28), (1.5, 1.0, 1.0), np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)),
    "oblique 17 degrees": ((26, 28, 22), (1.1, 1.1, 1.3), _rotation((12.0, -7.0, 17.0))),
}
PRE = PreprocessConfig(spacing=(2.0, 2.0, 2.0), orientation="RAS")


def _monai(image: sitk.Image, pre: PreprocessConfig) -> MetaTensor:
    return spatial_transform(pre)(sitk_to_metatensor(image))


def _affine_of(grid: sitk.Image) -> np.ndarray:
    """The RAS affine of a SimpleITK grid, as MONAI's affines are."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(grid.GetDirection()).reshape(3, 3) * np.asarray(grid.GetSpacing())
    affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(grid.GetOrigin())
    return affine


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.5, 1.7, 2.3), None])
def test_working_grid_and_values_are_monais(name, spacing):
    size, voxel, direction = GRIDS[name]
    image = _image(size, voxel, direction)
    pre = PreprocessConfig(spacing=spacing, orientation="RAS")
    expected = _monai(image, pre)
    grid = working_grid(image, pre)
    assert grid.GetSize() == tuple(expected.shape[1:])
    np.testing.assert_allclose(_affine_of(grid), expected.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(to_working([image], grid), expected.numpy(), atol=2e-3, rtol=1e-5)


@pytest.mark.parametrize("name", list(GRIDS))
def test_back_onto_the_reference_grid_as_monais_inverse(name):
    size, voxel, direction = GRIDS[name]
    image = _image(size, voxel, direction)
    spatial = spatial_transform(PRE)  # the inverse must be the same object as the forward transform
    working = spatial(sitk_to_metatensor(image))
    grid = working_grid(image, PRE)
    rng = np.random.default_rng(1)
    shape = working.shape[1:]
    box = tuple(slice(2, n - 3) for n in shape)
    inside = rng.random((3, *(b.stop - b.start for b in box))).astype(np.float32)
    inside /= inside.sum(axis=0)
    probabilities = np.zeros((3, *shape), np.float32)
    probabilities[0] = 1.0
    probabilities[(slice(None), *box)] = inside
    # MONAI: the whole working grid's probabilities through the inverse of the transform
    pred = MetaTensor(torch.from_numpy(probabilities), meta=dict(working.meta))
    pred.applied_operations = copy.deepcopy(working.applied_operations)
    expected = spatial.inverse(pred).as_tensor().numpy().transpose(0, 3, 2, 1)  # (C, z, y, x)
    indices, back = to_reference(inside, box, grid, image, keep=True)
    assert back is not None and back.shape == expected.shape
    np.testing.assert_allclose(back, expected, atol=1e-5)
    agree = np.mean(indices == expected.argmax(axis=0))
    assert agree > 0.9999, agree  # ties between equal probabilities may break either way
    without, none = to_reference(inside, box, grid, image)
    assert none is None and np.array_equal(without, indices)


def test_an_empty_box_region_is_background():
    image = _image((20, 20, 20), (1.0, 1.0, 1.0), np.eye(3))
    grid = working_grid(image, PRE)
    far = (slice(500, 502), slice(500, 502), slice(500, 502))
    indices, back = to_reference(np.full((2, 2, 2, 2), 0.5, np.float32), far, grid, image, keep=True)
    assert not indices.any() and back is not None and (back[0] == 1).all()


@needs_data
def test_a_real_brats_case_is_resampled_as_monai_does():
    case = DATA / "brats18" / "Brats18_CBICA_AQR_1"
    if not case.is_dir():
        pytest.skip(f"no {case}")
    image = sitk.ReadImage(str(case / "Brats18_CBICA_AQR_1_flair.nii.gz"), sitk.sitkFloat32)
    expected = _monai(image, PRE)
    grid = working_grid(image, PRE)
    np.testing.assert_allclose(_affine_of(grid), expected.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(to_working([image], grid), expected.numpy(), atol=1e-3)
