"""Radiotherapy targets grown from a segmentation by a named glioma protocol: GTV, CTV and PTV.

A protocol (:data:`PROTOCOLS`) says which of the scheme's regions form each gross tumour volume and
by how many millimetres each clinical and planning target volume grows from the one before:

* ``estro-eano-2023``: glioblastoma, ESTRO-EANO guideline (Niyazi et al., Radiother Oncol 184:109663,
  2023): GTV = the enhancing tumour with the necrotic / non-enhancing core (the tumour core; a
  resection cavity where the scheme has one), CTV = GTV + 15 mm, PTV = CTV + 3 mm ("usually no
  greater than 3 mm");
* ``rtog-nrg``: the RTOG/NRG two-phase convention (RTOG 0525/0825, NRG BN001): GTV1 = the T2/FLAIR
  abnormality (whole tumour), CTV1 = GTV1 + 20 mm; GTV2 = the tumour core, CTV2 = GTV2 + 20 mm; PTVs
  + 3 mm. The protocols' 25 mm CTV1 where there is no oedema is not applied by itself: give it as a
  margin;
* ``lgg``: lower-grade glioma (EORTC 22033 / RTOG 9802 practice): GTV = the T2/FLAIR abnormality,
  CTV = GTV + 15 mm (10-15 mm), PTV = CTV + 3 mm.

Every margin can be changed by the target's name (:meth:`TargetProtocol.with_margins`). Margins are
Euclidean distances in millimetres in physical space, from the exact distance map of the source
target on the grid's own spacing, so anisotropic voxels are handled. A CTV keeps to the brain mask
and, where one is given, stops at a barrier mask (falx, tentorium): it is the grown volume inside
the brain minus the barrier, of which only the parts connected to its GTV are kept (tissue behind a
barrier, reached only through it, is left out), and it always contains its GTV. A PTV is not clipped.

Names follow AAPM TG-263 (type first, a number per phase: ``GTV``, ``CTV1``, ``PTV2``; the brain is
``Brain``); the DICOM writers give each target its RT ROI Interpreted Type, its generation algorithm
(the GTV and the brain AUTOMATIC, the grown targets SEMIAUTOMATIC with the margin in the description)
and the DICOM CID 9534 code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from magms.data.preprocessing import foreground_mask
from magms.errors import ConfigError, ImageError
from magms.labels import LabelScheme
from magms.labels.structures import Structure
from magms.labels.terminology import ANATOMICAL, BRAIN, Code
from magms.protocol import TARGET_PROTOCOLS

if TYPE_CHECKING:  # imported where used: the Slicer panel lists the protocols without SimpleITK
    import SimpleITK as sitk

__all__ = [
    "PROTOCOLS",
    "TargetSpec",
    "TargetProtocol",
    "Target",
    "get_protocol",
    "parse_margins",
    "grow",
    "brain_mask",
    "grow_targets",
    "target_structures",
    "TargetRequest",
    "TARGETS_FILE",
    "read_mask_on",
    "case_brain",
    "case_targets",
    "volume_ml",
    "write_targets",
    "STRUCTURE_TYPES",
    "planning_structure",
    "read_targets",
]

#: The key of a resection-cavity label, joined to a GTV where a scheme has one.
CAVITY = "resection_cavity"
#: DICOM CID 7150 category and CID 9534 types of the targets.
SPATIAL = Code("SCT", "309825002", "Spatial and Relational Concept")
TARGET_CODES = {"GTV": Code("SCT", "228791009", "GTV"), "CTV": Code("SCT", "228792002", "CTV"), "PTV": Code("SCT", "228793007", "PTV")}
_COLOURS = {"GTV": (255, 0, 0), "CTV": (255, 170, 0), "PTV": (0, 150, 255)}
_BRAIN_COLOUR = (250, 220, 180)
#: The summary ``--targets-dir`` writes beside the masks.
TARGETS_FILE = "targets.json"


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """One target of a protocol.

    Attributes:
        name: the TG-263 name (``GTV``, ``CTV1``).
        kind: ``GTV``, ``CTV`` or ``PTV``: the RT ROI Interpreted Type.
        source: a GTV: the scheme's region or label keys it unites (those the scheme lacks are
            skipped, :data:`CAVITY` among them); a CTV or PTV: the name of the target it grows from.
        margin_mm: how far it grows from its source (0 for a GTV).
    """

    name: str
    kind: Literal["GTV", "CTV", "PTV"]
    source: tuple[str, ...]
    margin_mm: float = 0.0


@dataclasses.dataclass(frozen=True)
class TargetProtocol:
    """A named set of targets, in the order they are grown (each source before its target)."""

    key: str
    name: str
    reference: str
    targets: tuple[TargetSpec, ...]

    def with_margins(self, margins: Mapping[str, float]) -> TargetProtocol:
        """The protocol with the given CTV/PTV margins (mm, by target name) instead of its own.

        Raises:
            ConfigError: a name that is no grown target of the protocol, or a negative margin.
        """
        grown = {t.name for t in self.targets if t.kind != "GTV"}
        for name, value in margins.items():
            if name not in grown:
                raise ConfigError(f"--margin {name}: protocol '{self.key}' grows {', '.join(sorted(grown))}, not {name!r}")
            if not 0 <= value <= 100 or math.isnan(value):
                raise ConfigError(f"--margin {name}={value}: a margin is 0 to 100 mm")
        return dataclasses.replace(
            self, targets=tuple(dataclasses.replace(t, margin_mm=float(margins.get(t.name, t.margin_mm))) for t in self.targets)
        )


def _single_phase(core: tuple[str, ...], ctv_mm: float) -> tuple[TargetSpec, ...]:
    return (TargetSpec("GTV", "GTV", (*core, CAVITY)), TargetSpec("CTV", "CTV", ("GTV",), ctv_mm), TargetSpec("PTV", "PTV", ("CTV",), 3.0))


PROTOCOLS: dict[str, TargetProtocol] = {
    p.key: p
    for p in (
        TargetProtocol(
            "estro-eano-2023", "ESTRO-EANO 2023 glioblastoma",
            "Niyazi M et al. ESTRO-EANO guideline on target delineation and radiotherapy details for glioblastoma. "
            "Radiother Oncol 2023;184:109663",
            _single_phase(("tc",), 15.0),
        ),
        TargetProtocol(
            "rtog-nrg", "RTOG/NRG two-phase glioblastoma",
            "RTOG 0525 / RTOG 0825 / NRG BN001 protocols: GTV1 T2/FLAIR abnormality + 2 cm, GTV2 enhancing tumour + 2 cm",
            (
                TargetSpec("GTV1", "GTV", ("wt", CAVITY)), TargetSpec("CTV1", "CTV", ("GTV1",), 20.0),
                TargetSpec("PTV1", "PTV", ("CTV1",), 3.0),
                TargetSpec("GTV2", "GTV", ("tc", CAVITY)), TargetSpec("CTV2", "CTV", ("GTV2",), 20.0),
                TargetSpec("PTV2", "PTV", ("CTV2",), 3.0),
            ),
        ),
        TargetProtocol(
            "lgg", "Lower-grade glioma",
            "EORTC 22033-26033 / RTOG 9802 practice: GTV the T2/FLAIR abnormality, CTV GTV + 10-15 mm",
            _single_phase(("wt",), 15.0),
        ),
    )
}


assert tuple(PROTOCOLS) == TARGET_PROTOCOLS, "magms.protocol.TARGET_PROTOCOLS names the protocols for the options"


def get_protocol(key: str) -> TargetProtocol:
    """The protocol of :data:`PROTOCOLS` called ``key``.

    Raises:
        ConfigError: no such protocol (the known ones named).
    """
    try:
        return PROTOCOLS[key]
    except KeyError:
        raise ConfigError(f"unknown target protocol {key!r}; known: {', '.join(PROTOCOLS)}") from None


def parse_margins(items: Sequence[str]) -> dict[str, float]:
    """``["CTV=12", "PTV=5"]`` as ``{"CTV": 12.0, "PTV": 5.0}``.

    Raises:
        ConfigError: an item that is not NAME=MILLIMETRES.
    """
    margins = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            margins[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"--margin {item}: give TARGET=MILLIMETRES, e.g. --margin CTV=12")
    return margins


@dataclasses.dataclass(frozen=True)
class Target:
    """A grown target: its protocol entry, its voxels and how it was made.

    Attributes:
        spec: the protocol's entry (with the margin used).
        mask: (z, y, x) bool on the segmentation's grid.
        description: what it is, e.g. ``CTV = GTV + 15 mm, within the brain``.
    """

    spec: TargetSpec
    mask: np.ndarray = dataclasses.field(repr=False, compare=False)
    description: str = ""


def grow(mask: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float) -> np.ndarray:
    """The voxels whose centres lie within ``margin_mm`` of a voxel centre of ``mask`` (exact Euclidean
    distance in millimetres on the grid's spacing), ``mask`` included.

    Args:
        mask: (z, y, x) bool.
        spacing_zyx: voxel size in mm along those axes.
        margin_mm: the margin; 0 returns a copy.
    """
    import SimpleITK as sitk

    mask = np.asarray(mask, dtype=bool)
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    reach = [int(math.ceil(margin_mm / s)) + 1 for s in spacing_zyx]
    found = np.nonzero(mask)
    box = tuple(slice(max(0, int(i.min()) - r), min(n, int(i.max()) + r + 1)) for i, r, n in zip(found, reach, mask.shape))
    image = sitk.GetImageFromArray(mask[box].astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    out = np.zeros_like(mask)
    out[box] = sitk.GetArrayViewFromImage(distance) <= margin_mm + 1e-6
    return out | mask


def brain_mask(images: Sequence[sitk.Image]) -> np.ndarray:
    """The brain of skull-stripped images on one grid: the voxels above any image's background fill
    value (:func:`~magms.data.preprocessing.foreground_mask`), holes filled. (z, y, x) bool."""
    import SimpleITK as sitk

    stacked = np.stack([sitk.GetArrayViewFromImage(i).astype(np.float32) for i in images])
    union = foreground_mask(stacked).any(axis=0)
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(union.astype(np.uint8)))
    return sitk.GetArrayFromImage(filled).astype(bool)


def _connected_to(allowed: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The parts of ``allowed`` (face-connected) that touch ``seed``."""
    import SimpleITK as sitk

    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(allowed.astype(np.uint8))))
    keep = np.unique(components[seed & allowed])
    return np.isin(components, keep[keep > 0])


