"""Overlap and distance of a segmentation against its truth, per label and per region.

Conventions for empty structures: if both prediction and truth are empty, Dice is 1 and HD95 is 0.
If only one of them is empty, Dice is 0 and HD95 is NaN.
Training's validation and ``magms evaluate`` both measure with these functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from magms.labels import LabelScheme

__all__ = ["dice", "binary_metrics", "case_dice", "case_metrics"]


def binary_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """Dice and HD95 (in the units of ``spacing``) of two boolean masks of the same shape.

    Args:
        pred, truth: boolean arrays, axes in the order of ``spacing``.
        spacing: voxel size per array axis.
    """
    overlap = dice(pred, truth)
    if not pred.any() or not truth.any():
        return overlap, (0.0 if overlap == 1.0 else math.nan)
    import torch  # here: Dice alone (review, the CLI) must not pay the seconds torch and MONAI take to import
    from monai.metrics import compute_hausdorff_distance

    p = torch.from_numpy(np.ascontiguousarray(pred))[None, None].float()
    t = torch.from_numpy(np.ascontiguousarray(truth))[None, None].float()
    with warnings.catch_warnings():
        # MONAI 1.5-1.6 warn about an argument of their own internal call; nothing for our users to do
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = float(compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=list(spacing))[0, 0])
    return overlap, hd95


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape: 1 when both are empty, 0 when only one is."""
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred & truth)) / total


def case_dice(pred: np.ndarray, truth: np.ndarray, scheme: LabelScheme) -> dict[str, float]:
    """Dice per region of ``scheme`` (per non-background label for schemes without regions): what
    validation during training measures, without the distance computations of :func:`case_metrics`."""
    if scheme.regions:
        return {r.key: dice(scheme.region_mask(pred, r.key), scheme.region_mask(truth, r.key)) for r in scheme.regions}
    return {label.key: dice(pred == label.value, truth == label.value) for label in scheme.labels if label.value != 0}


def case_metrics(pred: np.ndarray, truth: np.ndarray, scheme: LabelScheme, spacing: Sequence[float]) -> list[dict[str, object]]:
    """Dice and HD95 per non-background label and per region of ``scheme``.

    Args:
        pred, truth: label maps in ``scheme``'s values, same shape.
        spacing: voxel size per array axis.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    rows = []
    for label in scheme.labels:
        if label.value == 0:
            continue
        dice, hd95 = binary_metrics(pred == label.value, truth == label.value, spacing)
        rows.append({"target": label.key, "kind": "label", "dice": dice, "hd95": hd95})
    for region in scheme.regions:
        dice, hd95 = binary_metrics(scheme.region_mask(pred, region.key), scheme.region_mask(truth, region.key), spacing)
        rows.append({"target": region.key, "kind": "region", "dice": dice, "hd95": hd95})
    return rows
