"""Whether an image is skull-stripped, from its voxel values alone: numpy only.

The numeric core of :func:`magms.data.clinical.skull_check`, kept apart so that the Slicer modules
can tell the user, from a volume's array and spacing, what ``--preprocess auto`` will do, with the
same rule and without importing SimpleITK's pipeline or anything heavy (one implementation: the
panel and ``magms segment`` call the same function on the same voxels).

A stripped image is the brain with everything else set to one value: many voxels hold exactly the
image's minimum (at least 30 %: a brain fills about half of its bounding box), and the other voxels
are a brain's volume (at most 2.3 l). A head scan's air holds noise, so few voxels share one exact
value; where a scanner sets the air to 0, the rest is a head, above 3 l when the whole head is covered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["STRIPPED_FILL_FRACTION", "STRIPPED_MAX_ML", "SkullCheck", "skull_check_array"]

#: A skull-stripped image holds its background fill value (its minimum) in at least this share of voxels.
STRIPPED_FILL_FRACTION = 0.30
#: ... and the rest (the brain) is at most this large, in ml. Brains in MNI space measure about 1.9 l;
#: a head with skull and scalp, 3 l and more.
STRIPPED_MAX_ML = 2300.0


@dataclasses.dataclass(frozen=True)
class SkullCheck:
    """Whether an image looks skull-stripped, and the two numbers that say so.

    Attributes:
        stripped: ``fill_fraction >= STRIPPED_FILL_FRACTION and tissue_ml <= STRIPPED_MAX_ML``.
        fill_fraction: share of the voxels that hold exactly the image's minimum (its background fill).
        tissue_ml: volume of the other voxels, in ml.
    """

    stripped: bool
    fill_fraction: float
    tissue_ml: float

    def describe(self) -> str:
        verdict = "skull-stripped" if self.stripped else "not skull-stripped"
        return f"{verdict} ({self.fill_fraction:.0%} of the voxels at the background value, {self.tissue_ml:.0f} ml of tissue)"


def skull_check_array(array: np.ndarray, spacing: Sequence[float]) -> SkullCheck:
    """Tell whether an image with voxels ``array`` (any axis order) and voxel size ``spacing`` (mm) is skull-stripped.

    Raises:
        ValueError: an empty array, or a spacing that is not three positive numbers.
    """
    array = np.asarray(array)
    if array.size == 0:
        raise ValueError("array: an image without voxels")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing: expected three positive voxel sizes in mm, got {tuple(spacing)}")
    low = array.min()
    fill = float(np.count_nonzero(array == low)) / array.size
    voxel_ml = float(np.prod(spacing)) / 1000.0
    tissue_ml = (array.size - fill * array.size) * voxel_ml
    return SkullCheck(fill >= STRIPPED_FILL_FRACTION and tissue_ml <= STRIPPED_MAX_ML, fill, tissue_ml)