def _gtv(labels: np.ndarray, scheme: LabelScheme, spec: TargetSpec, protocol: str) -> tuple[np.ndarray, str]:
    regions = {r.key: scheme.region_values(r.key) for r in scheme.regions}
    values: set[int] = set()
    used = []
    for key in spec.source:
        if key in regions:
            values |= set(regions[key])
            used.append(scheme.region(key).name)
        elif key in scheme.keys:
            values.add(scheme.by_key(key).value)
            used.append(scheme.by_key(key).name)
    if not used:
        raise ConfigError(
            f"target protocol '{protocol}': {spec.name} is made of {' or '.join(k for k in spec.source if k != CAVITY)}, "
            f"which label scheme '{scheme.key}' does not have"
        )
    return np.isin(labels, sorted(values)), f"{spec.name} = {' + '.join(used)} (automatic)"


def grow_targets(labels: np.ndarray, grid: sitk.Image, scheme: LabelScheme, protocol: TargetProtocol, brain: np.ndarray,
                 barrier: np.ndarray | None = None) -> list[Target]:
    """Grow the protocol's targets from ``labels``.

    Args:
        labels: (z, y, x) label values of ``scheme`` on ``grid``.
        grid: the image the labels are on (its spacing sets the millimetres).
        scheme: the label scheme.
        protocol: the protocol, with the margins to use.
        brain: (z, y, x) bool brain mask on ``grid``: no CTV voxel lies outside it.
        barrier: (z, y, x) bool, or None: voxels a CTV does not enter nor cross (falx, tentorium).
    Returns:
        The targets in the protocol's order.
    Raises:
        ConfigError: a GTV the scheme cannot make, or masks off the labels' grid.
    """
    for name, mask in (("brain mask", brain), ("barrier mask", barrier)):
        if mask is not None and mask.shape != labels.shape:
            raise ConfigError(f"the {name} is {mask.shape[::-1]} voxels, the segmentation {labels.shape[::-1]}: not one grid")
    spacing = grid.GetSpacing()[::-1]
    allowed = brain if barrier is None else brain & ~barrier
    made: dict[str, Target] = {}
    for spec in protocol.targets:
        if spec.kind == "GTV":
            mask, description = _gtv(labels, scheme, spec, protocol.key)
        else:
            source = made[spec.source[0]]
            mask = grow(source.mask, spacing, spec.margin_mm)
            description = f"{spec.name} = {source.spec.name} + {spec.margin_mm:g} mm"
            if spec.kind == "CTV":
                mask = _connected_to(mask & allowed, source.mask) | source.mask
                description += ", within the brain" + ("" if barrier is None else " and not across the barrier")
        made[spec.name] = Target(spec, mask, description)
    return list(made.values())


