"""World boxes and their overlap, in plain Python: the core (SimpleITK images) and the Slicer
logic (MRML volume bounds) both measure overlap with :func:`box_overlap_fraction`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["box_overlap_fraction"]


def box_overlap_fraction(a_low: Sequence[float], a_high: Sequence[float], b_low: Sequence[float], b_high: Sequence[float]) -> float:
    """Fraction of box ``b``'s volume that lies inside box ``a`` (0: disjoint, 1: inside).

    Args:
        a_low, a_high: the corners of box ``a``, one value per axis.
        b_low, b_high: the corners of box ``b``.
    """
    inside, whole = 1.0, 1.0
    for a0, a1, b0, b1 in zip(a_low, a_high, b_low, b_high):
        inside *= max(0.0, min(a1, b1) - max(a0, b0))
        whole *= max(b1 - b0, 1e-12)
    return inside / whole
