"""The post-processing a trained model is given: the whole region's components below a size chosen on
the validation cases are removed, so that a model of a few cases leaves no specks for a reviewer to find.

Small models trained briefly leave many small false-positive components away from the lesion (15-19 per
case on the sample cases). Which size is spurious depends on the data, so it is not guessed: at its last
validation the trainer scores the whole region (the BraTS whole tumour, :attr:`LabelScheme.whole_region`)
with the components below each of :data:`COMPONENT_SIZES_ML` removed, and the bundle gets the size that
scored best (none when removing nothing scores as well, or for a scheme without a whole region).

The score is the BraTS 2023 lesion-wise Dice (:mod:`magms.lesionwise`): every false-positive component
and every missed lesion counts as a lesion scored 0, so removing a small true lesion (a metastasis) costs
as much as removing a speck gains; the whole-image Dice would barely notice either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from magms.config import PostprocessConfig, SizeRule
from magms.labels import LabelScheme
from magms.lesionwise import lesion_wise_metrics
from magms.sizerules import connected_components

__all__ = ["COMPONENT_SIZES_ML", "chosen_postprocessing", "whole_lesion_dice_by_min_size"]

#: The smallest component volumes kept that validation tries, in ml (0: every component kept).
COMPONENT_SIZES_ML = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def whole_lesion_dice_by_min_size(
    pred: np.ndarray, truth: np.ndarray, scheme: LabelScheme, spacing: Sequence[float], sizes: Sequence[float] = COMPONENT_SIZES_ML,
) -> dict[float, float]:
    """The whole region's lesion-wise Dice of one prediction with its components below each size removed.

    Args:
        pred, truth: label maps in ``scheme``'s values, same shape.
        scheme: the model's label scheme.
        spacing: voxel size per array axis, in mm.
        sizes: the smallest component volumes kept, in ml.
    Returns:
        size -> lesion-wise Dice; empty when ``scheme`` has no whole region.
    """
    whole = scheme.whole_region
    if whole is None:
        return {}
    truth_mask = scheme.region_mask(truth, whole.key)
    components = connected_components(scheme.region_mask(pred, whole.key))
    volumes_ml = np.bincount(components.ravel()) * float(np.prod(spacing)) / 1000.0
    scores, by_kept = {}, {}
    for size in sizes:
        kept = volumes_ml >= size
        kept[0] = False  # component 0: outside the region
        key = kept.tobytes()  # sizes that keep the same components score the same: scored once
        if key not in by_kept:
            by_kept[key] = lesion_wise_metrics(kept[components], truth_mask, spacing).dice
        scores[float(size)] = by_kept[key]
    return scores


def chosen_postprocessing(mean_score_by_min_size: Mapping[float, float], scheme: LabelScheme) -> PostprocessConfig:
    """The bundle's post-processing from the validation's mean score per smallest size kept.

    The best-scoring size wins, the smallest among equals; nothing removed (size 0) gives no rule.
    """
    whole = scheme.whole_region
    if whole is None or not mean_score_by_min_size:
        return PostprocessConfig()
    best = max(sorted(mean_score_by_min_size), key=lambda size: mean_score_by_min_size[size])
    if best <= 0:
        return PostprocessConfig()
    return PostprocessConfig(size_rules=(SizeRule(whole.key, best, "background", "component"),))