#: The RT ROI Interpreted Types a target structure may have.
STRUCTURE_TYPES = ("GTV", "CTV", "PTV", "ORGAN")


def planning_structure(name: str, interpreted_type: str, voxels: np.ndarray, description: str = "",
                       algorithm: str | None = None) -> Structure:
    """A target (``GTV``, ``CTV``, ``PTV``) or the brain (``ORGAN``) as an exported structure: its colour, codes and
    generation algorithm by its type (a GTV and the brain ``AUTOMATIC``, a grown target ``SEMIAUTOMATIC``).

    Raises:
        ConfigError: another type.
    """
    if interpreted_type not in STRUCTURE_TYPES:
        raise ConfigError(f"structure {name!r}: type {interpreted_type!r} is none of {', '.join(STRUCTURE_TYPES)}")
    automatic = interpreted_type in ("GTV", "ORGAN")
    algorithm = algorithm or ("AUTOMATIC" if automatic else "SEMIAUTOMATIC")
    if algorithm not in ("AUTOMATIC", "SEMIAUTOMATIC"):
        raise ConfigError(f"structure {name!r}: generation algorithm {algorithm!r} is neither AUTOMATIC nor SEMIAUTOMATIC")
    if interpreted_type == "ORGAN":
        return Structure(name, "organ", name, _BRAIN_COLOUR, ANATOMICAL, BRAIN, None, (), interpreted_type="ORGAN",
                         algorithm=algorithm, description=description, voxels=voxels)
    return Structure(name, "target", name, _COLOURS[interpreted_type], SPATIAL, TARGET_CODES[interpreted_type], BRAIN, (),
                     interpreted_type=interpreted_type, algorithm=algorithm, description=description, voxels=voxels)


