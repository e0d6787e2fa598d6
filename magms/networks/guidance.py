"""Click guidance: the user's clicks as a correction of the fused features, level by level, near the clicks.

A small convolutional pyramid reads the click maps (a positive and a negative channel per region,
:func:`magms.clicks.click_maps`). At every level of the shared decoder it looks at its own features and the
fused image features together, so that a click can extend a region over tissue that looks like the clicked
spot, and adds the result to the fused features, but only within reach of a click: the correction is
multiplied by a mask that is 1 near some click and 0 elsewhere (the clicks' footprint, max-pooled to the
level and widened by :data:`REACH` cells). Maps without a click give a zero mask, so the guided network with
no click IS the automatic network, bit for bit, and one model serves both. The last convolution per level
starts at zero, so training from an automatic model starts from that model's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["ClickGuidance", "REACH"]

#: How far a click's correction reaches beyond its Gaussian, in cells of each level (a cell of level l is
#: 2**l voxels): 2 cells, so 8 voxels (16 mm on the 2 mm grid) at the deepest of four levels.
REACH = 2


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.LeakyReLU(0.2))


class ClickGuidance(nn.Module):
    """Click maps and fused features in, one additive correction per feature level out, zero away from the clicks.

    Args:
        regions: number of regions clicks can name; the maps have ``2 * regions`` channels
            (positive, negative per region).
        channels: widths of the fused features, shallow to deep (the U-Net's ``channels``); level
            ``l`` is ``2 ** l`` times smaller than the click maps.
        width_ratio: the click pyramid runs at ``channels // width_ratio`` wide.

    Input: ``(B, 2 * regions, D, H, W)`` click maps and the fused features, ``(B, channels[l], D / 2**l, ...)``.
    Output: a tuple of corrections shaped as the fused features.
    """

    def __init__(self, regions: int, channels: Sequence[int], width_ratio: int = 2) -> None:
        super().__init__()
        if regions < 1 or not channels:
            raise ValueError(f"need at least one region and one level, got regions={regions}, channels={tuple(channels)}")
        widths = [max(4, c // width_ratio) for c in channels]
        self.stages = nn.ModuleList()
        for level, width in enumerate(widths):
            first = _conv(2 * regions, width) if level == 0 else _conv(widths[level - 1], width, stride=2)
            self.stages.append(nn.Sequential(first, _conv(width, width)))
        # each level's correction from the clicks' features and the image's fused features together
        self.mixers = nn.ModuleList(_conv(w + c, c) for w, c in zip(widths, channels))
        self.projections = nn.ModuleList(nn.Conv3d(c, c, 1, bias=False) for c in channels)
        for projection in self.projections:
            nn.init.zeros_(projection.weight)

    def forward(self, maps: Tensor, fused: Sequence[Tensor]) -> tuple[Tensor, ...]:
        corrections = []
        x = maps
        footprint = (maps.amax(dim=1, keepdim=True) > 1e-3).to(maps.dtype)
        for level, (stage, mixer, projection) in enumerate(zip(self.stages, self.mixers, self.projections)):
            x = stage(x)
            features = fused[level]
            mask = functional.max_pool3d(footprint, 2**level) if level else footprint
            mask = functional.max_pool3d(mask, 2 * REACH + 1, stride=1, padding=REACH)
            corrections.append(projection(mixer(torch.cat([x, features.to(x.dtype)], dim=1))) * mask)
        return tuple(corrections)
