"""Label schemes: labels, evaluation regions, and the scheme that holds them (maps between registered schemes: :mod:`magms.labels.mapping`).

A :class:`Label` names the semantic *components* it covers (``necrotic_core`` has parts
``necrosis`` and ``non_enhancing``); maps between schemes (:func:`label_map`), region masks and
contiguous class indices are derived from those components and values, never typed in twice.
The registered schemes themselves are in :mod:`magms.labels.registry`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from magms.config import _Record
from magms.errors import ConfigError
from magms.labels.terminology import Code, slicer_terminology_entry

__all__ = ["Label", "Region", "LabelScheme", "remap_values", "values_present"]


@dataclasses.dataclass(frozen=True)
class Label(_Record):
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

    _where: ClassVar[str] = "label"

    value: int
    key: str
    name: str
    color: tuple[int, int, int] = dataclasses.field(metadata={"expects": "three integers 0..255"})
    category: Code
    type: Code
    parts: tuple[str, ...] = dataclasses.field(default=(), metadata={"expects": "a list of component keys"})
    anatomic_region: Code | None = None

    def __post_init__(self) -> None:
        # accept lists (hand-written schemes) but store tuples, so labels stay hashable and equal
        object.__setattr__(self, "color", tuple(self.color))
        object.__setattr__(self, "parts", tuple(self.parts))

    @property
    def components(self) -> tuple[str, ...]:
        """The smallest component keys this label covers: its parts, or its own key."""
        return self.parts or (self.key,)


@dataclasses.dataclass(frozen=True)
class Region(_Record):
    """An evaluation region: the union of some components (BraTS whole tumour, tumour core...).

    Args:
        key: short key (``"wt"``).
        name: display name.
        components: component keys inside the region.
    """

    _where: ClassVar[str] = "region"

    key: str
    name: str
    components: tuple[str, ...] = dataclasses.field(metadata={"expects": "a list of component keys"})


@dataclasses.dataclass(frozen=True)
class LabelScheme(_Record):
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

    _where: ClassVar[str] = "label scheme"
    # bundles written so far have the description before the labels
    _key_order: ClassVar[tuple[str, ...]] = ("key", "name", "description", "labels", "regions")

    key: str
    name: str
    labels: tuple[Label, ...]
    regions: tuple[Region, ...] = ()
    description: str = ""
    _by_value: dict[int, Label] = dataclasses.field(init=False, repr=False, compare=False, hash=False)
    _by_key: dict[str, Label] = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        where = f"label scheme '{self.key}'"
        by_value, by_key = _index_labels(self.labels, where)
        if 0 not in by_value or by_value[0].key != "background":
            raise ConfigError(f"{where}: needs a background label with value 0 and key 'background'")
        _check_regions(self.regions, self.labels, where)
        object.__setattr__(self, "labels", tuple(sorted(self.labels, key=lambda lab: lab.value)))
        object.__setattr__(self, "_by_value", by_value)
        object.__setattr__(self, "_by_key", by_key)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | None = None) -> LabelScheme:
        """The inverse of :meth:`to_dict` (a bundle's ``labels``).

        Args:
            data: the scheme as JSON.
            where: how messages name it; by default ``label scheme '<key>'``.

        Raises:
            ConfigError: unknown or missing key (named), wrong type, or an inconsistent scheme.
        """
        if where is None and isinstance(data, Mapping) and isinstance(data.get("key"), str):
            # a bundle may hold any scheme: messages about its labels name it
            where = f"{cls._where} '{data['key']}'"
        return super().from_dict(data, where)

    # --- lookup -----------------------------------------------------------------------------

    @property
    def values(self) -> tuple[int, ...]:
        """Label values in ascending order, background first."""
        return tuple(label.value for label in self.labels)

    def unknown_values(self, labels: np.ndarray) -> list[int]:
        """The values of an integer label map that are not labels of this scheme, ascending."""
        return sorted(set(values_present(labels).tolist()) - set(self.values))

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

    @property
    def whole_region(self) -> Region | None:
        """The region that holds every label but the background (the BraTS whole tumour), or None."""
        foreground = {lab.value for lab in self.labels if lab.key != "background"}
        return next((r for r in self.regions if set(self.region_values(r.key)) == foreground), None)

    def region_values(self, key: str) -> tuple[int, ...]:
        """Values of the labels inside region ``key``."""
        components = set(self.region(key).components)
        return tuple(lab.value for lab in self.labels if lab.key != "background" and set(lab.components) <= components)

    def region_indices(self, key: str) -> tuple[int, ...]:
        """Class indices (positions in :attr:`values`, as the network's outputs) of the labels inside region ``key``."""
        return tuple(self.values.index(v) for v in self.region_values(key))

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
        return remap_values(labels, self.to_contiguous, f"label scheme '{self.key}'")

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """Contiguous class indices (e.g. an argmax) as this scheme's values (same dtype).

        Raises:
            ConfigError: an index is not in 0..num_classes-1.
        """
        return remap_values(indices, self.from_contiguous, f"class indices of '{self.key}' (0..{self.num_classes - 1})")

    # --- terminology ------------------------------------------------------------------------

    def slicer_terminology(self, value: int) -> str:
        """3D Slicer terminology entry string of a label, for a segment's ``TerminologyEntry`` tag.

        See :func:`~magms.labels.terminology.slicer_terminology_entry` for the format.

        Raises:
            ConfigError: the scheme has no such value.
        """
        label = self.label(value)
        return slicer_terminology_entry(label.category, label.type, label.anatomic_region)


def _index_labels(labels: Sequence[Label], where: str) -> tuple[dict[int, Label], dict[str, Label]]:
    """Labels by value and by key, refusing repeats, bad colours and a component in two labels."""
    by_value: dict[int, Label] = {}
    by_key: dict[str, Label] = {}
    owner: dict[str, str] = {}
    for label in labels:
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
                raise ConfigError(f"{where}: component '{component}' is in both '{owner[component]}' and '{label.key}'")
            owner[component] = label.key
        by_value[label.value] = label
        by_key[label.key] = label
    return by_value, by_key


def _check_regions(regions: Sequence[Region], labels: Sequence[Label], where: str) -> None:
    """Refuse a repeated region key, or a region holding only some components of a label."""
    region_keys = [r.key for r in regions]
    if len(set(region_keys)) != len(region_keys):
        raise ConfigError(f"{where}: repeated region key in {region_keys}")
    for region in regions:
        for label in labels:
            inside = set(label.components) & set(region.components)
            if inside and inside != set(label.components):
                raise ConfigError(
                    f"{where}: region '{region.key}' holds only part of label {label.value} '{label.key}' "
                    f"({', '.join(sorted(inside))} of {', '.join(label.components)})"
                )


def _listing(values: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def values_present(labels: np.ndarray) -> np.ndarray:
    """The distinct values of an integer label map, sorted (a count per value for small unsigned types:
    ten times faster than ``np.unique`` on a whole head)."""
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
        return np.flatnonzero(np.bincount(labels.ravel(), minlength=1))
    return np.unique(labels)


def remap_values(array: np.ndarray, mapping: Mapping[int, int], what: str) -> np.ndarray:
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
    if index.dtype.kind == "u" and index.dtype.itemsize <= 2:  # a lookup table over every possible value
        present = values_present(index)
        bad = sorted(set(present.tolist()) - set(mapping))
        if bad:
            raise ConfigError(f"{what}: value(s) {_listing(bad)} not in {_listing(sorted(mapping))}")
        lookup = np.zeros(int(present[-1]) + 1 if present.size else 1, dtype=arr.dtype)  # up to the largest value
        for src, dst in mapping.items():
            if src < lookup.size:
                lookup[src] = dst
        return lookup[index]
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
