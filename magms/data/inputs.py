"""One case's inputs, read, checked and brought onto the reference input's grid.

Training (each case) and inference (the user's images) use the same function, so an input that
one accepts the other accepts too, with the same message for the same fault.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import SimpleITK as sitk

from magms.data.io import overlap_fraction, read_image, resample_like, same_grid
from magms.errors import ConfigError, ImageError
from magms.protocol import MIN_OVERLAP

__all__ = ["PreparedInputs", "prepare_inputs"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PreparedInputs:
    """Checked inputs on the reference grid."""

    images: dict[str, sitk.Image]  # slot -> image, in the bundle's slot order
    reference_slot: str
    notes: list[str]

    @property
    def reference(self) -> sitk.Image:
        return self.images[self.reference_slot]


def prepare_inputs(inputs: Mapping[str, str | os.PathLike[str] | sitk.Image], slots: tuple[str, ...], overlap_min: float = MIN_OVERLAP) -> PreparedInputs:
    """Read, check and bring the inputs onto the reference input's grid.

    Args:
        inputs: slot -> image path (file or DICOM folder) or SimpleITK image.
        slots: the bundle's slots in order; the first present one is the reference.
        overlap_min: smallest fraction of an input's world box that must lie inside the reference's.
    Raises:
        ConfigError: no input, or a slot the bundle lacks.
        ImageError: every unusable input at once (missing, unreadable, not 3-D, NaN, constant,
            no overlap with the reference).
    """
    if not inputs:
        raise ConfigError(f"no input image: give at least one of the model's slots ({', '.join(slots)})")
    unknown = [s for s in inputs if s not in slots]
    if unknown:
        raise ConfigError(f"slot(s) {', '.join(map(repr, unknown))} not in the model, whose slots are {', '.join(slots)}")
    images: dict[str, sitk.Image] = {}
    names: dict[str, str] = {}
    problems: list[str] = []
    for slot in (s for s in slots if s in inputs):
        source = inputs[slot]
        names[slot] = "image" if isinstance(source, sitk.Image) else Path(source).name
        try:
            images[slot] = source if isinstance(source, sitk.Image) else read_image(source)
        except ImageError as err:
            problems.append(f"{slot}: {err}")
    if problems:
        raise ImageError("; ".join(problems))
    reference_slot = next(iter(images))
    reference = images[reference_slot]
    notes = []
    for slot, img in list(images.items())[1:]:
        if same_grid(reference, img):
            continue
        fraction = overlap_fraction(reference, img)
        if fraction < overlap_min:
            problems.append(
                f"{slot}: {names[slot]} covers only {fraction:.0%} of the space of the reference "
                f"{reference_slot} input {names[reference_slot]}: are they the same patient and session?"
            )
            continue
        notes.append(f"{slot}: {names[slot]} resampled onto the grid of {reference_slot} ({names[reference_slot]})")
        images[slot] = resample_like(img, reference)
    if problems:
        raise ImageError("; ".join(problems))
    for note in notes:
        logger.info("%s", note)
    return PreparedInputs(images, reference_slot, notes)
