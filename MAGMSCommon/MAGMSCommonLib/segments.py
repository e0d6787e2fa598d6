"""Segments the same way on every supported Slicer (5.8 and 5.10): terminology, and label maps to merge.

Slicer 5.10 added ``vtkSegment::SetTerminology``/``GetTerminology``; 5.8 has only the tag that both
read and write, ``vtkSegment::GetTerminologyEntryTagName()`` (``Libs/vtkSegmentationCore/vtkSegment.h``
at v5.8.1 and v5.10.0; in 5.10 the two methods are that tag's ``SetTag``/``GetTag``, ``vtkSegment.cxx``).
So the tag is used here, on both: no branch by release. The entry's format (seven ``~``-separated
fields) is the same in both (``vtkSlicerTerminologiesModuleLogic::DeserializeTerminologyEntry``).
"""

from __future__ import annotations

import slicer
import vtk

from magms.errors import ConfigError
from MAGMSCommonLib.volumes import ensureSegmentationConverters

__all__ = ["setSegmentTerminology", "segmentTerminology", "withBinaryLabelmaps"]


def setSegmentTerminology(segment: slicer.vtkSegment, entry: str) -> None:
    """Give ``segment`` the terminology ``entry`` (``context~category~type~...``), as 5.10's ``SetTerminology`` does."""
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)


def segmentTerminology(segment: slicer.vtkSegment) -> str:
    """``segment``'s terminology entry ("" when it has none), as 5.10's ``GetTerminology`` returns it."""
    value = vtk.reference("")  # GetTag(std::string, std::string&): the wrapped out-argument
    if not segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value):
        return ""
    return str(value)


def withBinaryLabelmaps(segmentationNode: slicer.vtkMRMLSegmentationNode) -> slicer.vtkMRMLSegmentationNode:
    """``segmentationNode`` itself when its segments are binary label maps, else a converted copy outside the scene.

    Merging segments into one label map (``GenerateMergedLabelmapForAllSegments``, and
    ``vtkSlicerSegmentationsModuleLogic::GenerateMergedLabelmapInReferenceGeometry`` which calls it)
    reads the binary label map representation only; segments stored as closed surfaces (an RTSTRUCT
    imported through SlicerRT, segments made from models) must be converted first, as Slicer's own
    ``ExportSegmentsToLabelmapNode`` does. The copy keeps the user's node as it was.

    Raises:
        ConfigError: the segments cannot be converted (naming the node and its representation).
    """
    ensureSegmentationConverters()
    labelmapName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segmentationNode.GetSegmentation().ContainsRepresentation(labelmapName):
        return segmentationNode
    copy = slicer.vtkMRMLSegmentationNode()  # never added to the scene
    copy.GetSegmentation().DeepCopy(segmentationNode.GetSegmentation())
    if not copy.GetSegmentation().CreateRepresentation(labelmapName):
        raise ConfigError(f"'{segmentationNode.GetName()}': its segments ({copy.GetSegmentation().GetSourceRepresentationName()}) "
                          "could not be converted to a binary label map")
    copy.SetName(segmentationNode.GetName())
    return copy
