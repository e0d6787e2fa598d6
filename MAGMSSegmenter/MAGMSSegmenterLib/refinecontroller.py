"""The Segmenter panel's Refine section, without Qt: which segmentation and region, whether clicks can refine it and
why not, each placed point sent to the worker, undo and clear (:class:`~.refine.RefineSession`).

The :class:`~.controller.SegmenterController` owns one and hands it the parameter node, the chosen model, the slot
mapping and the device; the widget puts the slice views in place mode on the click lists and tells this
controller each point placed (each handler one call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from magms.bundle import BundleInfo
from magms.errors import MAGMSError
from magms.protocol import EngineChoice
from MAGMSCommonLib.volumes import checkMapping

from .refine import Marker, RefineSession, clickLists

__all__ = ["RefineController", "REFINE_REFERENCE_ROLE", "CLICK_LIST_ROLES", "REFINE_DEFAULTS"]

logger = logging.getLogger(__name__)

#: The segmentation to refine and the two click lists: node references of the parameter node (saved with the scene).
REFINE_REFERENCE_ROLE = "MAGMS.refineSegmentation"
CLICK_LIST_ROLES = {True: "MAGMS.clicksAdd", False: "MAGMS.clicksRemove"}
#: The section's parameters and their defaults (the controller's DEFAULTS include them): the region clicked ("" = the first).
REFINE_DEFAULTS = {"refineRegion": ""}


class RefineController:
    """The Refine section.

    Args:
        scene: the MRML scene.
        view: the panel (``showRefine``, ``showRefineStatus``, ``showError``).
        model: the chosen model's bundle folder and info, (None, None) while none reads.
        mapping: the panel's slot -> volume node ID mapping.
        engineChoice: the panel's device, engine and precision.
        preprocess: the panel's ``--preprocess`` mode (the worker prepares the volumes as Apply did).
        newSession: makes the :class:`~.refine.RefineSession` (tests may pass one with their own Python).
    """

    def __init__(self, scene, view, model: Callable[[], tuple[Path | None, BundleInfo | None]],
                 mapping: Callable[[], Mapping[str, str | None]], engineChoice: Callable[[], EngineChoice],
                 preprocess: Callable[[], str] = lambda: "none", newSession: Callable[..., RefineSession] = RefineSession) -> None:
        self.scene, self.view, self.model, self.mapping, self.engineChoice = scene, view, model, mapping, engineChoice
        self.preprocess = preprocess
        self.newSession = newSession
        self.parameters = None
        self.session: RefineSession | None = None
        self._sessionKey: tuple | None = None

    # --- settings --------------------------------------------------------------------------------

    def setParameterNode(self, parameters) -> None:
        """The panel's :class:`~MAGMSCommonLib.parameters.Parameters` (None: the scene closes: the worker stops)."""
        if parameters is None:
            self.stop()
        self.parameters = parameters
        self.update()

    @property
    def segmentationNode(self):
        if self.parameters is None:
            return None
        return self.parameters.node.GetNodeReference(REFINE_REFERENCE_ROLE)

    def setSegmentation(self, nodeID: str | None) -> None:
        if self.parameters is None:
            return
        self.parameters.node.SetNodeReferenceID(REFINE_REFERENCE_ROLE, nodeID or None)
        self.update()

    def regions(self) -> list[tuple[str, str]]:
        _, info = self.model()
        return [(r.key, r.name) for r in info.scheme.regions] if info is not None else []

    def region(self) -> str:
        keys = [key for key, _ in self.regions()]
        chosen = self.parameters.get("refineRegion") if self.parameters is not None else ""
        return chosen if chosen in keys else (keys[0] if keys else "")

    def setRegion(self, key: str) -> None:
        if self.parameters is not None:
            self.parameters.set("refineRegion", key)
        self.update()

    def problem(self) -> str:
        """Why clicks cannot refine now ("" when they can)."""
        folder, info = self.model()
        if info is None:
            return "Choose a model first."
        if not info.network.click_regions:
            return f"The model {folder.name if folder else ''} takes no clicks: choose one that does (the built-in model does)."
        if not any(self.mapping().values()):
            return "Map the volumes the segmentation was made from."
        if self.segmentationNode is None:
            return "Choose the segmentation to refine (Apply makes one)."
        return ""

    def update(self) -> None:
        """Show the section: the segmentation, the regions, whether clicks can refine and why not."""
        if self.parameters is None:
            return
        node = self.segmentationNode
        problem = self.problem()
        self.view.showRefine(node.GetID() if node is not None else "", self.regions(), self.region(), not problem,
                             problem or "Add (Ctrl+Shift+P) or Remove (Ctrl+Shift+N), then click in a slice view: each point "
                                        "updates the segments around it; right-click ends placing.")
        if self._sessionKey is not None and self._sessionKey != self._key():
            self.stop()  # another model, mapping or segmentation: the worker's case is not this one

    def _key(self) -> tuple:
        folder, _ = self.model()
        node = self.segmentationNode
        return (folder, tuple(sorted((k, v) for k, v in self.mapping().items() if v)), node.GetID() if node else None,
                self.engineChoice(), self.preprocess())

    # --- clicks ----------------------------------------------------------------------------------

    def clickListIDs(self) -> list[str]:
        """The IDs of the click lists made so far (none made here)."""
        if self.parameters is None:
            return []
        return [nodeID for role in CLICK_LIST_ROLES.values() if (nodeID := self.parameters.node.GetNodeReferenceID(role))]

    def clickLists(self) -> dict[bool, object]:
        """The add and remove point lists (made when missing, remembered in the parameter node), for the place buttons."""
        node = self.parameters.node
        lists = clickLists(self.scene, {sign: node.GetNodeReferenceID(role) for sign, role in CLICK_LIST_ROLES.items()})
        for sign, role in CLICK_LIST_ROLES.items():
            node.SetNodeReferenceID(role, lists[sign].GetID())
        return lists

    def pointPlaced(self, listID: str, pointID: str) -> None:
        """A point was placed in a click list (``PointPositionDefinedEvent``, handled after it): refine there, or remove it
        and say why not."""
        pointList = self.scene.GetNodeByID(listID)
        if self.parameters is None or pointList is None or listID not in self.clickListIDs():
            return  # the scene closed meanwhile, or not a click list
        positive = listID == self.parameters.node.GetNodeReferenceID(CLICK_LIST_ROLES[True])
        marker = Marker(listID, pointID)
        point = [0.0, 0.0, 0.0]
        index = pointList.GetNthControlPointIndexByID(pointID)
        problem = self.problem() or ("" if index >= 0 and pointList.GetNthControlPointPositionWorld(index, point) else
                                     "The point was removed before it could be used.")
        if problem:
            self._removePoint(marker)
            self.view.showRefineStatus(problem)
            return
        try:
            session = self._session()
            session.click(point, self.region(), positive, marker)
        except (MAGMSError, OSError, RuntimeError) as err:
            self._removePoint(marker)
            self.stop()
            self.view.showError(f"Refine: {err}")
            return
        self.view.showRefineStatus("Starting the worker and opening the case (first click only)..." if not session.opened
                                   else "Refining...")

    def _session(self) -> RefineSession:
        if self.session is not None and self._sessionKey == self._key() and self.session.running:
            return self.session
        self.stop()
        folder, info = self.model()
        volumes = checkMapping(self.scene, self.mapping(), info.slots)
        self.session = self.newSession(self.scene, self.segmentationNode, volumes, folder, info, self.engineChoice(), self.preprocess())
        self._sessionKey = self._key()
        self.session.start()
        return self.session

    def undo(self) -> None:
        """Take the last click back: its box as it was, its point removed."""
        if self.session is not None and self.session.busy:
            self.view.showRefineStatus("A click is being applied: undo once it is.")
            return
        marker = self.session.undo() if self.session is not None else None
        if marker is None:
            self.view.showRefineStatus("No click to undo.")
            return
        self._removePoint(marker)
        self.view.showRefineStatus(f"Click undone ({len(self.session.history)} left).")

    def clear(self) -> None:
        """Take every click back, and every point of the click lists."""
        if self.session is not None and self.session.busy:
            self.view.showRefineStatus("A click is being applied: clear once it is.")
            return
        markers = self.session.clear() if self.session is not None else []
        self._removeAllPoints()
        self.view.showRefineStatus(f"{len(markers)} click(s) undone." if markers else "No click to undo.")

    def poll(self) -> None:
        """Called by the panel's timer: the worker's replies reach the segments."""
        if self.session is None:
            return
        try:
            events = self.session.poll()
        except (MAGMSError, ValueError) as err:  # a reply that cannot be written into the segments
            logger.exception("a refinement reply could not be applied")
            self.stop()
            self.view.showError(f"Refine: {err}")
            return
        for kind, detail in events:
            if kind == "opened":
                self.view.showRefineStatus("Worker ready." + "".join(f" {note}" for note in detail))
            elif kind == "clicked":
                self.view.showRefineStatus(f"Click {len(self.session.history)} applied in {detail:.2f} s.")
            elif kind == "refused":
                message, marker = detail
                self._removePoint(marker)
                self.view.showRefineStatus(f"Click not applied: {message}")
            else:  # error, ended
                self.view.showError(f"Refine: {detail}")
                if kind == "ended":
                    self.stop()

    def stop(self) -> None:
        """End the worker (module closed, scene closed, another model or case). The segments stay as they are; the
        clicks can no longer be undone, so their points go."""
        if self.session is not None:
            self.session.stop()
            self._removeAllPoints()
        self.session, self._sessionKey = None, None

    def _removePoint(self, marker: Marker) -> None:
        pointList = self.scene.GetNodeByID(marker.listID)
        index = pointList.GetNthControlPointIndexByID(marker.pointID) if pointList is not None else -1
        if index >= 0:
            pointList.RemoveNthControlPoint(index)

    def _removeAllPoints(self) -> None:
        for listID in self.clickListIDs():
            pointList = self.scene.GetNodeByID(listID)
            if pointList is not None:
                pointList.RemoveAllControlPoints()
