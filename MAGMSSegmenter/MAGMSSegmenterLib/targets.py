"""Radiotherapy targets as segments: grown from a segmentation's label segments as they are now, edits included,
by a protocol of :mod:`magms.targets`, added to the same segmentation as segments of their own, exported with it.

MRML only, no Qt (tested with ``slicer-core``). The growth is :func:`magms.targets.grow_targets` in this
process (SimpleITK distance maps: 0.05-0.21 s per protocol on a real 1 mm case,
``Testing/benchmarks/bench_targets.py``), on the segmentation's reference volume grid.

A target segment carries segment tags (``vtkSegment::SetTag``, at v5.8.1 and v5.10.0 in
``Libs/vtkSegmentationCore/vtkSegment.h``): :data:`TARGET_TYPE_TAG` (its RT ROI Interpreted Type),
:data:`TARGET_DESCRIPTION_TAG` and :data:`TARGET_ALGORITHM_TAG`. They tell the target segments from the
label segments, and the export writes them into the DICOM objects with their types
(``magms export --targets-from``). Growing again replaces only segments with these tags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk

from magms.errors import ConfigError
from magms.labels import LabelScheme
from magms.targets import TARGETS_FILE, TargetProtocol, case_brain, grow_targets, target_structures
from MAGMSCommonLib.volumes import notAnImage

from .labelmaps import imageArray, labelArray, setSegmentMask, writeArray

__all__ = ["TARGET_TYPE_TAG", "TARGET_DESCRIPTION_TAG", "TARGET_ALGORITHM_TAG", "segmentTag", "isTargetSegment",
           "targetSegmentIDs", "volumeArray", "targetsProblem", "growTargetSegments", "writeTargetsForExport"]

TARGET_TYPE_TAG = "MAGMS.targetType"
TARGET_DESCRIPTION_TAG = "MAGMS.targetDescription"
TARGET_ALGORITHM_TAG = "MAGMS.targetAlgorithm"


def segmentTag(segment: slicer.vtkSegment, key: str) -> str:
    """A segment's tag ("" when it has none): ``GetTag(std::string, std::string&)`` with its wrapped out-argument."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else ""


def isTargetSegment(segment: slicer.vtkSegment) -> bool:
    return bool(segmentTag(segment, TARGET_TYPE_TAG))


def targetSegmentIDs(segmentationNode: slicer.vtkMRMLSegmentationNode) -> list[str]:
    """The IDs of the segments the Targets section made (tagged), in order."""
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())
            if isTargetSegment(segmentation.GetNthSegment(i))]


def volumeArray(volume: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """A volume's voxels, (z, y, x) as a copy."""
    return imageArray(volume.GetImageData())


def _grid(volume: slicer.vtkMRMLScalarVolumeNode, array: np.ndarray):
    """An image with the volume's voxels and voxel size: all the growth reads (distances do not change with a
    rotation or a shift, so the direction and origin are left out)."""
    import SimpleITK as sitk  # not at import: the panel opens without it

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in volume.GetSpacing()))
    return image


def _transformID(node) -> str | None:
    transform = node.GetParentTransformNode()
    return transform.GetID() if transform is not None else None


def targetsProblem(segmentationNode: slicer.vtkMRMLSegmentationNode, reference, masks: Sequence = ()) -> str:
    """Why targets cannot be grown in ``segmentationNode`` on ``reference``'s grid with ``masks`` ("" when they can):
    segments not held as binary label maps (the targets are written as label maps into the node), a reference or mask
    that is not one single-component volume, or nodes under different transforms (the grids would not match)."""
    labelmap = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    source = segmentationNode.GetSegmentation().GetSourceRepresentationName()
    if source != labelmap:
        return (f"'{segmentationNode.GetName()}' holds its segments as {source} (an imported RTSTRUCT, a model): targets are "
                "written as label maps, so make Binary labelmap its source representation first (Segmentations module, "
                "Representations)")
    for node in (reference, *masks):
        problem = notAnImage(node) if not node.IsA("vtkMRMLLabelMapVolumeNode") else ""
        if problem or node.GetImageData() is None or node.GetImageData().GetNumberOfScalarComponents() != 1:
            return problem or f"volume '{node.GetName()}' has no single-component image"
    if len({_transformID(n) for n in (segmentationNode, reference, *masks)}) > 1:
        return (f"'{segmentationNode.GetName()}', its reference volume '{reference.GetName()}' and the masks are not all under "
                "the same transform: their voxels would not match; put them under one transform (or none)")
    return ""


def _maskOnReference(node: slicer.vtkMRMLScalarVolumeNode | None, reference: slicer.vtkMRMLScalarVolumeNode,
                     what: str) -> np.ndarray | None:
    """A mask volume's voxels above 0.5, on the reference's grid (the same dimensions and geometry are required)."""
    if node is None:
        return None
    matrices = [vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()]
    node.GetIJKToRASMatrix(matrices[0])
    reference.GetIJKToRASMatrix(matrices[1])
    same = node.GetImageData() is not None and node.GetImageData().GetDimensions() == reference.GetImageData().GetDimensions() and all(
        abs(matrices[0].GetElement(i, j) - matrices[1].GetElement(i, j)) < 1e-3 for i in range(4) for j in range(4))
    if not same:
        raise ConfigError(f"the {what} '{node.GetName()}' is not on the grid of '{reference.GetName()}': resample it onto that "
                          "volume first (Resample Scalar/Vector/DWI Volume, reference volume, nearest neighbour)")
    return volumeArray(node) > 0.5


