"""What inference does after the network: the bundle's post-processing as asked for, and flip test-time augmentation.

Both are recorded in the bundle (:class:`magms.config.PostprocessConfig`) so that every user of a
model gets what its validation chose. The size rules themselves are :mod:`magms.sizerules`
(training chooses them too).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import numpy as np

from magms.config import PostprocessConfig

__all__ = ["ALL_FLIPS", "as_requested", "flip_combinations", "flip_averaged", "flip_name", "flips_averaged"]

#: Flip test-time augmentation over every axis of the working grid.
ALL_FLIPS = (0, 1, 2)


def as_requested(recorded: PostprocessConfig, postprocess: bool = True, tta: bool = False) -> PostprocessConfig:
    """The bundle's post-processing as a user asks for it: none at all, or with flips over every axis.

    Args:
        recorded: the bundle's :class:`~magms.config.PostprocessConfig`.
        postprocess: False: neither size rules nor flips (wins over ``tta``).
        tta: flip test-time augmentation over :data:`ALL_FLIPS`, whatever the bundle records.
    """
    if not postprocess:
        return PostprocessConfig()
    return dataclasses.replace(recorded, flip_axes=ALL_FLIPS) if tta else recorded


def flip_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes``, the empty one (no flip) first: ``(0, 1)`` -> ``[(), (0,), (1,), (0, 1)]``."""
    return [combo for k in range(len(axes) + 1) for combo in itertools.combinations(axes, k)]


# the direction an axis of the working grid runs (MONAI axis codes) -> the pair of sides a flip swaps
_AXIS_PAIRS = {"L": "LR", "R": "LR", "A": "AP", "P": "AP", "S": "SI", "I": "SI"}


def flip_name(flip: Sequence[int], orientation: str = "RAS") -> str:
    """A flip of the working grid's axes for people: ``(0, 2)`` with ``"RAS"`` -> ``"flip LR+SI"``; ``()`` -> ``"no flip"``."""
    if not flip:
        return "no flip"
    return "flip " + "+".join(_AXIS_PAIRS.get(orientation[a].upper(), f"axis{a}") for a in flip)


def flip_averaged(predict: Callable, axes: Sequence[int]) -> Callable:
    """``predict`` (numpy windows (B, M, X, Y, Z) -> probabilities (B, C, X, Y, Z)) averaged over flips.

    Each flip of the window's spatial ``axes`` is predicted and flipped back; flips are their own
    inverse. With no axes, ``predict`` itself.
    """
    return flips_averaged(predict, flip_combinations(axes))


def flips_averaged(predict: Callable, combos: Sequence[Sequence[int]]) -> Callable:
    """``predict`` averaged over the given flips (each a tuple of spatial axes, ``()`` for none), as
    :func:`flip_averaged` does over all of them; ``[()]`` is ``predict`` itself, ``[(0,)]`` one flip alone."""
    if not combos:
        raise ValueError("combos: at least one flip (() for none) is needed")
    if list(map(tuple, combos)) == [()]:
        return predict

    def averaged(window: np.ndarray) -> np.ndarray:
        total = None
        for combo in combos:
            dims = tuple(2 + a for a in combo)
            probs = predict(np.ascontiguousarray(np.flip(window, dims)) if dims else window)
            probs = np.flip(probs, dims) if dims else probs
            total = probs.copy() if total is None else total + probs
        return total / np.float32(len(combos))

    return averaged
