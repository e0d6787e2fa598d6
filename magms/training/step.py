"""What one optimisation step computes: the loss of a batch (:class:`TrainStep`) and its learning rate (:func:`lr_factor`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from magms.clicks import ClickPoint, click_maps, next_click
from magms.config import LR_SCHEDULES
from magms.losses import MAGMSLoss, RegionDiceCELoss

__all__ = ["ClickTrainStep", "TrainStep", "lr_factor", "random_subsets"]


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


def random_subsets(present: torch.Tensor) -> torch.Tensor:
    """A random non-empty subset of each sample's present modalities: each kept with probability 1/2, all of them
    where none was kept, so every subset of four is drawn 1 in 16 and the full set 2 in 16.

    Args:
        present: (B, M) bool, at least one True per row.
    Returns:
        (B, M) bool, within ``present``, at least one True per row.
    """
    subset = present & (torch.rand(present.shape) < 0.5)
    empty = ~subset.any(dim=1)
    subset[empty] = present[empty]
    return subset


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
            subset = random_subsets(present)
            # the subset's fusion reuses the encoders' features: one more decoder pass, no re-encoding
            terms["seg_subset"] = self.loss_fn.dice_ce(self.net.decode_subset(output, subset), y)
        return torch.stack(list(terms.values())).sum(), terms


class ClickTrainStep(torch.nn.Module):
    """The loss of a batch after simulated correction clicks: what trains the click guidance.

    Per sample a subset of its sequences is drawn (:func:`random_subsets`: clicks must help with one sequence
    as with four), a region is drawn, then 1 to ``max_clicks`` clicks are placed one after the other, each in
    the largest error of the prediction made with the clicks before it (:func:`magms.clicks.next_click`),
    as the interactive-segmentation literature simulates a user (Sakinis et al. 2019; DeepEdit). The loss
    is the segmentation loss of the prediction with all of them. The encoders and the decoder are frozen
    (the guidance alone learns), so each patch is encoded once and only the decoder runs per click.

    Args:
        net: a network with click guidance (``NetConfig.click_regions``).
        loss_fn: the segmentation loss over the scheme's regions.
        regions: for each region, its label indices (as :class:`~magms.losses.RegionDiceCELoss` takes them).
        max_clicks: the most clicks simulated per sample.
    """

    def __init__(self, net: torch.nn.Module, loss_fn: RegionDiceCELoss, regions: Sequence[Sequence[int]], max_clicks: int) -> None:
        super().__init__()
        if max_clicks < 1:
            raise ValueError(f"max_clicks must be at least 1, got {max_clicks}")
        self.net, self.loss_fn, self.max_clicks = net, loss_fn, max_clicks
        self.regions = [np.asarray(r) for r in regions]

    def forward(self, x: torch.Tensor, present: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            x: (B, M, H, W, D); present: (B, M) bool; y: (B, 1, H, W, D) label indices.
        Returns:
            The loss after the clicks, and it as the one named term.
        """
        with torch.no_grad():
            fused = self.net.fuse(x, random_subsets(present))
        labels = y[:, 0].cpu().numpy()
        batch = x.shape[0]
        region = torch.randint(len(self.regions), (batch,)).tolist()
        truth = [np.isin(labels[b], self.regions[region[b]]) for b in range(batch)]
        points: list[list[ClickPoint]] = [[] for _ in range(batch)]
        maps = None
        for _ in range(int(torch.randint(1, self.max_clicks + 1, ()).item())):
            with torch.no_grad():
                predicted = self.net.decode(fused, maps).argmax(dim=1).cpu().numpy()
            for b in range(batch):
                click = next_click(np.isin(predicted[b], self.regions[region[b]]), truth[b])
                if click is not None:
                    points[b].append(ClickPoint(tuple(map(float, click.index)), click.positive, region[b]))
            maps = torch.from_numpy(
                np.stack([click_maps(points[b], labels.shape[1:], len(self.regions)) for b in range(batch)])
            ).to(x.device)
        loss = self.loss_fn(self.net.decode(fused, maps), y)
        return loss, {"seg_clicks": loss}
