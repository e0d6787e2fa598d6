"""What one optimisation step computes: the loss of a batch (:class:`TrainStep`) and its learning rate (:func:`lr_factor`)."""

from __future__ import annotations

import math

import torch

from magms.config import LR_SCHEDULES
from magms.losses import MAGMSLoss

__all__ = ["TrainStep", "lr_factor"]


def lr_factor(step: int, total: int, time_fraction: float = 0.0, schedule: str = "cosine") -> float:
    """Linear warm-up (5% of the steps, at most 50, or 5% of a time limit), then cosine to 0 (or constant).

    With a time limit the schedule follows whichever is further along, steps or time, so a run
    stopped by ``max_minutes`` still ends at a low learning rate.

    Args:
        step: the global step about to be taken, from 0.
        total: the steps of the whole run.
        time_fraction: elapsed share of the time limit; 0 without one.
        schedule: one of :data:`LR_SCHEDULES`.
    Returns:
        The factor of the base learning rate, in (0, 1].
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    warmup = min(max(1, total // 20), 50)
    if step < warmup and time_fraction < 0.05:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = max((step - warmup) / max(1, total - warmup), time_fraction)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class TrainStep(torch.nn.Module):
    """Network and loss as one module: DDP then sees one forward per backward, also when the
    random-subset policy decodes a second fusion.

    Args:
        net: the MAG-MS network (:func:`magms.networks.build_network`).
        loss_fn: its loss, whose terms are summed.
        policy: ``"paper"`` or ``"random_subset"`` (see :mod:`magms.training`).
        singles: single-modality outputs decoded per step (None: all; see :meth:`MAGMSNet.forward`).
    """

    def __init__(self, net: torch.nn.Module, loss_fn: MAGMSLoss, policy: str, singles: int | None = None) -> None:
        super().__init__()
        self.net, self.loss_fn, self.policy, self.singles = net, loss_fn, policy, singles

    def forward(self, x: torch.Tensor, present: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            x: (B, M, H, W, D); channel m is modality m, absent ones ignored.
            present: (B, M) bool, at least one True per row.
            y: (B, 1, H, W, D) label indices.
        Returns:
            The total loss and its named terms.
        """
        output = self.net(x, present, singles=self.singles)
        terms = self.loss_fn.terms(output, y)
        if self.policy == "random_subset":
            subset = present & (torch.rand(present.shape) < 0.5)
            empty = ~subset.any(dim=1)
            subset[empty] = present[empty]
            # the subset's fusion reuses the encoders' features: one more decoder pass, no re-encoding
            terms["seg_subset"] = self.loss_fn.dice_ce(self.net.decode_subset(output, subset), y)
        return torch.stack(list(terms.values())).sum(), terms
