"""Label schemes: the one place for label values, names, colours, terminology and regions.

Brain-tumour data sets number the same tissue differently: BraTS 2013 has necrosis (1), edema (2),
non-enhancing tumour (3) and enhancing tumour (4); MSD Task01 merges necrosis and non-enhancing
tumour into one label (2) and renumbers; BraTS 2021 keeps that merge as the necrotic tumour core
(1) but writes enhancing tumour as 4, BraTS 2023 as 3. Every :class:`Label` therefore names the
semantic *components* it covers (``necrotic_core`` has parts ``necrosis`` and ``non_enhancing``),
and maps between schemes (:func:`label_map`), evaluation regions (whole tumour, tumour core,
enhancing tumour) and Slicer terminology are all derived from those components, never typed in
twice.

Codes are SNOMED CT (scheme designator ``"SCT"``) as in DICOM SEG and 3D Slicer: types found in
Slicer's "3D Slicer General Anatomy list" (Necrosis, Edema, Gray Matter, White Matter, Brain
cerebrospinal fluid pathway, Tissue) are written against that list, the others (Neoplasm) against
the DICOM master list, as SlicerMONAIAuto3DSeg does.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from magms.errors import ConfigError

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
]

logger = logging.getLogger(__name__)

SLICER_GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_MASTER_LIST = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclasses.dataclass(frozen=True)
class Code:
    """A coded concept, e.g. ``Code("SCT", "6574001", "Necrosis")``.

    Args:
        scheme: coding scheme designator ("SCT" for SNOMED CT).
        value: the code, as a string.
        meaning: its human-readable meaning.
    """

    scheme: str
    value: str
    meaning: str

    def __str__(self) -> str:
        # Slicer and DICOM write a code as designator^value^meaning.
        return f"{self.scheme}^{self.value}^{self.meaning}"

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "code") -> Code:
        _check_keys(data, where, required=("scheme", "value", "meaning"))
        for name in ("scheme", "value", "meaning"):
            if not isinstance(data[name], str):
                raise ConfigError(f"{where}: '{name}' must be a string, got {data[name]!r}")
        return cls(data["scheme"], data["value"], data["meaning"])


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


@dataclasses.dataclass(frozen=True)
class Label:
    """One value of a label map.

    Args:
        value: the integer written in the label map.
        key: semantic component key (``"edema"``, ``"necrotic_core"``), shared across schemes.
        name: display name.
        color: RGB, each 0..255.
        category: segmented property category code.
        type: segmented property type code.
        parts: component keys this label is the union of (``necrotic_core`` ->
            ``("necrosis", "non_enhancing")``); empty when the label is a component itself.
        anatomic_region: where the structure is (Brain for tumour parts), or None.
    """

    value: int
    key: str
    name: str
    color: tuple[int, int, int]
    category: Code
    type: Code
    parts: tuple[str, ...] = ()
    anatomic_region: Code | None = None

    def __post_init__(self) -> None:
        # accept lists (JSON, hand-written schemes) but store tuples, so labels stay hashable and equal
        object.__setattr__(self, "color", tuple(self.color))
        object.__setattr__(self, "parts", tuple(self.parts))

    @property
    def components(self) -> tuple[str, ...]:
        """The smallest component keys this label covers: its parts, or its own key."""
        return self.parts or (self.key,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "key": self.key,
            "name": self.name,
            "color": list(self.color),
            "category": self.category.to_dict(),
            "type": self.type.to_dict(),
            "parts": list(self.parts),
            "anatomic_region": None if self.anatomic_region is None else self.anatomic_region.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "label") -> Label:
        _check_keys(
            data,
            where,
            required=("value", "key", "name", "color", "category", "type"),
            optional=("parts", "anatomic_region"),
        )
        value = data["value"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: 'value' must be an integer, got {value!r}")
        for name in ("key", "name"):
            if not isinstance(data[name], str):
                raise ConfigError(f"{where}: '{name}' must be a string, got {data[name]!r}")
        color = data["color"]
        if not isinstance(color, (list, tuple)) or not all(isinstance(c, int) for c in color):
            raise ConfigError(f"{where}: 'color' must be three integers 0..255, got {color!r}")
        parts = data.get("parts", ())
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, str) for p in parts):
            raise ConfigError(f"{where}: 'parts' must be a list of component keys, got {parts!r}")
        region = data.get("anatomic_region")
        return cls(
            value=value,
            key=data["key"],
            name=data["name"],
            color=tuple(color),  # type: ignore[arg-type]  # length checked by LabelScheme
            category=Code.from_dict(data["category"], f"{where} category"),
            type=Code.from_dict(data["type"], f"{where} type"),
            parts=tuple(parts),
            anatomic_region=None if region is None else Code.from_dict(region, f"{where} anatomic_region"),
        )


@dataclasses.dataclass(frozen=True)
class Region:
    """An evaluation region: the union of some components (BraTS whole tumour, tumour core...).

    Args:
        key: short key (``"wt"``).
        name: display name.
        components: component keys inside the region.
    """

    key: str
    name: str
    components: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "components": list(self.components)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "region") -> Region:
        _check_keys(data, where, required=("key", "name", "components"))
        components = data["components"]
        if not isinstance(components, (list, tuple)) or not all(isinstance(c, str) for c in components):
            raise ConfigError(f"{where}: 'components' must be a list of component keys, got {components!r}")
        for name in ("key", "name"):
            if not isinstance(data[name], str):
                raise ConfigError(f"{where}: '{name}' must be a string, got {data[name]!r}")
        return cls(data["key"], data["name"], tuple(components))


# BraTS evaluation regions, over the finest components any tumour scheme has.
TUMOUR_REGIONS: tuple[Region, ...] = (
    Region("wt", "Whole tumour", ("necrosis", "non_enhancing", "edema", "enhancing")),
    Region("tc", "Tumour core", ("necrosis", "non_enhancing", "enhancing")),
    Region("et", "Enhancing tumour", ("enhancing",)),
)


@dataclasses.dataclass(frozen=True)
class LabelScheme:
    """The labels of one data set or model output, with the regions evaluated on them.

    Values need not be contiguous (BraTS 2021 uses 0, 1, 2, 4): a network predicts classes
    ``0..num_classes-1`` and :meth:`decode` writes them back in the scheme's values.

    Args:
        key: registry key (``"brats2021"``).
        name: display name.
        labels: every label, background (value 0, key ``"background"``) included.
        regions: evaluation regions; each label must lie wholly inside or outside each region.
        description: where the scheme comes from.

    Raises:
        ConfigError: no background 0, repeated value or key, a component in two labels, a colour
            out of range, a repeated region key or a label split by a region.
    """

    key: str
    name: str
    labels: tuple[Label, ...]
    regions: tuple[Region, ...] = ()
    description: str = ""
    _by_value: dict[int, Label] = dataclasses.field(init=False, repr=False, compare=False, hash=False)
    _by_key: dict[str, Label] = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        where = f"label scheme '{self.key}'"
        by_value: dict[int, Label] = {}
        by_key: dict[str, Label] = {}
        owner: dict[str, str] = {}
        for label in self.labels:
            if label.value < 0:
                raise ConfigError(f"{where}: label '{label.key}' has negative value {label.value}")
            if label.value in by_value:
                other = by_value[label.value].key
                raise ConfigError(f"{where}: value {label.value} used by '{other}' and '{label.key}'")
            if label.key in by_key:
                other_value = by_key[label.key].value
                raise ConfigError(f"{where}: key '{label.key}' used by values {other_value} and {label.value}")
            if len(label.color) != 3 or not all(0 <= c <= 255 for c in label.color):
                raise ConfigError(f"{where}: label '{label.key}' colour {label.color} is not three values 0..255")
            for component in label.components:
                if component in owner:
                    raise ConfigError(
                        f"{where}: component '{component}' is in both '{owner[component]}' and '{label.key}'"
                    )
                owner[component] = label.key
            by_value[label.value] = label
            by_key[label.key] = label
        if 0 not in by_value or by_value[0].key != "background":
            raise ConfigError(f"{where}: needs a background label with value 0 and key 'background'")
        region_keys = [r.key for r in self.regions]
        if len(set(region_keys)) != len(region_keys):
            raise ConfigError(f"{where}: repeated region key in {region_keys}")
        for region in self.regions:
            for label in self.labels:
                inside = set(label.components) & set(region.components)
                if inside and inside != set(label.components):
                    raise ConfigError(
                        f"{where}: region '{region.key}' holds only part of label {label.value} '{label.key}' "
                        f"({', '.join(sorted(inside))} of {', '.join(label.components)})"
                    )
        object.__setattr__(self, "labels", tuple(sorted(self.labels, key=lambda lab: lab.value)))
        object.__setattr__(self, "_by_value", by_value)
        object.__setattr__(self, "_by_key", by_key)

    # --- lookup -----------------------------------------------------------------------------

    @property
    def values(self) -> tuple[int, ...]:
        """Label values in ascending order, background first."""
        return tuple(label.value for label in self.labels)

    @property
    def keys(self) -> tuple[str, ...]:
        """Label keys in value order."""
        return tuple(label.key for label in self.labels)

    @property
    def num_classes(self) -> int:
        """Number of labels including background: the network's output channels (not max value + 1)."""
        return len(self.labels)

    def label(self, value: int) -> Label:
        """The label written as ``value``.

        Raises:
            ConfigError: the scheme has no such value.
        """
        try:
            return self._by_value[int(value)]
        except KeyError:
            raise ConfigError(
                f"label scheme '{self.key}' has no value {value}; its values are {_listing(self.values)}"
            ) from None

    def by_key(self, key: str) -> Label:
        """The label with component key ``key``.

        Raises:
            ConfigError: the scheme has no such key.
        """
        try:
            return self._by_key[key]
        except KeyError:
            known = ", ".join(self.keys)
            raise ConfigError(f"label scheme '{self.key}' has no label '{key}'; its keys are {known}") from None

    def region(self, key: str) -> Region:
        """The region called ``key``.

        Raises:
            ConfigError: the scheme has no such region.
        """
        for region in self.regions:
            if region.key == key:
                return region
        known = ", ".join(r.key for r in self.regions) or "none"
        raise ConfigError(f"label scheme '{self.key}' has no region '{key}'; its regions are {known}")

    def region_values(self, key: str) -> tuple[int, ...]:
        """Values of the labels inside region ``key``."""
        components = set(self.region(key).components)
        return tuple(lab.value for lab in self.labels if lab.key != "background" and set(lab.components) <= components)

    def region_mask(self, labels: np.ndarray, region_key: str) -> np.ndarray:
        """Boolean mask of the voxels inside a region.

        Args:
            labels: label map in this scheme's values, any shape.
            region_key: e.g. ``"wt"``, ``"tc"``, ``"et"``.

        Returns:
            bool array of the same shape; values not in the scheme count as outside.

        Raises:
            ConfigError: unknown region.
        """
        return np.isin(np.asarray(labels), self.region_values(region_key))

    # --- contiguous classes -----------------------------------------------------------------

    @property
    def to_contiguous(self) -> dict[int, int]:
        """Label value -> network class index 0..num_classes-1 (BraTS 2021: 4 -> 3)."""
        return {value: index for index, value in enumerate(self.values)}

    @property
    def from_contiguous(self) -> dict[int, int]:
        """Network class index -> label value (BraTS 2021: 3 -> 4)."""
        return dict(enumerate(self.values))

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """A label map in this scheme's values as contiguous class indices (same dtype).

        Raises:
            ConfigError: the map holds values not in the scheme (they are named).
        """
        return _apply(labels, self.to_contiguous, f"label scheme '{self.key}'")

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """Contiguous class indices (e.g. an argmax) as this scheme's values (same dtype).

        Raises:
            ConfigError: an index is not in 0..num_classes-1.
        """
        return _apply(indices, self.from_contiguous, f"class indices of '{self.key}' (0..{self.num_classes - 1})")

    # --- terminology ------------------------------------------------------------------------

    def slicer_terminology(self, value: int) -> str:
        """3D Slicer terminology entry string of a label, for a segment's ``TerminologyEntry`` tag.

        Format: ``context~category~type~typeModifier~anatomicContext~region~regionModifier`` with
        each code as ``SCT^value^meaning`` and ``^^`` for an empty one, e.g.
        ``Segmentation category and type - 3D Slicer General Anatomy list~SCT^49755003^Morphologically
        Altered Structure~SCT^79654002^Edema~^^~Anatomic codes - DICOM master list~SCT^12738006^Brain~^^``.

        Raises:
            ConfigError: the scheme has no such value.
        """
        label = self.label(value)
        in_slicer_list = (label.category.value, label.type.value) in _IN_SLICER_GENERAL_ANATOMY
        context = SLICER_GENERAL_ANATOMY if in_slicer_list else DICOM_MASTER_LIST
        region = "^^" if label.anatomic_region is None else str(label.anatomic_region)
        return "~".join((context, str(label.category), str(label.type), "^^", ANATOMIC_CONTEXT, region, "^^"))

    # --- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for a bundle's ``magms.json``; :meth:`from_dict` gives an equal scheme back."""
        return {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "labels": [label.to_dict() for label in self.labels],
            "regions": [region.to_dict() for region in self.regions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelScheme:
        """The inverse of :meth:`to_dict`.

        Raises:
            ConfigError: unknown or missing key (named), wrong type, or an inconsistent scheme.
        """
        _check_keys(data, "label scheme", required=("key", "name", "labels"), optional=("description", "regions"))
        where = f"label scheme '{data['key']}'"
        labels = data["labels"]
        regions = data.get("regions", [])
        if not isinstance(labels, (list, tuple)) or not isinstance(regions, (list, tuple)):
            raise ConfigError(f"{where}: 'labels' and 'regions' must be lists")
        return cls(
            key=str(data["key"]),
            name=str(data["name"]),
            labels=tuple(Label.from_dict(lab, f"{where} label #{i}") for i, lab in enumerate(labels)),
            regions=tuple(Region.from_dict(reg, f"{where} region #{i}") for i, reg in enumerate(regions)),
            description=str(data.get("description", "")),
        )


def _check_keys(data: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")


def _listing(values: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _apply(array: np.ndarray, mapping: Mapping[int, int], what: str) -> np.ndarray:
    """Map integer values through a lookup table; values outside ``mapping`` raise, named."""
    arr = np.asarray(array)
    if arr.dtype.kind == "b":
        index = arr.astype(np.uint8)
    elif arr.dtype.kind in "iu":
        index = arr
    elif arr.dtype.kind == "f":
        # label maps are often stored as float (OTMultiClass, resampled masks): accept whole numbers
        finite = np.isfinite(arr)
        if not finite.all() or not np.array_equal(arr, np.round(arr)):
            bad = np.unique(arr[~finite | (arr != np.round(arr))])
            raise ConfigError(f"{what}: label values must be whole numbers, got {_listing(bad.tolist())}")
        index = arr.astype(np.int64)
    else:
        raise TypeError(f"label map must be an integer, float or bool array, got dtype {arr.dtype}")
    size = max(mapping) + 1
    table = np.full(size, -1, dtype=np.int64)
    for src, dst in mapping.items():
        table[src] = dst
    inside = (index >= 0) & (index < size)
    mapped = np.full(index.shape, -1, dtype=np.int64)
    mapped[inside] = table[index[inside]]
    unknown = mapped < 0
    if unknown.any():
        bad = np.unique(index[unknown])
        raise ConfigError(f"{what}: value(s) {_listing(bad.tolist())} not in {_listing(sorted(mapping))}")
    return mapped.astype(arr.dtype, copy=False)


# --- the schemes ------------------------------------------------------------------------------

# Component key -> (default name, colour, category, type, anatomic region). One place, so the
# same tissue has the same colour and codes in every scheme.
_COMPONENTS: dict[str, tuple[str, tuple[int, int, int], Code, Code, Code | None]] = {
    "background": ("Background", (0, 0, 0), TISSUE, TISSUE, None),
    "necrosis": ("Necrosis", (214, 39, 40), ALTERED, NECROSIS, BRAIN),
    "necrotic_core": ("Necrotic tumour core", (227, 74, 51), ALTERED, NECROSIS, BRAIN),
    "edema": ("Edema", (44, 160, 44), ALTERED, EDEMA, BRAIN),
    "non_enhancing": ("Non-enhancing tumour", (31, 119, 180), ALTERED, NEOPLASM, BRAIN),
    "enhancing": ("Enhancing tumour", (255, 215, 0), ALTERED, NEOPLASM_PRIMARY, BRAIN),
    "csf": ("CSF", (85, 188, 255), ANATOMICAL, CSF_SPACE, None),
    "grey_matter": ("Grey matter", (200, 200, 235), ANATOMICAL, GREY_MATTER, None),
    "white_matter": ("White matter", (250, 250, 210), ANATOMICAL, WHITE_MATTER, None),
}
_PARTS = {"necrotic_core": ("necrosis", "non_enhancing")}


def _label(value: int, key: str, name: str | None = None) -> Label:
    default, color, category, kind, region = _COMPONENTS[key]
    return Label(value, key, name or default, color, category, kind, _PARTS.get(key, ()), region)


SCHEMES: dict[str, LabelScheme] = {
    scheme.key: scheme
    for scheme in (
        LabelScheme(
            "brats2013",
            "BraTS 2013",
            (
                _label(0, "background"),
                _label(1, "necrosis"),
                _label(2, "edema"),
                _label(3, "non_enhancing"),
                _label(4, "enhancing"),
            ),
            TUMOUR_REGIONS,
            "BraTS 2012-2013 glioma labels (Menze et al., IEEE TMI 2015), e.g. OTMultiClass.nii.gz.",
        ),
        LabelScheme(
            "msd_task01",
            "MSD Task01 BrainTumour",
            (
                _label(0, "background"),
                _label(1, "edema"),
                _label(2, "necrotic_core", "Non-enhancing tumour"),
                _label(3, "enhancing"),
            ),
            TUMOUR_REGIONS,
            "Medical Segmentation Decathlon Task01: label 2 'non-enhancing tumour' is necrosis and "
            "non-enhancing tumour together (Antonelli et al., Nat Commun 2022).",
        ),
        LabelScheme(
            "brats2021",
            "BraTS 2017-2021",
            (
                _label(0, "background"),
                _label(1, "necrotic_core", "Necrotic tumour core (NCR)"),
                _label(2, "edema", "Peritumoral edema (ED)"),
                _label(4, "enhancing", "Enhancing tumour (ET)"),
            ),
            TUMOUR_REGIONS,
            "BraTS 2017-2021 glioma labels (Baid et al. 2021); value 3 is unused.",
        ),
        LabelScheme(
            "brats2023",
            "BraTS 2023+",
            (
                _label(0, "background"),
                _label(1, "necrotic_core", "Necrotic tumour core (NCR)"),
                _label(2, "edema", "Surrounding non-enhancing FLAIR hyperintensity (SNFH)"),
                _label(3, "enhancing", "Enhancing tumour (ET)"),
            ),
            TUMOUR_REGIONS,
            "BraTS 2023 and later (GLI, MET, MEN, PED, SSA): enhancing tumour is 3.",
        ),
        LabelScheme(
            "brain_tissue",
            "Brain tissue",
            (
                _label(0, "background"),
                _label(1, "csf"),
                _label(2, "grey_matter"),
                _label(3, "white_matter"),
            ),
            (),
            "Background, CSF, grey and white matter (iSEG-like; SPM tissue priors by argmax).",
        ),
    )
}


def get_scheme(key: str | LabelScheme) -> LabelScheme:
    """The registered scheme called ``key`` (a scheme passes through unchanged).

    Raises:
        ConfigError: unknown key; the message lists the known ones.
    """
    if isinstance(key, LabelScheme):
        return key
    try:
        return SCHEMES[key]
    except KeyError:
        raise ConfigError(f"unknown label scheme {key!r}: known schemes are {', '.join(SCHEMES)}") from None


def label_map(src: str | LabelScheme, dst: str | LabelScheme) -> dict[int, int]:
    """Value map from one scheme to another, derived from the labels' components.

    Each source label goes to the destination label with the same key, else to the one whose
    components contain all of its own (brats2013 necrosis and non-enhancing -> msd_task01
    necrotic_core).

    Returns:
        source value -> destination value, for every source value.

    Raises:
        ConfigError: unknown scheme, or a source label the destination cannot represent (it has no
            label for it, or splits it, as brats2013 splits msd_task01's necrotic core).
    """
    source, target = get_scheme(src), get_scheme(dst)
    mapping: dict[int, int] = {}
    for label in source.labels:
        same = [lab for lab in target.labels if lab.key == label.key]
        covering = same or [lab for lab in target.labels if set(label.components) <= set(lab.components)]
        if len(covering) == 1:
            mapping[label.value] = covering[0].value
            continue
        pieces = [lab for lab in target.labels if set(label.components) & set(lab.components)]
        why = (
            f"{target.key} splits it into " + " and ".join(f"{lab.value} '{lab.key}'" for lab in pieces)
            if pieces
            else f"{target.key} has no label for it"
        )
        raise ConfigError(
            f"cannot map label scheme {source.key} to {target.key}: "
            f"label {label.value} '{label.key}' ({label.name}) cannot be represented; {why}"
        )
    return mapping


def map_labels(array: np.ndarray, src: str | LabelScheme, dst: str | LabelScheme) -> np.ndarray:
    """Rewrite a label map from scheme ``src`` to scheme ``dst`` with a lookup table.

    Args:
        array: label map of any shape; integer, or float holding whole numbers.
        src: source scheme (key or scheme).
        dst: destination scheme.

    Returns:
        the mapped array, same shape and dtype.

    Raises:
        ConfigError: the pair cannot be mapped (see :func:`label_map`), or ``array`` holds values
            not in ``src`` (they are named).
    """
    source = get_scheme(src)
    mapping = label_map(source, dst)
    return _apply(array, mapping, f"label map in scheme '{source.key}'")