def _setSegment(segmentationNode, name: str, mask: np.ndarray, reference, colour, tags: Mapping[str, str]) -> str:
    segmentation = segmentationNode.GetSegmentation()
    segmentID = segmentation.AddEmptySegment("", name, [c / 255.0 for c in colour])
    setSegmentMask(segmentationNode, segmentID, mask, reference)
    segment = segmentation.GetSegment(segmentID)
    for key, value in tags.items():
        segment.SetTag(key, value)
    return segmentID


def growTargetSegments(segmentationNode: slicer.vtkMRMLSegmentationNode, reference: slicer.vtkMRMLScalarVolumeNode,
                       values: Sequence[tuple[str, int]], scheme: LabelScheme, protocol: TargetProtocol,
                       brainNode: slicer.vtkMRMLScalarVolumeNode | None = None,
                       barrierNode: slicer.vtkMRMLScalarVolumeNode | None = None) -> list[str]:
    """Grow ``protocol``'s targets from the label segments ``values`` as they are now and put them, and the brain,
    into ``segmentationNode`` as tagged segments, replacing the targets grown before (only those).

    Args:
        reference: the segmentation's reference volume: the grid of the growth.
        values: (segment ID, label value) of the label segments.
        brainNode: a brain mask volume on ``reference``'s grid; None: the reference's brain when it is skull-stripped.
        barrierNode: a barrier mask volume on ``reference``'s grid, or None.
    Returns:
        The new segments' IDs.
    Raises:
        ConfigError, ImageError: no brain (the reference is not skull-stripped and no mask was given), a mask off the
            grid, a protocol the scheme cannot make; nothing is changed then.
    """
    problem = targetsProblem(segmentationNode, reference, [n for n in (brainNode, barrierNode) if n is not None])
    if problem:
        raise ConfigError(problem)
    labels = labelArray(segmentationNode, reference, values)
    grid = _grid(reference, labels)
    brain = _maskOnReference(brainNode, reference, "brain mask")
    if brain is None:
        image = _grid(reference, volumeArray(reference).astype(np.float32))
        brain, source = case_brain({"reference": image}, {"reference": reference.GetName()},
                                   hint=" (Targets section, Brain mask)")
    else:
        source = f"'{brainNode.GetName()}'"
    barrier = _maskOnReference(barrierNode, reference, "barrier mask")
    structures = target_structures(grow_targets(labels, grid, scheme, protocol, brain, barrier), brain,
                                   f"Brain ({source})".replace("|", "/"))
    segmentation = segmentationNode.GetSegmentation()
    before = targetSegmentIDs(segmentationNode)
    made: list[str] = []
    wasModifying = segmentationNode.StartModify()
    try:  # the new targets first: the old ones go only when all of them are in
        for structure in structures:  # a tag value holding '|' would be cut there on reload (segment tags' separator)
            made.append(_setSegment(segmentationNode, structure.name, structure.voxels, reference, structure.color, {
                TARGET_TYPE_TAG: structure.interpreted_type, TARGET_DESCRIPTION_TAG: structure.description.replace("|", "/"),
                TARGET_ALGORITHM_TAG: structure.algorithm}))
    except BaseException:
        for segmentID in made:
            segmentation.RemoveSegment(segmentID)
        raise
    else:
        for segmentID in before:
            segmentation.RemoveSegment(segmentID)
    finally:
        segmentationNode.EndModify(wasModifying)
    return made


def writeTargetsForExport(segmentationNode: slicer.vtkMRMLSegmentationNode, reference: slicer.vtkMRMLScalarVolumeNode,
                          folder: Path) -> Path | None:
    """The target segments as they are now (edits included): one mask per segment on ``reference``'s grid and a
    ``targets.json`` listing them with their types and descriptions, in ``folder`` (for ``magms export
    --targets-from``); None when the segmentation has no target segment."""
    ids = targetSegmentIDs(segmentationNode)
    if not ids:
        return None
    segmentation = segmentationNode.GetSegmentation()
    listed = []
    for n, segmentID in enumerate(ids):
        segment = segmentation.GetSegment(segmentID)
        mask = labelArray(segmentationNode, reference, [(segmentID, 1)]) > 0
        file = f"target{n + 1}.nrrd"
        writeArray(mask.astype(np.uint8), reference, folder / file, f"target segment '{segment.GetName()}'")
        listed.append({"name": segment.GetName(), "interpreted_type": segmentTag(segment, TARGET_TYPE_TAG),
                       "algorithm": segmentTag(segment, TARGET_ALGORITHM_TAG) or None,
                       "description": segmentTag(segment, TARGET_DESCRIPTION_TAG), "file": file})
    path = folder / TARGETS_FILE
    path.write_text(json.dumps({"structures": listed}, indent=2), encoding="utf-8")
    return path