def target_structures(targets: Sequence[Target], brain: np.ndarray | None = None,
                      brain_description: str = "Brain mask the CTVs keep to") -> tuple[Structure, ...]:
    """The targets (and the brain, when given) as exported structures: TG-263 names, RT ROI Interpreted
    Types, generation algorithms, CID 9534 codes, their voxels."""
    found = [planning_structure(t.spec.name, t.spec.kind, t.mask, t.description) for t in targets]
    if brain is not None:
        found.append(planning_structure("Brain", "ORGAN", brain, brain_description[:64]))
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# one case: the brain and barrier masks, the targets, their files


@dataclasses.dataclass(frozen=True)
class TargetRequest:
    """What ``--targets`` asks for.

    Attributes:
        protocol: the protocol, with the margins to use.
        brain_file: a brain mask file (any grid: resampled nearest-neighbour), or None: the brain of the
            preprocessed or skull-stripped inputs.
        barrier_file: a barrier mask file (falx, tentorium), or None.
        folder: where to write one mask per target (``--targets-dir``), or None.
    """

    protocol: TargetProtocol
    brain_file: Path | None = None
    barrier_file: Path | None = None
    folder: Path | None = None


def read_mask_on(path: str | os.PathLike[str], grid: sitk.Image, what: str, allow_empty: bool = False) -> np.ndarray:
    """A mask file on ``grid`` (nearest-neighbour where its own grid differs): its voxels above 0.5, so a
    probability or float mask (0.99999997 for 1) reads as it means. (z, y, x) bool.

    Raises:
        ImageError: unreadable, not 3-D, or nothing of it on ``grid`` (named with ``what``, e.g. ``--brain-mask``).
    """
    import SimpleITK as sitk

    from magms.data.io import resample_like, same_grid

    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as err:
        raise ImageError(f"{what} {path}: cannot be read as an image") from err
    if image.GetDimension() != 3:
        raise ImageError(f"{what} {path}: a mask is a 3-D image")
    if not same_grid(image, grid):
        image = resample_like(image, grid, sitk.sitkNearestNeighbor)
    mask = sitk.GetArrayFromImage(image) > 0.5
    if not mask.any() and not allow_empty:
        raise ImageError(f"{what} {path}: no mask voxel lies on the segmentation's grid")
    return mask


