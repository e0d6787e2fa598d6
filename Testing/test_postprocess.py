"""Post-processing: size rules on constructed label maps, flip TTA, and both recorded in the bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_bundle
from magms.bundle import METADATA_FILE, read_bundle_info
from magms.cli import main
from magms.commands import SegmentOptions
from magms.config import PostprocessConfig, PreprocessConfig, SizeRule
from magms.errors import BundleError, ConfigError
from magms.inference import Segmenter
from magms.inference.postprocess import as_requested, flip_averaged, flip_combinations
from magms.labels import get_scheme
from magms.sizerules import apply_size_rules

BRATS = get_scheme("brats2021")  # 0 background, 1 necrotic core, 2 oedema, 4 enhancing


def _tumour() -> np.ndarray:
    """A 10x10x10 tumour (oedema, core, 8 enhancing voxels) and a 2-voxel oedema speck far from it."""
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:15, 5:15, 5:15] = 2
    labels[8:12, 8:12, 8:12] = 1
    labels[9:11, 9:11, 9:11] = 4
    labels[25, 25, 25:27] = 2
    return labels


def test_small_components_are_relabelled_per_component_and_size_is_in_ml():
    labels = _tumour()
    rule = SizeRule("wt", min_ml=0.005, replace_with="background")
    out = apply_size_rules(labels, BRATS, [rule], voxel_ml=0.001)  # 1 mm voxels: the speck is 0.002 ml
    assert out[25, 25, 25:27].tolist() == [0, 0]
    np.testing.assert_array_equal(out[:20], labels[:20])  # the tumour is untouched
    np.testing.assert_array_equal(labels[25, 25, 25:27], [2, 2])  # the input is not changed
    # at 3 mm voxels (0.027 ml each) the speck is 0.054 ml, above the threshold: kept
    np.testing.assert_array_equal(apply_size_rules(labels, BRATS, [rule], voxel_ml=0.027), labels)


def test_diagonal_neighbours_are_one_component():
    """26-connectivity, as BraTS counts lesions: two voxels touching at a corner are one 2-voxel component."""
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 2
    rule = SizeRule("wt", min_ml=1.5, replace_with="background")
    np.testing.assert_array_equal(apply_size_rules(labels, BRATS, [rule], voxel_ml=1.0), labels)  # 2 ml: kept
    assert not apply_size_rules(labels, BRATS, [SizeRule("wt", 2.5, "background")], voxel_ml=1.0).any()


def test_tiny_enhancing_total_becomes_necrotic_core():
    labels = _tumour()
    rule = SizeRule("enhancing", min_ml=0.01, replace_with="necrotic_core", scope="total")
    out = apply_size_rules(labels, BRATS, [rule], voxel_ml=0.001)  # 8 voxels = 0.008 ml < 0.01
    assert not (out == 4).any() and (out[9:11, 9:11, 9:11] == 1).all()
    kept = apply_size_rules(labels, BRATS, [rule], voxel_ml=0.002)  # 0.016 ml: kept
    np.testing.assert_array_equal(kept, labels)
    no_et = np.where(labels == 4, 1, labels)
    np.testing.assert_array_equal(apply_size_rules(no_et, BRATS, [rule], voxel_ml=0.001), no_et)


def test_rules_run_in_order():
    labels = _tumour()
    rules = [SizeRule("enhancing", 0.01, "necrotic_core", "total"), SizeRule("tc", 0.1, "edema")]
    out = apply_size_rules(labels, BRATS, rules, voxel_ml=0.001)  # core 64 voxels = 0.064 ml < 0.1: becomes oedema
    assert set(np.unique(out[:20])) == {0, 2}


def test_flip_combinations_and_averaging():
    assert flip_combinations(()) == [()]
    assert flip_combinations((0, 2)) == [(), (0,), (2,), (0, 2)]
    window = np.arange(2 * 1 * 4 * 5 * 6, dtype=np.float32).reshape(2, 1, 4, 5, 6)

    def ramp(w: np.ndarray) -> np.ndarray:  # not flip-equivariant: depends on the position
        assert w.flags["C_CONTIGUOUS"]  # the predictor gets windows it can hand to torch or an engine
        position = np.linspace(0, 1, w.shape[2], dtype=np.float32).reshape(1, 1, -1, 1, 1)
        return np.concatenate([w * 0 + position, w * 0 + 1 - position], axis=1)

    averaged = flip_averaged(ramp, (0,))(window)
    # the ramp and its flip average to 0.5 everywhere
    np.testing.assert_allclose(averaged, np.full_like(averaged, 0.5), atol=1e-6)
    pointwise = lambda w: np.repeat(1 / (1 + np.exp(-w)), 2, axis=1)  # noqa: E731  flip-equivariant
    np.testing.assert_allclose(flip_averaged(pointwise, (0, 1, 2))(window), pointwise(window), rtol=1e-6)
    assert flip_averaged(ramp, ()) is ramp


def test_config_checks():
    with pytest.raises(ValueError, match="flip_axes"):
        PostprocessConfig(flip_axes=(0, 0))
    with pytest.raises(ValueError, match="flip_axes"):
        PostprocessConfig(flip_axes=(3,))
    with pytest.raises(ValueError, match="min_ml"):
        SizeRule("wt", -1.0, "background")
    with pytest.raises(ConfigError, match="scope"):
        SizeRule.from_dict({"target": "wt", "min_ml": 1, "replace_with": "background", "scope": "case"})
    recorded = PostprocessConfig(size_rules=(SizeRule("wt", 1.0, "background"),))
    assert as_requested(recorded) == recorded
    assert as_requested(recorded, tta=True).flip_axes == (0, 1, 2)
    assert as_requested(recorded, postprocess=False, tta=True) == PostprocessConfig()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    post = PostprocessConfig(size_rules=(SizeRule("wt", 50.0, "background"),), flip_axes=(0,))
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny", BRATS.key, postprocessing=post,
                       preprocessing=PreprocessConfig(spacing=(4.0, 4.0, 4.0), patch_size=(16, 16, 16)))


def test_bundle_records_postprocessing_and_checks_it_against_the_scheme(bundle, tmp_path):
    info = read_bundle_info(bundle)
    assert info.postprocessing.size_rules == (SizeRule("wt", 50.0, "background"),) and info.postprocessing.flip_axes == (0,)
    meta = json.loads((bundle / METADATA_FILE).read_text(encoding="utf-8"))
    assert meta["postprocessing"]["size_rules"][0] == {"target": "wt", "min_ml": 50.0, "replace_with": "background", "scope": "component"}
    # a bundle written before post-processing existed: none
    del meta["postprocessing"]
    old = tmp_path / "old"
    old.mkdir()
    (old / METADATA_FILE).write_text(json.dumps(meta))
    assert read_bundle_info(old).postprocessing == PostprocessConfig()
    meta["postprocessing"] = {"size_rules": [{"target": "lungs", "min_ml": 1, "replace_with": "background"}]}
    (old / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="magms.json: postprocessing size rule #0: 'lungs' is no region or label"):
        read_bundle_info(old)


def _case(tmp_path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    paths = {}
    for slot in ("flair", "t1c"):
        img = sitk.GetImageFromArray((rng.normal(100, 20, (24, 28, 32)) * (rng.random((24, 28, 32)) > 0.1)).astype(np.float32))
        img.SetSpacing((2.0, 2.0, 2.0))
        paths[slot] = str(tmp_path / f"{slot}.nii.gz")
        sitk.WriteImage(img, paths[slot])
    return paths


def test_segmenter_applies_the_bundle_postprocessing_unless_told_not_to(bundle, tmp_path):
    paths = _case(tmp_path)
    raw = Segmenter(bundle, device="cpu", postprocessing=PostprocessConfig()).segment(paths, probabilities=True)
    post = Segmenter(bundle, device="cpu").segment(paths, probabilities=True)
    # the bundle's rule (components under 50 ml, i.e. 6250 voxels of 8 ul, become background) on the flipped-average labels
    flips = Segmenter(bundle, device="cpu", postprocessing=PostprocessConfig(flip_axes=(0,))).segment(paths)
    expected = apply_size_rules(flips.labels, BRATS, read_bundle_info(bundle).postprocessing.size_rules, voxel_ml=0.008)
    np.testing.assert_array_equal(post.labels, expected)
    assert not np.array_equal(raw.probabilities, post.probabilities)  # the flips changed the probabilities


def test_cli_flags_choose_the_postprocessing(bundle, tmp_path):
    paths = _case(tmp_path)
    outputs = {}
    for name, flags in (("bundle", []), ("none", ["--no-postprocess"]), ("tta", ["--tta"])):
        out = tmp_path / f"{name}.nii.gz"
        args = ["segment", "--model", str(bundle), "--progress", "none", "--output", str(out), *flags]
        assert main([*args, *[f"--input={s}={p}" for s, p in paths.items()]]) == 0
        outputs[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    # the engine magms segment runs by default (the API's default is eager, the reference)
    engine = {k: SegmentOptions.defaults()[k] for k in ("engine", "precision")}
    raw = Segmenter(bundle, device="cpu", postprocessing=PostprocessConfig(), **engine).segment(paths)
    np.testing.assert_array_equal(outputs["none"], raw.labels)
    all_flips = Segmenter(bundle, device="cpu", postprocessing=as_requested(read_bundle_info(bundle).postprocessing, tta=True),
                          **engine).segment(paths)
    np.testing.assert_array_equal(outputs["tta"], all_flips.labels)


# ------------------------------------------------------------------------------------------------
# the component size a trained bundle removes, chosen on its validation cases


def test_validation_scores_the_whole_region_lesion_wise_with_each_component_size_removed():
    """A speck removed gains what a small true lesion removed loses (a metastasis is not a speck)."""
    from magms.training.postprocessing import whole_lesion_dice_by_min_size

    truth = np.zeros((40, 40, 40), np.uint8)
    truth[5:25, 5:25, 5:25] = 2  # the tumour: 8000 voxels of 8 mm^3, 64 ml
    truth[32:37, 32:35, 32:34] = 2  # a small true lesion, apart: 30 voxels, 0.24 ml
    pred = truth.copy()
    pred[30:33, 5:8, 35:38] = 2  # a spurious speck: 27 voxels, 0.216 ml
    scores = whole_lesion_dice_by_min_size(pred, truth, BRATS, (2.0, 2.0, 2.0), sizes=(0.0, 0.22, 0.25, 100.0))
    assert scores == {0.0: pytest.approx(2 / 3), 0.22: 1.0, 0.25: 0.5, 100.0: 0.0}  # lesions + false positives, each 0 or its Dice
    assert whole_lesion_dice_by_min_size(pred, truth, get_scheme("brain_tissue"), (2.0, 2.0, 2.0)) == {}  # no whole region


def test_the_best_size_becomes_the_bundles_rule_the_smallest_among_equals_and_none_for_zero():
    from magms.training.postprocessing import chosen_postprocessing

    assert BRATS.whole_region is not None and BRATS.whole_region.key == "wt"
    chosen = chosen_postprocessing({0.0: 0.80, 0.5: 0.83, 1.0: 0.83, 2.0: 0.82}, BRATS)
    assert chosen == PostprocessConfig(size_rules=(SizeRule("wt", 0.5, "background", "component"),))
    assert chosen_postprocessing({0.0: 0.83, 0.5: 0.83}, BRATS) == PostprocessConfig()  # removing nothing is as good
    assert chosen_postprocessing({}, BRATS) == PostprocessConfig()  # no validation cases
    tissue = get_scheme("brain_tissue")
    assert tissue.whole_region is None and chosen_postprocessing({0.0: 0.5, 1.0: 0.9}, tissue) == PostprocessConfig()
