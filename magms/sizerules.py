"""Size rules on a label map: too small a structure relabelled (:class:`magms.config.SizeRule`).

Inference applies a bundle's rules (:mod:`magms.inference.postprocess`) and training chooses the size of
the components a bundle removes (:mod:`magms.training.postprocessing`), both from here. Rules run in ml,
so they mean the same at any grid spacing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from magms.config import SizeRule
from magms.data.preprocessing import foreground_box
from magms.labels import LabelScheme

__all__ = ["apply_size_rules", "connected_components", "target_mask"]


def target_mask(labels: np.ndarray, scheme: LabelScheme, key: str) -> np.ndarray:
    """The voxels of a region (``wt``) or of a label (``enhancing``), as a bool array of ``labels``' shape."""
    if key in {r.key for r in scheme.regions}:
        return scheme.region_mask(labels, key)
    return np.asarray(labels) == scheme.by_key(key).value


def apply_size_rules(labels: np.ndarray, scheme: LabelScheme, rules: Sequence[SizeRule], voxel_ml: float) -> np.ndarray:
    """The label map after each rule in turn (a copy when there are rules; ``labels`` is not changed).

    Args:
        labels: (z, y, x) label values of ``scheme``.
        scheme: the label scheme.
        rules: see :class:`magms.config.SizeRule`.
        voxel_ml: the volume of one voxel of ``labels`` in ml.
    """
    if not rules:
        return labels  # nothing to do: no copy of a whole volume on every segmentation
    out = np.array(labels, copy=True)
    for rule in rules:
        mask = target_mask(out, scheme, rule.target)
        value = scheme.by_key(rule.replace_with).value
        if rule.scope == "total":
            if 0 < mask.sum() * voxel_ml < rule.min_ml:
                out[mask] = value
            continue
        if not mask.any():
            continue
        box = foreground_box(mask)
        components = connected_components(mask[box])
        small = np.bincount(components.ravel()) * voxel_ml < rule.min_ml
        small[0] = False  # outside the target
        out[box][small[components]] = value
    return out


def connected_components(mask: np.ndarray) -> np.ndarray:
    """Connected components of a 3-D bool mask, 26-connected (faces, edges and corners), numbered from
    1 (0: outside the mask). SimpleITK's, which inference has imported already; scipy's would add 0.3 s."""
    import SimpleITK as sitk

    labelled = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    return sitk.GetArrayFromImage(labelled).astype(np.int64)
