"""The Segmenter's inputs and options: the slot mapping kept on the parameter node, the ``magms segment``
options of a run, what a user sees of a bundle before running, the skull-strip check of a volume.

MRML only, no Qt (tested with ``slicer-core``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import slicer

from magms.bundle import BundleInfo
from magms.commands import SegmentOptions
from magms.data.skull import SkullCheck, skull_check_array
from magms.protocol import EngineChoice

logger = logging.getLogger(__name__)


# The reference in ``magms segment`` is the first present slot in the model's order: keep that order.
SLOT_REFERENCE_ROLE = "MAGMS.slot."


def readSlotMapping(parameterNode: slicer.vtkMRMLNode, slots: Sequence[str]) -> dict[str, str | None]:
    """The slot -> volume mapping kept as node references on the parameter node (saved with the scene)."""
    return {slot: parameterNode.GetNodeReferenceID(SLOT_REFERENCE_ROLE + slot) for slot in slots}


def writeSlotMapping(parameterNode: slicer.vtkMRMLNode, mapping: Mapping[str, str | None]) -> None:
    for slot, node_id in mapping.items():
        parameterNode.SetNodeReferenceID(SLOT_REFERENCE_ROLE + slot, node_id or None)


def segmentOptions(bundle: Path, inputs: Mapping[str, Path], output: Path, engineChoice: EngineChoice = EngineChoice(),
                   preprocess: str = "none") -> SegmentOptions:
    """The ``magms segment`` options of one subset, with progress lines for the runner: ``engineChoice``
    gives ``--device``, ``--engine`` and ``--precision``; ``preprocess`` is ``--preprocess`` (``none``: the
    images as they are, ``auto``: registered and skull-stripped as they need)."""
    return SegmentOptions(model=bundle, input=tuple(f"{slot}={path}" for slot, path in inputs.items()), output=output,
                          progress="lines", overwrite=True, preprocess=preprocess, **dataclasses.asdict(engineChoice))


def compareOptions(bundle: Path, inputs: Mapping[str, Path], output: Path, compared: Path, disagreement: Path, report: Path,
                   engineChoice: EngineChoice = EngineChoice(), preprocess: str = "none") -> SegmentOptions:
    """The ``magms segment`` options of one "compare subsets" run: the fullest output to ``output``,
    every smaller subset's to ``compared/<slot+slot>.seg.nrrd``, the disagreement map and the report."""
    return dataclasses.replace(segmentOptions(bundle, inputs, output, engineChoice, preprocess), compare="subsets",
                               disagreement=disagreement, report=report, compared_outputs=compared)


def volumeSkullCheck(volume: slicer.vtkMRMLScalarVolumeNode) -> SkullCheck | None:
    """Whether ``volume`` looks skull-stripped, by the rule ``magms segment --preprocess auto`` applies
    (:func:`magms.data.skull.skull_check_array` on the same voxels and spacing: the child reads the file
    :func:`~MAGMSCommonLib.volumes.writeVolumes` writes from this array). None: no image data."""
    if volume is None or volume.GetImageData() is None:
        return None
    return skull_check_array(slicer.util.arrayFromVolume(volume), volume.GetSpacing())


def describeBundle(info: BundleInfo) -> str:
    """What a user should see before running: slots, labels, the validation table."""
    lines = [
        f"Slots: {', '.join(info.slots)}",
        f"Labels ({info.scheme.key}): {', '.join(label.name for label in info.scheme.labels if label.value != 0)}",
        f"Backbone: {info.network.backbone}; written by magms {info.versions.get('magms')} on {info.created or 'an unknown date'}",
    ]
    if info.validation:
        lines.append("Validation Dice per subset:")
        for subset, metrics in info.validation.items():
            text = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) if isinstance(metrics, dict) else f"{metrics:.2f}"
            lines.append(f"  {subset}: {text}")
    else:
        lines.append("No validation table in this bundle.")
    return "\n".join(lines)
