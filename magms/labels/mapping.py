"""Maps between label schemes of the registry: which value of one is which value of another.

Here, not in :mod:`magms.labels.schemes`: the schemes are looked up by key in the registry, which
builds them from :mod:`~magms.labels.schemes` (no import runs back up).
"""

from __future__ import annotations

import numpy as np

from magms.errors import ConfigError
from magms.labels.registry import get_scheme
from magms.labels.schemes import LabelScheme, remap_values

__all__ = ["label_map", "map_labels"]


def label_map(src: str | LabelScheme, dst: str | LabelScheme) -> dict[int, int]:
    """Value map from one scheme to another, derived from the labels' components.

    Each source label goes to the destination label with the same key, else to the one whose
    components contain all of its own (brats2013 necrosis and non-enhancing -> msd_task01
    necrotic_core).

    Args:
        src: source scheme (registry key or scheme).
        dst: destination scheme.

    Returns:
        source value -> destination value, for every source value.

    Raises:
        ConfigError: unknown scheme, or a source label the destination cannot represent (it has no
            label for it, or splits it, as brats2013 splits msd_task01's necrotic core).
    """
    source, target = get_scheme(src), get_scheme(dst)
    mapping: dict[int, int] = {}
    for label in source.labels:
        same = [lab for lab in target.labels if lab.key == label.key]
        covering = same or [lab for lab in target.labels if set(label.components) <= set(lab.components)]
        if len(covering) == 1:
            mapping[label.value] = covering[0].value
            continue
        pieces = [lab for lab in target.labels if set(label.components) & set(lab.components)]
        why = (
            f"{target.key} splits it into " + " and ".join(f"{lab.value} '{lab.key}'" for lab in pieces)
            if pieces
            else f"{target.key} has no label for it"
        )
        raise ConfigError(
            f"cannot map label scheme {source.key} to {target.key}: "
            f"label {label.value} '{label.key}' ({label.name}) cannot be represented; {why}"
        )
    return mapping


def map_labels(array: np.ndarray, src: str | LabelScheme, dst: str | LabelScheme) -> np.ndarray:
    """Rewrite a label map from scheme ``src`` to scheme ``dst`` with a lookup table.

    Args:
        array: label map of any shape; integer, or float holding whole numbers.
        src: source scheme (key or scheme).
        dst: destination scheme.

    Returns:
        the mapped array, same shape and dtype.

    Raises:
        ConfigError: the pair cannot be mapped (see :func:`label_map`), or ``array`` holds values
            not in ``src`` (they are named).
    """
    source = get_scheme(src)
    mapping = label_map(source, dst)
    return remap_values(array, mapping, f"label map in scheme '{source.key}'")
