"""The Segmenter panel's Targets section, without Qt: which segmentation, which protocol and margins, which brain and
barrier masks; whether targets can be grown and why not; growing them (:func:`~.targets.growTargetSegments`).

The :class:`~.controller.SegmenterController` owns one and hands it the parameter node and the chosen model;
the widget binds the section's controls to it (each handler one call).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from magms.bundle import BundleInfo
from magms.errors import MAGMSError
from magms.targets import PROTOCOLS

from .dicomexport import segmentLabelValues
from .targets import growTargetSegments, targetsProblem

__all__ = ["TargetsController", "TARGETS_REFERENCE_ROLE", "BRAIN_REFERENCE_ROLE", "BARRIER_REFERENCE_ROLE", "PROTOCOL_ITEMS",
           "TARGETS_DEFAULTS"]

logger = logging.getLogger(__name__)

#: The segmentation to grow targets in, and the optional brain and barrier mask volumes: node references of the
#: parameter node (saved with the scene).
TARGETS_REFERENCE_ROLE = "MAGMS.targetsSegmentation"
BRAIN_REFERENCE_ROLE = "MAGMS.targetsBrain"
BARRIER_REFERENCE_ROLE = "MAGMS.targetsBarrier"
#: The protocols as the panel lists them.
PROTOCOL_ITEMS = tuple((key, protocol.name) for key, protocol in PROTOCOLS.items())
#: The section's parameters and their defaults (the controller's DEFAULTS include them).
TARGETS_DEFAULTS = {"targetsProtocol": "estro-eano-2023", "targetsMargins": ""}


class TargetsController:
    """The Targets section.

    Args:
        scene: the MRML scene.
        view: the panel (``showTargetsSettings``, ``showTargetsNodes``, ``showTargets``, ``showStatus``, ``showError``).
        model: the chosen model's bundle folder and info, (None, None) while none reads.
    """

    def __init__(self, scene, view, model: Callable[[], tuple[Path | None, BundleInfo | None]]) -> None:
        self.scene, self.view, self.model = scene, view, model
        self.parameters = None

    def setParameterNode(self, parameters) -> None:
        """Show the section's settings of the panel's :class:`~MAGMSCommonLib.parameters.Parameters` (None: scene closing)."""
        self.parameters = parameters
        if parameters is None:
            return
        self.view.showTargetsSettings(PROTOCOL_ITEMS, self.protocolKey(), list(self.margins().items()))
        node = parameters.node
        self.view.showTargetsNodes(*(node.GetNodeReferenceID(role) or "" for role in
                                     (TARGETS_REFERENCE_ROLE, BRAIN_REFERENCE_ROLE, BARRIER_REFERENCE_ROLE)))
        self.update()

    # --- the settings ----------------------------------------------------------------------

    def protocolKey(self) -> str:
        key = self.parameters.get("targetsProtocol") if self.parameters is not None else ""
        return key if key in PROTOCOLS else TARGETS_DEFAULTS["targetsProtocol"]

    def margins(self) -> dict[str, float]:
        """Grown target -> margin (mm): the protocol's, with the ones the user changed."""
        protocol = PROTOCOLS[self.protocolKey()]
        margins = {t.name: t.margin_mm for t in protocol.targets if t.kind != "GTV"}
        try:
            saved = json.loads(self.parameters.get("targetsMargins") or "{}") if self.parameters is not None else {}
        except ValueError:
            saved = {}
        if isinstance(saved, dict):
            margins.update({k: float(v) for k, v in saved.items() if k in margins and isinstance(v, (int, float))})
        return margins

    def setProtocol(self, key: str) -> None:
        """Another protocol: its own margins (those changed for the one before do not carry over)."""
        if self.parameters is None or key not in PROTOCOLS or key == self.protocolKey():
            return
        self.parameters.set("targetsProtocol", key)
        self.parameters.set("targetsMargins", "")
        self.view.showTargetsSettings(PROTOCOL_ITEMS, key, list(self.margins().items()))
        self.update()

    def setMargin(self, name: str, millimetres: float) -> None:
        if self.parameters is None or name not in self.margins():
            return
        try:
            saved = json.loads(self.parameters.get("targetsMargins") or "{}")
        except ValueError:  # not what this panel wrote: start again from the protocol's
            saved = {}
        changed = {**(saved if isinstance(saved, dict) else {}), name: float(millimetres)}
        self.parameters.set("targetsMargins", json.dumps(changed, sort_keys=True))
        self.update()

    def _setReference(self, role: str, nodeID: str | None) -> None:
        if self.parameters is not None:
            self.parameters.node.SetNodeReferenceID(role, nodeID or None)
        self.update()

    def setSegmentation(self, nodeID: str | None) -> None:
        self._setReference(TARGETS_REFERENCE_ROLE, nodeID)

    def setBrainMask(self, nodeID: str | None) -> None:
        self._setReference(BRAIN_REFERENCE_ROLE, nodeID)

    def setBarrier(self, nodeID: str | None) -> None:
        self._setReference(BARRIER_REFERENCE_ROLE, nodeID)

    def _node(self, role: str, kind: str):
        if self.parameters is None:
            return None
        node = self.parameters.node.GetNodeReference(role)
        return node if node is not None and node.IsA(kind) else None

    def maskIDs(self) -> tuple[str, str]:
        """The chosen brain and barrier mask volumes' IDs ("" for none)."""
        node = self.parameters.node if self.parameters is not None else None
        return tuple(node.GetNodeReferenceID(role) or "" if node else "" for role in (BRAIN_REFERENCE_ROLE, BARRIER_REFERENCE_ROLE))

    def segmentation(self):
        return self._node(TARGETS_REFERENCE_ROLE, "vtkMRMLSegmentationNode")

    def problem(self) -> str:
        """Why targets cannot be grown now ("" when they can)."""
        if self.parameters is None:
            return "No scene."
        node = self.segmentation()
        if node is None:
            return "Choose the segmentation to grow targets from (a MAGMS result, edited or not)."
        if self.model()[1] is None:
            return "Choose the model whose labels the segmentation has (Model, above)."
        reference = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
        if reference is None or not reference.IsA("vtkMRMLScalarVolumeNode") or reference.GetImageData() is None:
            return f"'{node.GetName()}' has no reference volume: the targets are grown on its grid."
        masks = [m for m in (self._node(BRAIN_REFERENCE_ROLE, "vtkMRMLScalarVolumeNode"),
                             self._node(BARRIER_REFERENCE_ROLE, "vtkMRMLScalarVolumeNode")) if m is not None]
        return targetsProblem(node, reference, masks)

    def update(self) -> None:
        problem = self.problem()
        if problem:
            self.view.showTargets(False, problem)
            return
        protocol = PROTOCOLS[self.protocolKey()].with_margins(self.margins())
        grown = ", ".join(f"{t.name} = {t.source[0]} + {t.margin_mm:g} mm" for t in protocol.targets if t.kind != "GTV")
        self.view.showTargets(True, f"Grows {protocol.name} targets in '{self.segmentation().GetName()}' from its segments as "
                                    f"they are now ({grown}; CTVs within the brain), replacing the targets grown before.")

    # --- growing ---------------------------------------------------------------------------

    def grow(self) -> None:
        """Grow the targets into the chosen segmentation; the reason shown when they cannot be."""
        problem = self.problem()
        if problem:
            self.view.showError(f"Cannot grow targets: {problem}")
            return
        node = self.segmentation()
        reference = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
        folder, info = self.model()
        try:
            values = segmentLabelValues(node, info.scheme, folder.name if folder else "the model")
            protocol = PROTOCOLS[self.protocolKey()].with_margins(self.margins())
            made = growTargetSegments(node, reference, values, info.scheme, protocol,
                                      self._node(BRAIN_REFERENCE_ROLE, "vtkMRMLScalarVolumeNode"),
                                      self._node(BARRIER_REFERENCE_ROLE, "vtkMRMLScalarVolumeNode"))
        except MAGMSError as err:
            self.view.showError(f"Cannot grow targets: {err}")
            return
        names = [node.GetSegmentation().GetSegment(i).GetName() for i in made]
        self.view.showStatus(f"Grew {', '.join(names)} in '{node.GetName()}' ({protocol.name}); Export to DICOM writes them "
                             "as targets")
