"""What a finished run adds to the scene: a NEW segmentation node per output, named, coloured and coded.

MRML only, no Qt (tested with ``slicer-core``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import slicer

from magms.errors import ConfigError
from magms.labels import LabelScheme
from MAGMSCommonLib.segments import setSegmentTerminology
from MAGMSCommonLib.volumes import ensureSegmentationConverters

logger = logging.getLogger(__name__)


def importSegmentation(
    scene: slicer.vtkMRMLScene, path: Path, reference: slicer.vtkMRMLScalarVolumeNode, scheme: LabelScheme, name: str
) -> slicer.vtkMRMLSegmentationNode:
    """Add a NEW segmentation node read from ``path``: one segment per label of ``scheme``.

    Each segment gets the scheme's name, colour and terminology entry, and the node's geometry
    is referenced to ``reference``. Existing nodes are never modified.

    Raises:
        ConfigError: the file cannot be read as a segmentation.
    """
    ensureSegmentationConverters()
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(scene.GenerateUniqueName(name))
    # read inside the scene: the storage node creates the display node after reading, which outside a
    # scene logs "Scene is invalid" (vtkMRMLSegmentationStorageNode.cxx ReadDataInternal, v5.8.1:297-301)
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise ConfigError(f"{path}: cannot be read as a segmentation")
    segmentation = node.GetSegmentation()
    by_value = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        by_value[segment.GetLabelValue()] = segmentation.GetNthSegmentID(index)
    for label in scheme.labels:
        if label.value == 0:
            continue
        segment_id = by_value.get(label.value)
        if segment_id is None:  # nothing of this label was found: keep an empty segment to review
            segment_id = segmentation.AddEmptySegment(label.key, label.name)
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(label.name)
        segment.SetColor(*(c / 255.0 for c in label.color))
        setSegmentTerminology(segment, scheme.slicer_terminology(label.value))
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    return node


def segmentationName(reference: slicer.vtkMRMLScalarVolumeNode, model: str, subset: Sequence[str]) -> str:
    """``<reference> MAGMS <model> (<slot>+<slot>)``."""
    return f"{reference.GetName()} MAGMS {model} ({'+'.join(subset)})"


def safeFileName(text: str) -> str:
    """``text`` as a file name: path separators and characters Windows refuses replaced, at most 80 long."""
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", text).strip(" .")[:80] or "segmentation"
