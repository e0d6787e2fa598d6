"""The structures a label map is reported and exported as: each non-background label, then each region.

One list serves the review's volumes and Dice (:mod:`magms.review`) and the DICOM RT Structure Set
ROIs and SEG segments (:mod:`magms.dicom`), so a structure has one name, colour and code everywhere.
Radiotherapy targets and the brain (:mod:`magms.targets`) are structures too, with their own voxels
instead of label values, and the RT Structure Set attributes a planning system reads.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from magms.labels.schemes import LabelScheme
from magms.labels.terminology import ALTERED, BRAIN, NEOPLASM, Code

__all__ = ["Structure", "structures"]


@dataclasses.dataclass(frozen=True)
class Structure:
    """A non-background label or a region of a scheme.

    Attributes:
        key: the label's or region's key (``"edema"``, ``"wt"``).
        kind: ``"label"`` or ``"region"`` (a key may name both).
        name: display name (the scheme's).
        color: RGB 0..255.
        category: segmented property category code.
        type: segmented property type code.
        anatomic_region: where it is (Brain), or None.
        values: the label values it covers (none for a target).
        interpreted_type: the RT ROI Interpreted Type (``GTV``, ``CTV``, ``PTV``, ``ORGAN``); empty for the
            network's labels and regions, which are contours for review, not planning structures.
        algorithm: the ROI Generation Algorithm: ``AUTOMATIC`` (the network's) or ``SEMIAUTOMATIC`` (grown by a margin).
        description: how it was made (the RT ROI's description, e.g. ``CTV = GTV + 15 mm, within the brain``).
        voxels: (z, y, x) bool on the label map's grid for a structure that is not a set of label values.
    """

    key: str
    kind: str
    name: str
    color: tuple[int, int, int]
    category: Code
    type: Code
    anatomic_region: Code | None
    values: tuple[int, ...]
    interpreted_type: str = ""
    algorithm: str = "AUTOMATIC"
    description: str = ""
    voxels: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def mask(self, labels: np.ndarray) -> np.ndarray:
        """The structure's voxels in ``labels`` (its scheme's values), or its own voxels; bool of the same shape."""
        return np.isin(labels, self.values) if self.voxels is None else np.asarray(self.voxels, dtype=bool)


def structures(scheme: LabelScheme) -> tuple[Structure, ...]:
    """The non-background labels in value order, then the regions, of ``scheme``.

    A region takes the colour of its outermost label, the one in no smaller region (whole tumour:
    oedema), so its outline has the colour a reviewer sees at its edge; its codes are its label's
    when it is one label (enhancing tumour), else Neoplasm.
    """
    found = [Structure(label.key, "label", label.name, label.color, label.category, label.type, label.anatomic_region, (label.value,))
             for label in scheme.labels if label.value != 0]
    regions = [(region, scheme.region_values(region.key)) for region in scheme.regions]
    for region, values in regions:
        smaller = {v for _, vs in regions if len(vs) < len(values) and set(vs) <= set(values) for v in vs}
        edge = scheme.label(next((v for v in values if v not in smaller), values[0]))
        if len(values) == 1:
            category, kind, where = edge.category, edge.type, edge.anatomic_region
        else:
            category, kind, where = ALTERED, NEOPLASM, BRAIN
        found.append(Structure(region.key, "region", region.name, edge.color, category, kind, where, tuple(values)))
    return tuple(found)
