"""Widget helpers both module files use. They need the Slicer application: the logic never imports this."""

from __future__ import annotations

import slicer

__all__ = ["volumeSelector"]


def volumeSelector(nodeID: str | None = None):
    """A selector of the scene's image volumes (no label maps), empty allowed."""
    selector = slicer.qMRMLNodeComboBox()
    selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
    selector.hideChildNodeTypes = ["vtkMRMLLabelMapVolumeNode"]
    selector.noneEnabled, selector.addEnabled, selector.removeEnabled = True, False, False
    selector.setMRMLScene(slicer.mrmlScene)
    selector.setCurrentNodeID(nodeID or "")
    return selector
