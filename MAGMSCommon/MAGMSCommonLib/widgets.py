"""Widget helpers both module files use. They need the Slicer application: the logic never imports this."""

from __future__ import annotations

import slicer

__all__ = ["volumeSelector", "fillComboBox"]


def volumeSelector(nodeID: str | None = None):
    """A selector of the scene's image volumes (no label maps), empty allowed."""
    selector = slicer.qMRMLNodeComboBox()
    selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
    selector.hideChildNodeTypes = ["vtkMRMLLabelMapVolumeNode"]
    selector.noneEnabled, selector.addEnabled, selector.removeEnabled = True, False, False
    selector.setMRMLScene(slicer.mrmlScene)
    selector.setCurrentNodeID(nodeID or "")
    return selector


def fillComboBox(combo, items, current: str | None = None) -> None:
    """Replace a combo box's items by ``(data, text)`` pairs and select ``current`` (else the first),
    without emitting: what the controller shows is not a user's choice."""
    wasBlocked = combo.blockSignals(True)
    combo.clear()
    for data, text in items:
        combo.addItem(text, data)
    combo.currentIndex = max(combo.findData(current), 0) if current is not None else 0
    combo.blockSignals(wasBlocked)
