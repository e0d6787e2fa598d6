"""Every labelled case checked before training, every problem reported at once.

:func:`check_cases` reads every case as training will, so a run never fails on case 40 after an
hour. It needs SimpleITK and numpy only, not torch: ``magms train --check-only`` runs it, and so does
the Training module's "Check the data" (in a child process).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from magms.data.cases import Case, find_cases, slots_of
from magms.data.inputs import prepare_inputs
from magms.data.io import overlap_fraction, same_grid
from magms.errors import ImageError, MAGMSError
from magms.labels import LabelScheme, get_scheme, label_map
from magms.modalities import canonical_slots
from magms.protocol import MIN_OVERLAP

__all__ = ["check_cases", "check_data"]


def check_cases(cases: Sequence[Case], slots: Sequence[str], scheme: LabelScheme) -> None:
    """Check every case before training; report ALL bad cases at once.

    Raises:
        ImageError: one line per problem, each naming the case and file.
    """
    problems: list[str] = []
    for case in cases:
        if case.label is None:
            problems.append(f"{case.name}: no label file")
            continue
        images = {s: p for s, p in case.images.items() if s in slots}
        if not images:
            problems.append(f"{case.name}: none of the slots {', '.join(slots)}")
            continue
        try:
            prepared = prepare_inputs(images, tuple(slots))
        except MAGMSError as err:
            problems.append(f"{case.name}: {err}")
            continue
        if not case.label.is_file():
            problems.append(f"{case.name}: {case.label}: no such label file")
            continue
        try:
            label = sitk.ReadImage(str(case.label))
        except RuntimeError:
            problems.append(f"{case.name}: {case.label.name}: cannot be read as an image")
            continue
        if label.GetDimension() != 3:
            problems.append(f"{case.name}: {case.label.name}: {label.GetDimension()}-D label, 3-D expected")
            continue
        values = set(np.unique(sitk.GetArrayViewFromImage(label)).tolist())
        own = get_scheme(case.scheme) if case.scheme else scheme
        bad = sorted(values - set(own.values))
        if bad:
            problems.append(f"{case.name}: {case.label.name}: label values {bad} are not in scheme {own.key!r} ({own.values})")
        elif own.key != scheme.key:
            try:
                label_map(own, scheme)
            except MAGMSError as err:
                problems.append(f"{case.name}: {err}")
        if not same_grid(label, prepared.reference) and overlap_fraction(prepared.reference, label) < MIN_OVERLAP:
            problems.append(f"{case.name}: {case.label.name} does not overlap the images in space")
    if problems:
        raise ImageError(f"{len(problems)} problem(s) in the data:\n  " + "\n  ".join(problems))


def check_data(data: str | os.PathLike[str], labels: str, slots: Sequence[str] | None = None) -> tuple[tuple[str, ...], int]:
    """Find and check the cases of a data folder or manifest as ``magms train`` will.

    Returns:
        The model's slots (given, as keys or aliases, or every slot the data has) and the number of cases.
    Raises:
        MAGMSError: the layout cannot be read, or every bad case (:class:`ImageError`, one line each).
    """
    slots = canonical_slots(slots or ())
    cases = find_cases(data, slots or None)
    slots = slots or slots_of(cases)
    check_cases(cases, slots, get_scheme(labels))
    return slots, len(cases)
