"""The scene's volumes as model inputs: listing, slot guesses, checks, writing. MRML only, no Qt.

Both modules map volumes to a model's slots (the Segmenter for one case, Training for each scene
case), so both use these functions. The slot rules and the overlap rule are the core's
(:mod:`magms.modalities`, :mod:`magms.data.geometry`, :data:`magms.protocol.MIN_OVERLAP`), so a
mapping that passes here is one that ``magms segment`` and ``magms train`` accept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import slicer

from magms.data.geometry import box_overlap_fraction
from magms.errors import ConfigError
from magms.modalities import contested_claims, guess_slot
from magms.protocol import MIN_OVERLAP

__all__ = [
    "SERIES_DESCRIPTION_ATTRIBUTE",
    "ROLE_ATTRIBUTE",
    "VolumeGuess",
    "scalarVolumes",
    "seriesDescriptionAttribute",
    "guessMapping",
    "overlapFraction",
    "checkMapping",
    "writeVolumes",
    "ensureSegmentationConverters",
    "NOT_IMAGE_VOLUME_TYPES",
    "notAnImage",
]

SERIES_DESCRIPTION_ATTRIBUTE = "DICOM.SeriesDescription"
#: Set on the nodes MAGMS makes that are not images (the disagreement map): never an input.
ROLE_ATTRIBUTE = "MAGMS.role"
#: Volume classes that derive from ``vtkMRMLScalarVolumeNode`` but are not one MRI sequence (``Libs/MRML/Core``
#: at v5.8.1 and v5.10.0: vector, diffusion-tensor and streaming volumes derive from ``vtkMRMLTensorVolumeNode``,
#: DWI from the scalar volume; MultiVolumeExplorer's ``vtkMRMLMultiVolumeNode`` holds a time series).
#: The selectors hide them (``qMRMLNodeComboBox::hideChildNodeTypes``) and :func:`checkMapping` refuses them.
NOT_IMAGE_VOLUME_TYPES = ("vtkMRMLLabelMapVolumeNode", "vtkMRMLTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode",
                          "vtkMRMLMultiVolumeNode")
_KINDS = {"vtkMRMLLabelMapVolumeNode": "a label map", "vtkMRMLVectorVolumeNode": "a vector (e.g. colour) volume",
          "vtkMRMLDiffusionTensorVolumeNode": "a diffusion tensor volume", "vtkMRMLTensorVolumeNode": "a tensor volume",
          "vtkMRMLDiffusionWeightedVolumeNode": "a diffusion-weighted (DWI) volume",
          "vtkMRMLMultiVolumeNode": "a multi-volume (time series)"}


@dataclasses.dataclass(frozen=True)
class VolumeGuess:
    """What the guess made of one volume: the slot (None: left for the user) and why."""

    nodeID: str
    name: str
    seriesDescription: str
    slot: str | None
    reason: str


def notAnImage(node: slicer.vtkMRMLScalarVolumeNode) -> str:
    """Why ``node`` is not one MRI sequence a model can take ("" when it is): a label map, a vector, tensor,
    DWI or multi-volume node, a map MAGMS made (:data:`ROLE_ATTRIBUTE`), or image data of more than one
    component per voxel."""
    kind = next((text for cls, text in _KINDS.items() if node.IsA(cls)), None)
    if node.GetAttribute(ROLE_ATTRIBUTE):
        kind = f"a {node.GetAttribute(ROLE_ATTRIBUTE)} map MAGMS made"
    image = node.GetImageData()
    if kind is None and image is not None and image.GetNumberOfScalarComponents() != 1:
        kind = f"an image of {image.GetNumberOfScalarComponents()} components per voxel"
    if kind is None:
        return ""
    return f"volume '{node.GetName()}' is {kind}, not one MRI sequence: MAGMS reads single-component scalar volumes"


def scalarVolumes(scene: slicer.vtkMRMLScene) -> list[slicer.vtkMRMLScalarVolumeNode]:
    """The scene's single-component scalar volumes with image data, in scene order: no label maps, vector,
    tensor, DWI or multi-volumes, no map MAGMS made, and none hidden from editors (the panels' selectors do
    not list those: ``qMRMLSortFilterProxyModel`` filters ``HideFromEditors``), so that no guess maps a
    volume the user cannot see."""
    nodes = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.GetImageData() is None or node.GetHideFromEditors() or notAnImage(node):
            continue
        nodes.append(node)
    return nodes


def seriesDescriptionAttribute(node: slicer.vtkMRMLScalarVolumeNode) -> str:
    """The DICOM series description kept on the node, if any (the widget adds the DICOM database's)."""
    return node.GetAttribute(SERIES_DESCRIPTION_ATTRIBUTE) or ""


def guessMapping(
    scene: slicer.vtkMRMLScene,
    slots: Sequence[str],
    describe: Callable[[slicer.vtkMRMLScalarVolumeNode], str] = seriesDescriptionAttribute,
    nodes: Sequence[slicer.vtkMRMLScalarVolumeNode] | None = None,
) -> tuple[dict[str, str | None], list[VolumeGuess]]:
    """Guess each volume's slot from its DICOM series description, else from its name.

    Two volumes that look like the same slot are both left unassigned, so the user chooses.

    Args:
        nodes: the volumes to consider (default: every scalar volume of the scene).
    Returns:
        slot -> node ID (None: no volume), and one :class:`VolumeGuess` per volume.
    """
    guesses: dict[str, VolumeGuess] = {}
    for node in scalarVolumes(scene) if nodes is None else nodes:
        description = describe(node) or ""
        guess = guess_slot(description, slots) if description else None
        if guess is None or guess.slot is None:
            guess = guess_slot(node.GetName(), slots)
        guesses[node.GetID()] = VolumeGuess(node.GetID(), node.GetName(), description, guess.slot, guess.reason)
    for nodeID, claimants in contested_claims({i: g.slot for i, g in guesses.items()}).items():
        names = " and ".join(repr(guesses[c].name) for c in claimants)
        guess = guesses[nodeID]
        guesses[nodeID] = dataclasses.replace(guess, slot=None, reason=f"{names} both look like {guess.slot}: choose one")
    mapping: dict[str, str | None] = {slot: None for slot in slots}
    for guess in guesses.values():
        if guess.slot is not None:
            mapping[guess.slot] = guess.nodeID
    return mapping, list(guesses.values())


def _rasBox(node: slicer.vtkMRMLScalarVolumeNode) -> tuple[list[float], list[float]]:
    bounds = [0.0] * 6
    node.GetRASBounds(bounds)
    return bounds[0::2], bounds[1::2]


def overlapFraction(reference: slicer.vtkMRMLScalarVolumeNode, other: slicer.vtkMRMLScalarVolumeNode) -> float:
    """Fraction of ``other``'s RAS box inside ``reference``'s."""
    return box_overlap_fraction(*_rasBox(reference), *_rasBox(other))


def _volumeProblem(node, slot: str, modelSlots: Sequence[str]) -> str | None:
    name = node.GetName()
    if slot not in modelSlots:
        return f"volume '{name}' is mapped to slot {slot}, which the model does not have (its slots: {', '.join(modelSlots)})"
    if node.GetImageData() is None:
        return f"volume '{name}' has no image data"
    problem = notAnImage(node)
    if problem:
        return problem
    if node.GetParentTransformNode() is not None:
        return f"volume '{name}' is under transform '{node.GetParentTransformNode().GetName()}': harden or remove it first"
    return None


def _overlapProblems(pairs: Sequence[tuple[str, slicer.vtkMRMLScalarVolumeNode]]) -> list[str]:
    if not pairs:
        return []
    referenceSlot, reference = pairs[0]
    problems = []
    for slot, node in pairs[1:]:
        fraction = overlapFraction(reference, node)
        if fraction < MIN_OVERLAP:
            problems.append(
                f"volume '{node.GetName()}' ({slot}) covers only {fraction:.0%} of the space of '{reference.GetName()}' "
                f"({referenceSlot}): are they the same patient and session?"
            )
    return problems


def checkMapping(scene: slicer.vtkMRMLScene, mapping: Mapping[str, str | None],
                 modelSlots: Sequence[str]) -> list[tuple[str, slicer.vtkMRMLScalarVolumeNode]]:
    """Check a slot -> node ID mapping before anything runs.

    Returns:
        (slot, node) pairs in the model's slot order (the first is the reference).
    Raises:
        ConfigError: every problem at once, each naming the volume: no slot mapped, a slot the
            model lacks, a volume used for two slots, a missing or empty volume, a label map, a
            volume under a transform, volumes that do not overlap in space.
    """
    problems: list[str] = []
    used: dict[str, list[str]] = {}
    pairs: list[tuple[str, slicer.vtkMRMLScalarVolumeNode]] = []
    for slot, nodeID in mapping.items():
        if not nodeID:
            continue
        node = scene.GetNodeByID(nodeID)
        if node is None:
            problems.append(f"slot {slot}: volume {nodeID} is no longer in the scene")
            continue
        used.setdefault(nodeID, []).append(slot)
        problem = _volumeProblem(node, slot, modelSlots)
        if problem is None:
            pairs.append((slot, node))
        else:
            problems.append(problem)
    for nodeID, slots in used.items():
        if len(slots) > 1:
            problems.append(f"volume '{scene.GetNodeByID(nodeID).GetName()}' is mapped to {len(slots)} slots "
                            f"({', '.join(slots)}): use each volume once")
    if not used:
        problems.append(f"no volume is mapped: choose a volume for at least one of the model's slots ({', '.join(modelSlots)})")
    pairs.sort(key=lambda p: list(modelSlots).index(p[0]))
    pairs = [p for i, p in enumerate(pairs) if p[1] not in [q[1] for q in pairs[:i]]]
    problems += _overlapProblems(pairs)
    if problems:
        raise ConfigError("; ".join(problems))
    return pairs


def writeVolumes(pairs: Sequence[tuple[str, slicer.vtkMRMLScalarVolumeNode]], folder: Path) -> dict[str, Path]:
    """Write each mapped volume to ``folder/<slot>.nrrd`` with storage nodes kept out of the scene."""
    paths = {}
    for slot, node in pairs:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        path = folder / f"{slot}.nrrd"
        storage.SetFileName(str(path))
        storage.SetUseCompression(False)  # a temporary file: speed over size
        if not storage.WriteData(node) or not path.is_file():
            raise ConfigError(f"volume '{node.GetName()}' could not be written to {path}")
        paths[slot] = path
    return paths


def ensureSegmentationConverters() -> None:
    """Register the segmentation conversion rules if nobody has (the Slicer application does at
    start-up; plain MRML from ``slicer-core`` does not, and then cannot make empty segments)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    for rule in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        factory.RegisterConverterRule(getattr(slicer, rule)())
