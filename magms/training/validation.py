"""Validation during training: Dice of every modality subset on the held-out cases, and the size of the components to remove."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from magms.config import PreprocessConfig
from magms.data.preprocessing import run_in_foreground
from magms.labels import LabelScheme
from magms.metrics import case_dice
from magms.modalities import subsets_of
from magms.training.postprocessing import whole_lesion_dice_by_min_size
from magms.windows import sliding_window

__all__ = ["Validation", "validate"]


@dataclasses.dataclass(frozen=True)
class Validation:
    """What one validation measured.

    Args:
        dice: ``"<slot>+<slot>:<region or label>"`` -> mean Dice over the cases that have the subset.
        lesion_dice_by_min_size: smallest component volume kept (ml) -> the whole region's lesion-wise Dice
            with the smaller components removed, mean over every case and subset (see
            :mod:`magms.training.postprocessing`); empty unless asked for, or for a scheme without a whole region.
    """

    dice: dict[str, float]
    lesion_dice_by_min_size: dict[float, float]


def validate(
    model: torch.nn.Module,
    val_ds: Iterable[Mapping[str, Any]],
    slots: Sequence[str],
    scheme: LabelScheme,
    pre: PreprocessConfig,
    device: torch.device,
    component_sizes: bool = False,
) -> Validation:
    """Mean Dice per subset and region (labels for schemes without regions) on the working grid, and
    with ``component_sizes`` the whole region's lesion-wise Dice with its small components removed.

    Every subset of the modalities a case has is segmented as inference would: sliding windows
    over the foreground's box only.

    Args:
        model: the bare network; it is put in eval mode and back in train mode.
        val_ds: prepared cases (``image``, ``label``, ``foreground``, ``present``), as training reads them.
        slots: the network's modality slots, in order.
        scheme: label scheme of the labels.
        pre: patch size, overlap and blend mode of the sliding windows.
        device: where the network runs.
        component_sizes: also score the component sizes a bundle may remove (a run's last validation).
    """
    model.eval()
    sums: dict[str, list[float]] = {}
    by_size: dict[float, list[float]] = {}
    with torch.inference_mode():
        for item in val_ds:
            present = [s for s, p in zip(slots, item["present"].tolist()) if p]
            truth = scheme.decode(item["label"][0].numpy().astype(np.int64))
            x = item["image"].as_tensor().numpy()
            foreground = item["foreground"].as_tensor()[0].numpy() > 0.5
            spacing = [float(v) for v in item["image"].pixdim]
            for subset in subsets_of(present):
                probs = _segment_subset(model, x, foreground, list(subset), pre, len(scheme.labels), device)
                pred = scheme.decode(probs.argmax(0))
                for target, value in case_dice(pred, truth, scheme).items():
                    sums.setdefault(f"{'+'.join(subset)}:{target}", []).append(value)
                if component_sizes:
                    for size, value in whole_lesion_dice_by_min_size(pred, truth, scheme, spacing).items():
                        by_size.setdefault(size, []).append(value)
    model.train()
    return Validation({k: float(np.mean(v)) for k, v in sums.items()}, {k: float(np.mean(v)) for k, v in by_size.items()})


def _segment_subset(
    model: torch.nn.Module, x: np.ndarray, foreground: np.ndarray, subset: list[str], pre: PreprocessConfig, classes: int,
    device: torch.device,
) -> np.ndarray:
    """(classes, X, Y, Z) probabilities from the modalities ``subset`` of ``x`` (M, X, Y, Z), the windows
    as inference runs them (:func:`magms.windows.sliding_window`)."""

    def predict(windows: np.ndarray) -> np.ndarray:
        logits = model(torch.from_numpy(windows).to(device), present=subset)
        return torch.softmax(logits.float(), 1).cpu().numpy()

    def windows(crop: np.ndarray) -> np.ndarray:
        return sliding_window(crop, pre.patch_size, predict, pre.overlap, pre.blend_mode, batch=2)

    return run_in_foreground(x, foreground, windows, classes)
