"""Compare subsets: the disagreement map over the reference volume, as a heat overlay in the slice views.

MRML only, no Qt (tested with ``slicer-core``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import slicer

from magms.errors import ConfigError
from MAGMSCommonLib import models
from MAGMSCommonLib.volumes import ROLE_ATTRIBUTE

logger = logging.getLogger(__name__)


#: The value of :data:`~MAGMSCommonLib.volumes.ROLE_ATTRIBUTE` on the disagreement map's volume node.
DISAGREEMENT_ROLE = "disagreement"
#: Heat colour tables the Slicer application creates, first found wins (node IDs as
#: ``vtkMRMLColorLogic`` makes them: ``GetFileColorNodeID("Inferno.txt")``, ``GetPETColorNodeID(PETheat)``,
#: ``GetColorTableNodeID(Iron)``). A bare MRML scene (``slicer-core``) has none of them.
HEAT_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeIron")
#: The colour table made when none of :data:`HEAT_COLOR_NODE_IDS` is in the scene.
FALLBACK_HEAT_NAME = "MAGMS disagreement (Iron)"
DISAGREEMENT_OPACITY = 0.5


def defaultReportsFolder() -> Path:
    """Where compare-subsets reports are kept: ``reports`` beside the model cache (``~/.cache/magms/reports``)."""
    return models.defaultCacheFolder().parent / "reports"


def heatColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorNode:
    """A heat colour table of the scene: Slicer's Inferno, PET-Heat or Iron, else one made here (Iron type),
    added once and found again by its name."""
    for nodeID in HEAT_COLOR_NODE_IDS:
        node = scene.GetNodeByID(nodeID)
        if node is not None:
            return node
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
        if node.GetName() == FALLBACK_HEAT_NAME:
            return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToIron()
    node.SetName(FALLBACK_HEAT_NAME)
    node.SetAttribute(ROLE_ATTRIBUTE, DISAGREEMENT_ROLE)
    return scene.AddNode(node)


def disagreementWindow(compared: int) -> tuple[float, float]:
    """The heat map's window for counts 0..``compared``: the top at ``compared``, the bottom where a count
    of 1 shows at a third of the colour table (at its top when ``compared`` is 1), never above 0.5.

    A window from 0 put a 1 of 14 (four volumes) at 7 % of Inferno: nearly black, unseen over a dark MR.
    """
    top = float(max(compared, 1))
    return min(0.5, 1.5 - top / 2.0), top


def importDisagreement(scene: slicer.vtkMRMLScene, path: Path, name: str, compared: int) -> slicer.vtkMRMLScalarVolumeNode:
    """Add a NEW scalar volume node read from the disagreement map at ``path`` (uint8 counts 0..``compared``),
    displayed as a heat map: window :func:`disagreementWindow` (a count of 1 clearly visible), 0 transparent
    (thresholded out), no interpolation.

    Raises:
        ConfigError: the file cannot be read.
    """
    node = slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise ConfigError(f"{path}: cannot be read as the disagreement map")
    node.SetName(scene.GenerateUniqueName(name))
    node.SetAttribute(ROLE_ATTRIBUTE, DISAGREEMENT_ROLE)  # not an input: the slot guess leaves it alone
    scene.AddNode(node)
    display = slicer.vtkMRMLScalarVolumeDisplayNode()
    scene.AddNode(display)
    display.SetAndObserveColorNodeID(heatColorNode(scene).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(*disagreementWindow(compared))
    display.SetAutoThreshold(False)
    display.SetApplyThreshold(True)  # voxels outside the threshold are transparent in the slice views
    display.SetLowerThreshold(1)
    display.SetUpperThreshold(max(compared, 1))
    display.SetInterpolate(False)  # counts, not intensities
    node.SetAndObserveDisplayNodeID(display.GetID())
    return node


def showDisagreement(scene: slicer.vtkMRMLScene, volume: slicer.vtkMRMLScalarVolumeNode, opacity: float = DISAGREEMENT_OPACITY) -> int:
    """Show ``volume`` as the foreground of every slice view (``vtkMRMLSliceCompositeNode``), as
    ``slicer.util.setSliceViewerLayers(foreground=..., foregroundOpacity=...)`` does; backgrounds and
    label layers are kept. Returns how many views were set (none in a scene without views)."""
    count = scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(count):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        composite.SetForegroundVolumeID(volume.GetID())
        composite.SetForegroundOpacity(opacity)
    return count


def hideDisagreement(scene: slicer.vtkMRMLScene) -> int:
    """Take every disagreement map (a volume with the role :data:`DISAGREEMENT_ROLE`) out of the slice views'
    foreground, where a later run without a map would leave it over images it does not describe; the
    user's own foreground volumes stay. Returns how many views were changed. The map nodes are kept."""
    changed = 0
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if foreground is not None and foreground.GetAttribute(ROLE_ATTRIBUTE) == DISAGREEMENT_ROLE:
            composite.SetForegroundVolumeID(None)
            changed += 1
    return changed
