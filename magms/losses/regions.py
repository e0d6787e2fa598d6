"""A segmentation loss on the overlapping regions a label scheme is scored on (BraTS WT, TC, ET).

BraTS is scored on nested regions, not on its labels: the whole tumour (all three labels), the
tumour core (necrosis and enhancing) and the enhancing tumour. A Dice over the labels weighs the
necrosis and the oedema, which no one scores, as much as the enhancing tumour; the winning BraTS
entries train on the regions instead (nnU-Net's region-based training, Isensee et al. 2020). Here
the network keeps its softmax over the labels, so that inference, export and every engine stay as
they are: the cross-entropy stays on the labels, and the Dice is taken on each region's
probability, the sum of its labels' probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import Tensor
from torch.nn.modules.loss import _Loss

__all__ = ["RegionDiceCELoss"]


class RegionDiceCELoss(_Loss):
    """Cross-entropy over the labels plus soft Dice over regions made of labels.

    Args:
        regions: for each region, the class indices it holds, e.g. BraTS 2021 ``((1, 2, 3), (1, 3), (3,))``
            for WT, TC and ET. Regions may overlap.
        lambda_ce, lambda_dice: weights of the two terms (as MONAI's ``DiceCELoss``: 1 and 1).

    Input: logits ``(B, C, H, W[, D])``; target ``(B, 1, H, W[, D])`` class indices.

    Raises:
        ValueError: no region, an empty region, or a negative weight.
    """

    def __init__(self, regions: Sequence[Sequence[int]], lambda_ce: float = 1.0, lambda_dice: float = 1.0) -> None:
        super().__init__()
        if not regions or any(not r for r in regions):
            raise ValueError(f"regions: at least one region, each with at least one class, got {[list(r) for r in regions]}")
        if lambda_ce < 0 or lambda_dice < 0:
            raise ValueError(f"lambda_ce and lambda_dice must be >= 0, got {lambda_ce} and {lambda_dice}")
        self.regions = tuple(tuple(int(c) for c in r) for r in regions)
        self.lambda_ce, self.lambda_dice = lambda_ce, lambda_dice
        # (classes, regions) membership, built once: a region's probability (and truth) is a sum over its classes
        membership = torch.zeros(max(max(r) for r in self.regions) + 1, len(self.regions))
        for j, region in enumerate(self.regions):
            membership[list(region), j] = 1.0
        self.register_buffer("membership", membership, persistent=False)
        # the same soft Dice as MONAI's DiceCELoss takes per class, here per region on probabilities already made
        self.dice = DiceLoss(include_background=True, softmax=False, sigmoid=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if target.shape[1] != 1:
            raise ValueError(f"target must hold class indices (B, 1, ...), got shape {tuple(target.shape)}")
        classes = logits.shape[1]
        if self.membership.shape[0] > classes:
            raise ValueError(f"regions {self.regions} name a class beyond the {classes} of the logits")
        logits = logits.float()
        indices = target[:, 0].long()
        ce = F.cross_entropy(logits, indices)
        membership = self.membership.to(logits.device)
        probs = torch.softmax(logits, 1)[:, : membership.shape[0]]
        region_probs = torch.einsum("bc...,cr->br...", probs, membership)
        region_truth = membership[indices].movedim(-1, 1)  # (B, R, ...): each voxel's class row
        return self.lambda_ce * ce + self.lambda_dice * self.dice(region_probs, region_truth)
