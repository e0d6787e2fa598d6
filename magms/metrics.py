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
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from magms.labels import LabelScheme

__all__ = ["binary_metrics", "case_metrics"]


def binary_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """Dice and HD95 (in the units of ``spacing``) of two boolean masks of the same shape.

    Args:
        pred, truth: boolean arrays, axes in the order of ``spacing``.
        spacing: voxel size per array axis.
    """
    p_any, t_any = bool(pred.any()), bool(truth.any())
    if not p_any and not t_any:
        return 1.0, 0.0
    if not p_any or not t_any:
        return 0.0, math.nan
    p = torch.from_numpy(np.ascontiguousarray(pred))[None, None].float()
    t = torch.from_numpy(np.ascontiguousarray(truth))[None, None].float()
    dice = float(compute_dice(p, t, include_background=True)[0, 0])
    with warnings.catch_warnings():
        # MONAI 1.5-1.6 warn about an argument of their own internal call; nothing for our users to do
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = float(compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=list(spacing))[0, 0])
    return dice, hd95


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
