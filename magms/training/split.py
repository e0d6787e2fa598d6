"""The split of the labelled cases into training and validation cases."""

from __future__ import annotations

import random
from collections.abc import Sequence

from magms.data.cases import Case
from magms.errors import ConfigError

__all__ = ["split_cases"]


def split_cases(cases: Sequence[Case], fraction: float, seed: int, names: Sequence[str] = ()) -> tuple[list[Case], list[Case]]:
    """Split into (train, validation): the cases named in ``names``, else a seeded random
    ``fraction`` (at least one validation case when ``fraction`` > 0).

    Args:
        cases: the labelled cases, in a stable order (the seeded shuffle depends on it).
        fraction: share of the cases held out when ``names`` is empty; 0 holds out none.
        seed: seeds the shuffle, so a resumed run gets the same split.
        names: explicit validation cases; overrides ``fraction``. Default: none.
    Returns:
        (training cases, validation cases), each in the order of ``cases``.
    Raises:
        ConfigError: a name that is no case, or every case named.
    """
    if names:
        known = {c.name for c in cases}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"validation case(s) {', '.join(unknown)} not in the data (cases: {', '.join(sorted(known))})")
        if known <= set(names):
            raise ConfigError("every case is a validation case: leave at least one for training")
        return [c for c in cases if c.name not in names], [c for c in cases if c.name in names]
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    # at least one validation case when asked for any, and always one left to train on
    n_val = 0 if fraction == 0 else min(max(1, round(fraction * len(cases))), len(cases) - 1)
    val = sorted(order[:n_val])
    return [c for i, c in enumerate(cases) if i not in val], [cases[i] for i in val]
