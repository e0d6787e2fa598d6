"""Segments as arrays and arrays as files, on a reference volume's grid: what the export and the targets share.

MRML only, no Qt (tested with ``slicer-core``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from magms.errors import ConfigError

__all__ = ["referenceGeometry", "imageArray", "mergedLabelmap", "labelArray", "setSegmentMask", "writeArray"]


def referenceGeometry(reference: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkOrientedImageData:
    """An empty oriented image with ``reference``'s extent and IJK-to-RAS matrix."""
    geometry = slicer.vtkOrientedImageData()
    geometry.SetExtent(reference.GetImageData().GetExtent())
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    geometry.SetImageToWorldMatrix(matrix)
    return geometry


def imageArray(image: vtk.vtkImageData) -> np.ndarray:
    """An image's voxels, (z, y, x), as a copy."""
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).copy()


def mergedLabelmap(segmentationNode: slicer.vtkMRMLSegmentationNode, reference: slicer.vtkMRMLScalarVolumeNode,
                   values: Sequence[tuple[str, int]]) -> slicer.vtkOrientedImageData:
    """The segments ``values`` (segment ID, label value) merged into one label map on ``reference``'s grid, by the
    segmentation node itself (``GenerateMergedLabelmapForAllSegments`` with the reference's geometry and explicit
    label values; where segments overlap, the later one wins): their current content.

    Raises:
        ConfigError: the merge failed.
    """
    ids, labels = vtk.vtkStringArray(), vtk.vtkIntArray()
    for segmentID, value in values:
        ids.InsertNextValue(segmentID)
        labels.InsertNextValue(value)
    merged = slicer.vtkOrientedImageData()
    if not segmentationNode.GenerateMergedLabelmapForAllSegments(merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
                                                                 referenceGeometry(reference), ids, labels):
        raise ConfigError(f"'{segmentationNode.GetName()}': its segments could not be merged into one label map")
    return merged


def labelArray(segmentationNode, reference, values: Sequence[tuple[str, int]]) -> np.ndarray:
    """:func:`mergedLabelmap` as a (z, y, x) array."""
    return imageArray(mergedLabelmap(segmentationNode, reference, values))


def setSegmentMask(segmentationNode, segmentID: str, mask: np.ndarray, reference: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Make segment ``segmentID`` exactly ``mask`` ((z, y, x) bool on ``reference``'s grid): the whole segment is replaced
    (``SetBinaryLabelmapToSegment`` with ``MODE_REPLACE`` and no extent; vtkSegmentationModifier.cxx, v5.8.1).

    Raises:
        ConfigError: the segment could not be written.
    """
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(mask, np.uint8).ravel(), deep=True,
                                                               array_type=vtk.VTK_UNSIGNED_CHAR))
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, segmentationNode, segmentID, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE):
        name = segmentationNode.GetSegmentation().GetSegment(segmentID).GetName()
        raise ConfigError(f"'{segmentationNode.GetName()}': segment {name!r} could not be written")


def writeArray(array: np.ndarray, reference: slicer.vtkMRMLScalarVolumeNode, path: Path, what: str) -> None:
    """Write a (z, y, x) integer array on ``reference``'s grid as a label map file (its geometry: the reference's), by a
    volume storage node; nothing is added to the scene.

    Raises:
        ConfigError: the write failed (``what`` names the data).
    """
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    labelmap.SetAndObserveImageData(image)  # a volume node keeps the geometry in its IJK-to-RAS matrix
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    labelmap.SetIJKToRASMatrix(matrix)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # a temporary file: speed over size
    if not storage.WriteData(labelmap) or not path.is_file():
        raise ConfigError(f"{what} could not be written to {path}")
