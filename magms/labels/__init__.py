"""Label schemes: the one place for label values, names, colours, terminology and regions.

Brain-tumour data sets number the same tissue differently, so every label names the semantic
components it covers, and maps between schemes, evaluation regions (whole tumour, tumour core,
enhancing tumour) and Slicer terminology are all derived from those components.

Submodules:
    terminology: the coded concepts: :class:`Code`, the SNOMED CT codes, Slicer's terminology
        contexts and the terminology entry string of a segment.
    schemes: :class:`Label`, :class:`Region`, :class:`LabelScheme`.
    registry: the data: the component table (names, colours, codes), :data:`TUMOUR_REGIONS`,
        :data:`SCHEMES` and :func:`get_scheme`.
    mapping: :func:`label_map` / :func:`map_labels` between schemes of the registry.
    structures: :class:`Structure`, :func:`structures`: each label, then each region, with its
        name, colour and codes, as reports and DICOM objects list them.

Everything is importable from ``magms.labels`` as before the split.
"""

from __future__ import annotations

from magms.labels.mapping import label_map, map_labels
from magms.labels.registry import SCHEMES, TUMOUR_REGIONS, get_scheme
from magms.labels.schemes import Label, LabelScheme, Region
from magms.labels.structures import Structure, structures
from magms.labels.terminology import (  # noqa: F401  (the codes stay reachable as magms.labels.X)
    ALTERED,
    ANATOMIC_CONTEXT,
    ANATOMICAL,
    BRAIN,
    CSF_SPACE,
    DICOM_MASTER_LIST,
    EDEMA,
    GREY_MATTER,
    NECROSIS,
    NEOPLASM,
    NEOPLASM_PRIMARY,
    SLICER_GENERAL_ANATOMY,
    TISSUE,
    WHITE_MATTER,
    Code,
)

__all__ = [
    "Code",
    "Label",
    "Region",
    "LabelScheme",
    "SCHEMES",
    "TUMOUR_REGIONS",
    "get_scheme",
    "label_map",
    "map_labels",
    "Structure",
    "structures",
]
