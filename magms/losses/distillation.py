"""The MAG-MS loss: Dice+CE on every output, plus multi-modality self-distillation.

He et al., ISBI 2024 (arXiv 2306.03730). The fused prediction teaches each single-modality
prediction through a pixel-wise KL divergence, and the fused features teach each modality's
features through an MSE, on top of a Dice+CE segmentation loss on every output.

Differences from the reference ``magnet`` 2.2 code, on purpose:

* KL: textbook temperature scaling (Hinton et al. 2015): teacher and student are both softened by
  ``T`` and the term is multiplied by ``T**2`` so its gradient scale does not depend on ``T``. The
  reference softens only the student and has no ``T**2``; with ``T = 1`` both agree.
* Teacher detached by default (``detach_teacher=True``): the single-modality branches learn from
  the fused one, not the other way round. The reference lets gradients through the teacher;
  ``detach_teacher=False`` reproduces that.
* Features: the reference flattens and concatenates all levels before one MSE, so the
  full-resolution skip (by far the most elements) dominates. Here each level's MSE is a mean over
  its own elements and levels are averaged, optionally with ``level_weights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import Tensor
from torch.nn.modules.loss import _Loss

from magms.networks.magms_net import MAGMSOutput

__all__ = ["PixelwiseKLDivLoss", "FeatureMSELoss", "MAGMSLoss"]


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class PixelwiseKLDivLoss(_Loss):
    """KL(teacher || student) per voxel, summed over classes, averaged over voxels.

    Args:
        temperature: softening temperature ``T`` > 0 for teacher and student; the loss is scaled by ``T**2``.
        detach_teacher: stop gradients flowing into the teacher.
        reduction: over the batch, ``"mean"``, ``"sum"`` or ``"none"`` (a (B,) tensor).

    Raises:
        ValueError: ``temperature`` not positive, unknown ``reduction``, or input shapes differ.
    """

    def __init__(self, temperature: float = 1.0, detach_teacher: bool = True, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        super().__init__(reduction=reduction)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.detach_teacher = detach_teacher

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """
        Args:
            student: (B, C, H, W[, D]) logits of the single-modality prediction.
            teacher: (B, C, H, W[, D]) logits of the fused prediction.
        """
        if student.shape != teacher.shape:
            raise ValueError(f"student and teacher logits must have the same shape, got {tuple(student.shape)} and {tuple(teacher.shape)}")
        if self.detach_teacher:
            teacher = teacher.detach()
        t = self.temperature
        log_q = F.log_softmax(student.float() / t, dim=1)
        log_p = F.log_softmax(teacher.float() / t, dim=1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)  # (B, spatial...)
        return _reduce(kl.flatten(1).mean(dim=1) * t * t, self.reduction)


class FeatureMSELoss(_Loss):
    """Mean squared error between student and teacher features, level by level.

    Each level's MSE is a mean over that level's elements; the levels are then combined with
    ``level_weights`` (normalised to sum to 1), so a large full-resolution skip does not drown
    the deep, small levels.

    Args:
        levels: indices of the levels to compare (``None``: all).
        level_weights: one weight per compared level (``None``: equal).
        detach_teacher: stop gradients flowing into the teacher features.
        reduction: over the batch, ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(
        self,
        levels: Sequence[int] | None = None,
        level_weights: Sequence[float] | None = None,
        detach_teacher: bool = True,
        reduction: str = "mean",
    ) -> None:
        _check_reduction(reduction)
        super().__init__(reduction=reduction)
        if levels is not None and level_weights is not None and len(levels) != len(level_weights):
            raise ValueError(f"level_weights needs one weight per level: {len(level_weights)} weights for levels {tuple(levels)}")
        if level_weights is not None and (min(level_weights) < 0 or sum(level_weights) <= 0):
            raise ValueError(f"level_weights must be non-negative with a positive sum, got {tuple(level_weights)}")
        self.levels = None if levels is None else tuple(levels)
        self.level_weights = None if level_weights is None else tuple(float(w) for w in level_weights)
        self.detach_teacher = detach_teacher

    def forward(self, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
        """
        Args:
            student: features per level, each (B, C_l, ...).
            teacher: features per level with the same shapes.
        """
        if len(student) != len(teacher):
            raise ValueError(f"student has {len(student)} feature levels, teacher {len(teacher)}")
        levels = tuple(range(len(student))) if self.levels is None else self.levels
        weights = self.level_weights if self.level_weights is not None else (1.0,) * len(levels)
        if len(weights) != len(levels) or not levels or max(levels) >= len(student):
            raise ValueError(f"levels {levels} with weights {weights} do not fit {len(student)} feature levels")
        total = sum(weights)
        per_sample = None
        for level, weight in zip(levels, weights):
            s, t = student[level], teacher[level]
            if s.shape != t.shape:
                raise ValueError(f"feature level {level}: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ")
            if self.detach_teacher:
                t = t.detach()
            mse = (s.float() - t.float()).pow(2).flatten(1).mean(dim=1) * (weight / total)
            per_sample = mse if per_sample is None else per_sample + mse
        return _reduce(per_sample, self.reduction)


class MAGMSLoss(_Loss):
    """Segmentation loss plus multi-modality self-distillation, for a :class:`MAGMSOutput`.

    ``total = seg_weight * (DiceCE(fused) + sum_m DiceCE(m))
    + kl_weight * sum_m KL(fused || m) + feature_weight * sum_m MSE(fused features, m features)``
    over the present modalities ``m``. With ``distill=False`` only the DiceCE terms remain: the
    plain multi-output baseline without self-distillation.

    Args:
        distill: add the KL and feature terms.
        seg_weight: weight of each single-modality DiceCE term (the fused term has weight 1).
        kl_weight: weight of each KL term.
        feature_weight: weight of each feature MSE term.
        temperature: KL temperature (see :class:`PixelwiseKLDivLoss`).
        feature_levels: which feature levels to distil (``None``: all).
        level_weights: weights of those levels (see :class:`FeatureMSELoss`).
        detach_teacher: stop gradients into the fused (teacher) outputs; ``False`` is the reference's choice.
        to_onehot_y: the target holds class indices (B, 1, ...) rather than one-hot (B, C, ...).
        dice_ce_kwargs: further arguments of ``monai.losses.DiceCELoss`` (``softmax=True`` is set).
        segmentation_loss: instead of Dice+CE over the labels, e.g. a :class:`~magms.losses.RegionDiceCELoss`
            (``to_onehot_y`` and ``dice_ce_kwargs`` are then unused).

    Input and target layouts: logits ``BNHW[D]``; target ``B1HW[D]`` indices or ``BNHW[D]`` one-hot.

    Raises:
        ValueError: a negative weight.
    """

    def __init__(
        self,
        distill: bool = True,
        seg_weight: float = 1.0,
        kl_weight: float = 1.0,
        feature_weight: float = 1.0,
        temperature: float = 1.0,
        feature_levels: Sequence[int] | None = None,
        level_weights: Sequence[float] | None = None,
        detach_teacher: bool = True,
        to_onehot_y: bool = True,
        dice_ce_kwargs: dict[str, Any] | None = None,
        segmentation_loss: _Loss | None = None,
    ) -> None:
        super().__init__()
        for name, w in (("seg_weight", seg_weight), ("kl_weight", kl_weight), ("feature_weight", feature_weight)):
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        self.distill = distill
        self.seg_weight, self.kl_weight, self.feature_weight = seg_weight, kl_weight, feature_weight
        self.dice_ce = segmentation_loss or DiceCELoss(to_onehot_y=to_onehot_y, softmax=True, **(dice_ce_kwargs or {}))
        self.kl = PixelwiseKLDivLoss(temperature, detach_teacher)
        self.feature_mse = FeatureMSELoss(feature_levels, level_weights, detach_teacher)

    def terms(self, output: MAGMSOutput, target: Tensor) -> dict[str, Tensor]:
        """The weighted terms by name: ``seg_fused``, ``seg_<slot>``, ``kl_<slot>``, ``feature_<slot>``.

        Args:
            output: training-mode output of :class:`~magms.networks.MAGMSNet`.
            target: (B, 1, H, W, D) class indices or (B, C, H, W, D) one-hot, for the whole batch.
        """
        if target.shape[0] != output.logits.shape[0] or target.shape[2:] != output.logits.shape[2:]:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match logits shape {tuple(output.logits.shape)}"
            )
        batch = output.logits.shape[0]

        def rows_of(t: Tensor, rows: Tensor) -> Tensor:
            # no copy when the modality is present in every sample (the usual case)
            return t if rows.numel() == batch else t.index_select(0, rows)

        terms = {"seg_fused": self.dice_ce(output.logits, target)}
        for slot, features in output.modality_features.items():
            rows = output.modality_batch[slot]
            logits = output.modality_logits.get(slot)  # None: not decoded this step (``singles``)
            if logits is not None:
                terms[f"seg_{slot}"] = self.seg_weight * self.dice_ce(logits, rows_of(target, rows))
            if not self.distill:
                continue
            if logits is not None:
                terms[f"kl_{slot}"] = self.kl_weight * self.kl(logits, rows_of(output.logits, rows))
            teacher_features = tuple(rows_of(f, rows) for f in output.fused_features)
            terms[f"feature_{slot}"] = self.feature_weight * self.feature_mse(features, teacher_features)
        return terms

    def forward(self, output: MAGMSOutput, target: Tensor) -> Tensor:
        """The total loss, a scalar (the sum of :meth:`terms`)."""
        return torch.stack(list(self.terms(output, target).values())).sum()
