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

__all__ = ["PreparedInputs", "prepare_inputs", "read_inputs", "onto_reference"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PreparedInputs:
    """Checked inputs on the reference grid."""

    images: dict[str, sitk.Image]  # slot -> image, in the bundle's slot order
    reference_slot: str
    notes: list[str]
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # slot -> file name (or "image"), for messages

    @property
    def reference(self) -> sitk.Image:
        return self.images[self.reference_slot]


def prepare_inputs(inputs: Mapping[str, str | os.PathLike[str] | sitk.Image], slots: tuple[str, ...],
                   overlap_min: float = MIN_OVERLAP) -> PreparedInputs:
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
    images, names = read_inputs(inputs, slots)
    return onto_reference(images, names, overlap_min)


def read_inputs(inputs: Mapping[str, str | os.PathLike[str] | sitk.Image],
                slots: tuple[str, ...]) -> tuple[dict[str, sitk.Image], dict[str, str]]:
    """Read and check each input on its own grid (the first step of :func:`prepare_inputs`).

    Returns:
        slot -> image, in the bundle's slot order (the reference first), and slot -> file name for messages.
    Raises:
        ConfigError: no input, or a slot the bundle lacks.
        ImageError: every unreadable or unusable input at once.
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
    return images, names


def onto_reference(
    images: Mapping[str, sitk.Image], names: Mapping[str, str], overlap_min: float = MIN_OVERLAP,
    transforms: Mapping[str, sitk.Transform] | None = None,
) -> PreparedInputs:
    """Bring read inputs onto the grid of the first one, the reference (the second step of :func:`prepare_inputs`).

    Args:
        images: slot -> image on its own grid, the reference first.
        names: slot -> file name, for messages.
        overlap_min: smallest fraction of an input's world box that must lie inside the reference's.
        transforms: slot -> rigid transform from the reference's world points to that input's (a
            registration, :mod:`magms.data.clinical`); the others are resampled as their headers place them.
            For a registered input, the smaller of the two boxes must lie inside the other by ``overlap_min``
            (a whole-head series may cover far more than a slab); otherwise the input's box inside the reference's.
    Raises:
        ImageError: every input that does not overlap the reference enough, at once.
    """
    transforms = transforms or {}
    images = dict(images)
    reference_slot = next(iter(images))
    reference = images[reference_slot]
    notes, problems = [], []
    for slot, img in list(images.items())[1:]:
        transform = transforms.get(slot)
        if transform is None and same_grid(reference, img):
            continue
        fraction = overlap_fraction(reference, img)
        if transform is not None:  # registered: the images' content matched; one may cover more than the other
            fraction = max(fraction, overlap_fraction(img, reference))
        if fraction < overlap_min:
            problems.append(
                f"{slot}: {names[slot]} covers only {fraction:.0%} of the space of the reference "
                f"{reference_slot} input {names[reference_slot]}: are they the same patient and session?"
            )
            continue
        how = " as registered" if transform is not None else ""
        notes.append(f"{slot}: {names[slot]} resampled onto the grid of {reference_slot} ({names[reference_slot]}){how}")
        images[slot] = resample_like(img, reference) if transform is None else resample_like(img, reference, transform=transform)
    if problems:
        raise ImageError("; ".join(problems))
    for note in notes:
        logger.info("%s", note)
    return PreparedInputs(images, reference_slot, notes, dict(names))