def case_brain(images: Mapping[str, sitk.Image], names: Mapping[str, str], brain_file: Path | None = None,
               extracted: sitk.Image | None = None, extracted_source: str = "", hint: str = "") -> tuple[np.ndarray, str]:
    """The brain mask of one case on its images' grid, and where it came from: ``brain_file``; else the mask
    ``--preprocess`` extracted (``extracted``); else the images' own brain when each is skull-stripped.

    Args:
        images: slot -> image, all on one grid (the first is the reference).
        names: slot -> file name, for messages.
        hint: another way out, added to the refusal (``, or extract it with --preprocess strip``).
    Raises:
        ImageError: an image that is not skull-stripped and no mask to stand in for it (what to do said).
    """
    import SimpleITK as sitk

    from magms.data.clinical import skull_check

    reference = next(iter(images.values()))
    if brain_file is not None:
        return read_mask_on(brain_file, reference, "--brain-mask"), f"--brain-mask {Path(brain_file).name}"
    if extracted is not None:
        return sitk.GetArrayFromImage(extracted) > 0, extracted_source
    checks = {slot: skull_check(image) for slot, image in images.items()}
    unstripped = [f"{slot} ({names.get(slot, slot)}) looks {check.describe()}" for slot, check in checks.items() if not check.stripped]
    if unstripped:
        raise ImageError(
            f"--targets: a CTV keeps to the brain, and {'; '.join(unstripped)}: give the brain with --brain-mask FILE{hint}"
        )
    return brain_mask(list(images.values())), "the skull-stripped inputs"


def case_targets(labels: np.ndarray, grid: sitk.Image, scheme: LabelScheme, request: TargetRequest, brain: np.ndarray,
                 brain_source: str, barrier: np.ndarray | None = None) -> tuple[Structure, ...]:
    """The request's targets of one segmentation, and the brain, as exported structures (``barrier``: the request's
    barrier mask on ``grid``, read by the caller: it may have moved onto the planning CT)."""
    targets = grow_targets(labels, grid, scheme, request.protocol, brain, barrier)
    return target_structures(targets, brain, f"Brain ({brain_source})")


def volume_ml(structure: Structure, grid: sitk.Image) -> float:
    """A target's volume in ml."""
    return float(structure.voxels.sum()) * float(np.prod(grid.GetSpacing())) / 1000


def write_targets(found: Sequence[Structure], grid: sitk.Image, folder: Path, protocol: TargetProtocol | None,
                  overwrite: bool = False) -> list[Path]:
    """One mask file per structure (``<name>.nii.gz``, 0/1 on ``grid``) and ``targets.json`` (protocol, how each
    was made, volumes in ml) in ``folder`` (made if missing).

    Raises:
        ConfigError: a file that exists already, without ``overwrite`` (checked for all before any is written).
    """
    import SimpleITK as sitk

    from magms.files import atomic_write, atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{s.name}.nii.gz" for s in found] + [folder / TARGETS_FILE]
    existing = [p.name for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"--targets-dir {folder}: {', '.join(existing)} exist already (use --overwrite to replace them)")
    for structure, path in zip(found, paths):
        image = sitk.GetImageFromArray(structure.voxels.astype(np.uint8))
        image.CopyInformation(grid)
        atomic_write(path, lambda tmp, image=image: sitk.WriteImage(image, str(tmp), True), suffix=".nii.gz")
    summary = {
        "protocol": protocol.key if protocol else None, "protocol_name": protocol.name if protocol else None,
        "reference": protocol.reference if protocol else None,
        "structures": [{"name": s.name, "interpreted_type": s.interpreted_type, "algorithm": s.algorithm, "description": s.description,
                        "volume_ml": round(volume_ml(s, grid), 2), "file": p.name} for s, p in zip(found, paths)],
    }
    atomic_write_text(paths[-1], json.dumps(summary, indent=2) + "\n")
    return paths


def read_targets(path: str | os.PathLike[str], grid: sitk.Image) -> tuple[Structure, ...]:
    """The structures a ``targets.json`` lists (as :func:`write_targets` writes it, or the MAGMS Segmenter for its
    target segments), their masks read onto ``grid``: ``magms export --targets-from``.

    Raises:
        ConfigError: not such a file, a structure without name, type or file, or an unknown type (named).
        ImageError: a mask that cannot be read or lies off ``grid``.
    """
    source = Path(path)
    try:
        listed = json.loads(source.read_text(encoding="utf-8"))["structures"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"--targets-from {source}: not a targets.json with a 'structures' list ({err})") from err
    found = []
    for n, item in enumerate(listed):
        try:
            name, kind, file = str(item["name"]), str(item["interpreted_type"]), str(item["file"])
        except (KeyError, TypeError) as err:
            raise ConfigError(f"--targets-from {source}: structure #{n + 1} lacks {err}") from err
        voxels = read_mask_on(source.parent / file, grid, f"--targets-from {source}: {name}:", allow_empty=True)
        found.append(planning_structure(name, kind, voxels, str(item.get("description", "")), item.get("algorithm")))
    return tuple(found)
