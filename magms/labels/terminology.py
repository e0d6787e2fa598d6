"""Coded concepts: SNOMED CT codes of the labelled tissues and 3D Slicer terminology entries.

Codes are SNOMED CT (scheme designator ``"SCT"``) as in DICOM SEG and 3D Slicer: types found in
Slicer's "3D Slicer General Anatomy list" (Necrosis, Edema, Gray Matter, White Matter, Brain
cerebrospinal fluid pathway, Tissue) are written against that list, the others (Neoplasm) against
the DICOM master list, as SlicerMONAIAuto3DSeg does.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from magms.config import _Record

__all__ = [
    "Code",
    "SLICER_GENERAL_ANATOMY",
    "DICOM_MASTER_LIST",
    "ANATOMIC_CONTEXT",
    "ALTERED",
    "ANATOMICAL",
    "TISSUE",
    "NECROSIS",
    "EDEMA",
    "NEOPLASM",
    "NEOPLASM_PRIMARY",
    "CSF_SPACE",
    "GREY_MATTER",
    "WHITE_MATTER",
    "BRAIN",
    "slicer_terminology_entry",
]

SLICER_GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_MASTER_LIST = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclasses.dataclass(frozen=True)
class Code(_Record):
    """A coded concept, e.g. ``Code("SCT", "6574001", "Necrosis")``.

    Args:
        scheme: coding scheme designator ("SCT" for SNOMED CT).
        value: the code, as a string.
        meaning: its human-readable meaning.
    """

    _where: ClassVar[str] = "code"

    scheme: str
    value: str
    meaning: str

    def __str__(self) -> str:
        # Slicer and DICOM write a code as designator^value^meaning.
        return f"{self.scheme}^{self.value}^{self.meaning}"


# Categories and types (SNOMED CT, as in DICOM CID 7150/7159 and Slicer's anatomy list).
ALTERED = Code("SCT", "49755003", "Morphologically Altered Structure")
ANATOMICAL = Code("SCT", "123037004", "Anatomical Structure")
TISSUE = Code("SCT", "85756007", "Tissue")
NECROSIS = Code("SCT", "6574001", "Necrosis")
EDEMA = Code("SCT", "79654002", "Edema")
NEOPLASM = Code("SCT", "108369006", "Neoplasm")
NEOPLASM_PRIMARY = Code("SCT", "86049000", "Neoplasm, Primary")
CSF_SPACE = Code("SCT", "280371009", "Brain cerebrospinal fluid pathway")
GREY_MATTER = Code("SCT", "389081007", "Gray Matter")
WHITE_MATTER = Code("SCT", "389080008", "White Matter")
BRAIN = Code("SCT", "12738006", "Brain")

# (category, type) pairs present in Slicer's "3D Slicer General Anatomy list"; others resolve in
# the DICOM master list, which Slicer also loads.
_IN_SLICER_GENERAL_ANATOMY = frozenset(
    (category.value, kind.value)
    for category, kind in (
        (TISSUE, TISSUE),
        (ALTERED, NECROSIS),
        (ALTERED, EDEMA),
        (ANATOMICAL, CSF_SPACE),
        (ANATOMICAL, GREY_MATTER),
        (ANATOMICAL, WHITE_MATTER),
    )
)


def slicer_terminology_entry(category: Code, kind: Code, anatomic_region: Code | None = None) -> str:
    """3D Slicer terminology entry string, for a segment's ``TerminologyEntry`` tag.

    Format: ``context~category~type~typeModifier~anatomicContext~region~regionModifier`` with
    each code as ``SCT^value^meaning`` and ``^^`` for an empty one, e.g.
    ``Segmentation category and type - 3D Slicer General Anatomy list~SCT^49755003^Morphologically
    Altered Structure~SCT^79654002^Edema~^^~Anatomic codes - DICOM master list~SCT^12738006^Brain~^^``.

    Args:
        category: segmented property category.
        kind: segmented property type; with ``category`` it picks the context: Slicer's general
            anatomy list when the pair is in it, else the DICOM master list.
        anatomic_region: where the structure is, or None (written as ``^^``).

    Returns:
        the seven ``~``-separated fields.
    """
    in_slicer_list = (category.value, kind.value) in _IN_SLICER_GENERAL_ANATOMY
    context = SLICER_GENERAL_ANATOMY if in_slicer_list else DICOM_MASTER_LIST
    region = "^^" if anatomic_region is None else str(anatomic_region)
    return "~".join((context, str(category), str(kind), "^^", ANATOMIC_CONTEXT, region, "^^"))
