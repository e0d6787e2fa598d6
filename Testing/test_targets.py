"""Radiotherapy targets (magms.targets): margins in millimetres, the brain and barrier clips, the protocols.

The margin is checked against the exact distance from every voxel centre to the GTV's voxel centres,
computed here by brute force (a k-d tree), on isotropic and anisotropic grids; on a sphere the CTV is
checked against the analytic sphere of radius r + margin; and on a real case against its own label map.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

from conftest import DATA, needs_data
from magms.errors import ConfigError
from magms.labels import get_scheme
from magms.targets import PROTOCOLS, brain_mask, get_protocol, grow, grow_targets, parse_margins, target_structures

SCHEME = get_scheme("brats2021")


def _centres(shape, spacing_zyx):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing_zyx)], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


def _distance_to(mask: np.ndarray, spacing_zyx) -> np.ndarray:
    """Exact distance (mm) from every voxel centre to the nearest centre of ``mask``, by brute force."""
    points = _centres(mask.shape, spacing_zyx)
    tree = cKDTree(points[mask.ravel()])
    return tree.query(points)[0].reshape(mask.shape)


def _sphere(shape, spacing_zyx, centre_mm, radius_mm):
    points = _centres(shape, spacing_zyx)
    return (np.linalg.norm(points - np.asarray(centre_mm), axis=1) <= radius_mm).reshape(shape)


def _grid(shape, spacing_zyx) -> sitk.Image:
    image = sitk.Image(shape[::-1], sitk.sitkUInt8)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    return image


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (5.0, 0.9, 0.9), (2.5, 1.2, 0.8)], ids=["iso", "5mm-slices", "oblique"])
def test_margin_is_the_exact_distance_in_mm(spacing):
    shape = (24, 60, 60) if spacing[0] > 2 else (60, 60, 60)
    extent = np.array(shape) * np.array(spacing)
    gtv = _sphere(shape, spacing, extent / 2, 9.0)
    gtv[tuple(s // 2 for s in shape)] = True
    margin = 15.0
    ctv = grow(gtv, spacing, margin)
    distance = _distance_to(gtv, spacing)
    # every voxel centre within the margin is in, every one beyond it is out: the boundary is exact
    assert np.array_equal(ctv, distance <= margin + 1e-6)
    # and the analytic sphere: within half a voxel (the largest half-diagonal) of radius 9 + 15
    half = 0.5 * float(np.linalg.norm(spacing))
    points = np.linalg.norm(_centres(shape, spacing) - extent / 2, axis=1).reshape(shape)
    assert ctv[points <= 24.0 - 2 * half].all() and not ctv[points > 24.0 + 2 * half].any()


def test_ctv_keeps_to_the_brain_and_contains_the_gtv():
    spacing = (2.0, 1.0, 1.0)
    shape = (40, 80, 80)
    extent = np.array(shape) * np.array(spacing)
    brain = _sphere(shape, spacing, extent / 2, 35.0)
    labels = np.zeros(shape, np.uint8)
    tumour = _sphere(shape, spacing, extent / 2 + np.array([0, 0, 25]), 8.0)  # near the brain's edge
    labels[tumour] = 2
    labels[_sphere(shape, spacing, extent / 2 + np.array([0, 0, 25]), 4.0)] = 4
    labels[tumour & ~brain] = 2  # some tumour outside the mask: the CTV still holds all of the GTV
    found = {t.spec.name: t.mask for t in grow_targets(labels, _grid(shape, spacing), SCHEME, PROTOCOLS["estro-eano-2023"], brain)}
    gtv, ctv, ptv = found["GTV"], found["CTV"], found["PTV"]
    assert np.array_equal(gtv, np.isin(labels, (1, 4)))
    assert not (ctv & ~brain & ~gtv).any()  # no CTV voxel outside the brain but the GTV's own
    assert (gtv <= ctv).all() and (ctv <= ptv).all()
    # inside the brain the CTV is the full 15 mm
    assert np.array_equal(ctv & brain, grow(gtv, spacing, 15.0) & brain)
    assert (ptv & ~brain).any()  # the PTV is not clipped


def test_barrier_stops_the_ctv_and_what_lies_behind_it():
    spacing = (1.0, 1.0, 1.0)
    shape = (30, 60, 60)
    brain = np.ones(shape, bool)
    barrier = np.zeros(shape, bool)
    barrier[:, :, 30] = True  # a wall across the whole volume: the falx
    labels = np.zeros(shape, np.uint8)
    labels[10:20, 25:35, 22:26] = 4  # 4 mm from the wall
    targets = grow_targets(labels, _grid(shape, spacing), SCHEME, PROTOCOLS["estro-eano-2023"], brain, barrier)
    ctv = targets[1].mask
    assert not ctv[:, :, 30:].any()  # neither on the wall nor behind it
    assert ctv[:, :, 29].any() and ctv[15, 30, 8]  # up to the wall, and 14 mm the other way
    assert "barrier" in targets[1].description


def test_protocols_make_the_guidelines_targets_and_take_margins_by_name():
    assert [t.name for t in PROTOCOLS["rtog-nrg"].targets] == ["GTV1", "CTV1", "PTV1", "GTV2", "CTV2", "PTV2"]
    assert {t.name: t.margin_mm for t in PROTOCOLS["rtog-nrg"].targets if t.kind == "CTV"} == {"CTV1": 20.0, "CTV2": 20.0}
    assert PROTOCOLS["estro-eano-2023"].targets[1].margin_mm == 15.0 and PROTOCOLS["lgg"].targets[0].source[0] == "wt"
    changed = get_protocol("lgg").with_margins(parse_margins(["CTV=10", "PTV=5"]))
    assert [t.margin_mm for t in changed.targets] == [0.0, 10.0, 5.0]
    with pytest.raises(ConfigError, match="grows CTV, PTV, not 'CTV1'"):
        get_protocol("lgg").with_margins({"CTV1": 3})
    with pytest.raises(ConfigError, match="0 to 100 mm"):
        get_protocol("lgg").with_margins({"CTV": -1})
    with pytest.raises(ConfigError, match="TARGET=MILLIMETRES"):
        parse_margins(["CTV:12"])
    with pytest.raises(ConfigError, match="unknown target protocol 'rtog'; known: estro-eano-2023, rtog-nrg, lgg"):
        get_protocol("rtog")


def test_a_scheme_without_the_gtvs_regions_is_refused_by_name():
    tissue = get_scheme("brain_tissue")
    with pytest.raises(ConfigError, match="GTV is made of tc, which label scheme 'brain_tissue' does not have"):
        grow_targets(np.zeros((4, 4, 4), np.uint8), _grid((4, 4, 4), (1, 1, 1)), tissue, PROTOCOLS["estro-eano-2023"],
                     np.ones((4, 4, 4), bool))


def test_structures_carry_tg263_names_types_and_algorithms():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[4:6, 4:6, 4:6] = 4
    brain = np.ones_like(labels, bool)
    targets = grow_targets(labels, _grid(labels.shape, (1, 1, 1)), SCHEME, PROTOCOLS["estro-eano-2023"], brain)
    found = target_structures(targets, brain)
    assert [(s.name, s.interpreted_type, s.algorithm) for s in found] == [
        ("GTV", "GTV", "AUTOMATIC"), ("CTV", "CTV", "SEMIAUTOMATIC"), ("PTV", "PTV", "SEMIAUTOMATIC"), ("Brain", "ORGAN", "AUTOMATIC")]
    assert [s.type.value for s in found] == ["228791009", "228792002", "228793007", "12738006"]
    assert found[1].description == "CTV = GTV + 15 mm, within the brain" and np.array_equal(found[0].mask(labels), labels == 4)


def _thick_slices(image: sitk.Image, interpolator) -> sitk.Image:
    """``image`` resampled to 5 mm slices (a clinical series), the in-plane grid kept."""
    size = [image.GetSize()[0], image.GetSize()[1], int(image.GetSize()[2] * image.GetSpacing()[2] / 5.0)]
    spacing = (image.GetSpacing()[0], image.GetSpacing()[1], 5.0)
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing, image.GetDirection(), 0,
                         image.GetPixelID())


@needs_data
@pytest.mark.parametrize("slices", ["1 mm", "5 mm"])
def test_real_case_targets_on_its_own_grid(slices):
    case = DATA / "brats18" / "Brats18_CBICA_AQR_1" / "Brats18_CBICA_AQR_1"
    truth_image = sitk.ReadImage(f"{case}_seg.nii.gz")
    images = [sitk.ReadImage(f"{case}_{kind}.nii.gz") for kind in ("flair", "t1ce")]
    if slices == "5 mm":
        truth_image = _thick_slices(truth_image, sitk.sitkNearestNeighbor)
        images = [_thick_slices(image, sitk.sitkLinear) for image in images]
    labels = sitk.GetArrayFromImage(truth_image).astype(np.uint8)
    brain = brain_mask(images)
    assert 1000 < brain.sum() * np.prod(truth_image.GetSpacing()) / 1000 < 1800  # ml: an adult brain
    found = {t.spec.name: t.mask for t in grow_targets(labels, truth_image, SCHEME, PROTOCOLS["estro-eano-2023"], brain)}
    spacing = truth_image.GetSpacing()[::-1]
    assert np.array_equal(found["GTV"], np.isin(labels, (1, 4)))
    assert not (found["CTV"] & ~brain).any()  # the tumour lies in the brain: no CTV voxel outside it
    assert (found["GTV"] <= found["CTV"]).all() and (found["CTV"] <= found["PTV"]).all()
    # where the brain does not clip it, the CTV boundary is at 15 mm: compare inside a brain eroded by 1 voxel
    inner = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(brain.astype(np.uint8)), [1, 1, 1])).astype(bool)
    assert np.array_equal(found["CTV"] & inner, grow(found["GTV"], spacing, 15.0) & inner)
    assert found["PTV"].sum() > found["CTV"].sum() > 2 * found["GTV"].sum()
