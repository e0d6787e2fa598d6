"""Interactive refinement of a MAGMS segmentation in the scene: clicks, the worker, the segments updated in place.

A :class:`RefineSession` holds one segmentation, the volumes it was made from and a ``magms serve`` worker
(:class:`~MAGMSCommonLib.worker.WorkerProcess`). The worker opens the case once (the volumes written to a
temporary folder, as ``magms segment`` gets them), then each click is a request; its reply is the labels of the
box the click re-ran (:class:`~magms.protocol.LabelPatch`), on the reference volume's grid. Each label segment
takes the box's new content and keeps everything outside it, so edits the user made elsewhere stay. Undo puts back
what the box held before the click, the user's own edits in it included.

MRML only, no Qt (tested with ``slicer-core`` and a real worker).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from magms.bundle import BundleInfo
from magms.errors import ConfigError
from magms.protocol import EngineChoice, LabelPatch, decode_patch
from MAGMSCommonLib.child import childEnvironment, childPython
from MAGMSCommonLib.volumes import writeVolumes
from MAGMSCommonLib.worker import WorkerProcess

from .dicomexport import matchLabelSegments
from .labelmaps import labelArray, setSegmentMask

__all__ = ["RefineSession", "Marker", "CLICK_LIST_NAMES", "CLICK_COLOURS", "clickLists"]

#: The two point lists of the clicks, by sign, and their colours (green adds, red removes).
CLICK_LIST_NAMES = {True: "MAGMS clicks: add", False: "MAGMS clicks: remove"}
CLICK_COLOURS = {True: (0.2, 0.8, 0.2), False: (0.9, 0.2, 0.2)}


def clickLists(scene: slicer.vtkMRMLScene, existing: Mapping[bool, str | None]) -> dict[bool, Any]:
    """The point lists of the positive and the negative clicks: those with the IDs in ``existing`` when still in the
    scene, else new ones (coloured by sign)."""
    lists = {}
    for positive in (True, False):
        node = scene.GetNodeByID(existing.get(positive) or "") if existing.get(positive) else None
        if node is None:
            node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(CLICK_LIST_NAMES[positive]))
            node.CreateDefaultDisplayNodes()
            # "SelectedColor is used if all control points are in 'selected' state, which is the default"
            # (Docs/developer_guide/script_repository/markups.md, v5.8.1)
            display = node.GetDisplayNode()
            display.SetSelectedColor(*CLICK_COLOURS[positive])
            display.SetColor(*CLICK_COLOURS[positive])
            display.SetPointLabelsVisibility(False)
            # the slice views only: in a 3D view a click would land on whatever surface is shown, the segments' own
            # included (a display node shown in no view refuses placement there: vtkMRMLMarkupsDisplayableManager.cxx)
            slices = scene.GetNodesByClass("vtkMRMLSliceNode")
            views = [slices.GetItemAsObject(i).GetID() for i in range(slices.GetNumberOfItems())]
            if views:
                display.SetViewNodeIDs(views)
        lists[positive] = node
    return lists


@dataclasses.dataclass(frozen=True)
class Marker:
    """A click's control point: its list node's ID and the point's own ID (an index shifts when a point before it goes)."""

    listID: str
    pointID: str


@dataclasses.dataclass
class _Click:
    marker: Marker
    region: str
    positive: bool
    started: float
    saved: dict[str, np.ndarray] | None = None  # segment ID -> the box before the click
    patch: LabelPatch | None = None


class RefineSession:
    """Clicks on one segmentation through one worker.

    Args:
        scene: the MRML scene.
        segmentationNode: the segmentation to refine; its label segments are named as the model's labels.
        volumes: (slot, volume node) in the model's slot order, the first the reference (as ``checkMapping`` gives them).
        bundle: the model's folder; ``info`` its record. The model must take clicks.
        engineChoice: device and engine of the worker's first, automatic segmentation.
        preprocess: how the worker prepares the volumes (``magms segment --preprocess``): as Apply did.
        python: the Python that runs ``magms serve`` (default: :func:`~MAGMSCommonLib.child.childPython`).
        worker: the worker process (tests may pass one).
    Raises:
        ConfigError: the model takes no clicks, or a label segment is missing (named).
    """

    def __init__(self, scene, segmentationNode, volumes, bundle: Path, info: BundleInfo, engineChoice: EngineChoice = EngineChoice(),
                 preprocess: str = "none", python: str | None = None, worker: WorkerProcess | None = None) -> None:
        if not info.network.click_regions:
            raise ConfigError(f"the model in {bundle} takes no clicks: refine with a model that does (the built-in model, "
                              "or one trained with --max-clicks)")
        self.scene, self.segmentationNode, self.volumes = scene, segmentationNode, list(volumes)
        self.reference = self.volumes[0][1]
        self.bundle, self.info, self.engineChoice, self.preprocess = Path(bundle), info, engineChoice, preprocess
        self.python = python or childPython()
        self.worker = worker or WorkerProcess()
        # the label segments (other segments, the user's own, are left alone)
        self.segments = matchLabelSegments(segmentationNode, info.scheme)[0]  # (segment ID, label value)
        missing = [label.name for label in info.scheme.labels if label.value and label.value not in {v for _, v in self.segments}]
        if missing:
            raise ConfigError(f"'{segmentationNode.GetName()}' has no segment {', '.join(map(repr, missing))}: refine a segmentation "
                              "this model made (its segments keep the model's label names)")
        self.folder: Path | None = None
        self.opened = False
        self._pending: dict[int, _Click | str] = {}
        self.history: list[_Click] = []

    @property
    def running(self) -> bool:
        return self.worker.running

    @property
    def busy(self) -> bool:
        """A click was sent and its reply has not come yet."""
        return any(isinstance(request, _Click) for request in self._pending.values())

    def start(self) -> None:
        """Write the volumes to a temporary folder, start the worker and ask it to open the case.

        Raises:
            ConfigError: a volume could not be written; OSError: the worker cannot start (nothing is left behind).
        """
        self.folder = Path(tempfile.mkdtemp(prefix="magms-refine-"))
        try:
            inputs = writeVolumes(self.volumes, self.folder)
            choice = self.engineChoice
            self.worker.start([self.python, "-m", "magms", "serve", "--model", str(self.bundle), "--device", choice.device,
                               "--engine", choice.engine, "--preprocess", self.preprocess], env=childEnvironment())
            self._pending[self.worker.send("open", inputs={slot: str(path) for slot, path in inputs.items()})] = "open"
        except BaseException:
            self.stop()
            raise

    def click(self, pointRAS, region: str, positive: bool, marker: Marker) -> None:
        """Ask the worker to correct ``region`` at a point (world RAS); the segments change when its reply comes (:meth:`poll`)."""
        if not self.running:
            self.start()
        requestID = self.worker.send("click", point=[float(v) for v in pointRAS], frame="RAS", region=region, positive=positive)
        self._pending[requestID] = _Click(marker, region, positive, time.monotonic())

    def poll(self) -> list[tuple[str, Any]]:
        """Handle the worker's replies. Returns what happened, in order: ``("opened", notes)``, ``("clicked", click seconds)``,
        ``("refused", (message, marker))`` (the click's point should go), ``("error", message)``, ``("ended", message)``."""
        events: list[tuple[str, Any]] = []
        for reply in self.worker.poll():
            if reply.get("ended"):
                events.append(("ended", reply["error"]))
                self._pending.clear()
                continue
            request = self._pending.pop(reply.get("id"), None)
            if request is None:
                if not reply.get("ok") and not reply.get("ready"):
                    events.append(("error", reply.get("error", "")))
                continue
            if request == "open":
                self.opened = bool(reply["ok"])
                events.append(("opened", reply.get("notes", [])) if reply["ok"] else ("error", reply["error"]))
            elif isinstance(request, _Click):
                if not reply["ok"]:
                    events.append(("refused", (reply["error"], request.marker)))
                    continue
                request.patch = decode_patch(reply["patch"])
                request.saved = self._write(request.patch)
                self.history.append(request)
                events.append(("clicked", time.monotonic() - request.started))
        return events

    def undo(self) -> Marker | None:
        """Put back what the last click's box held; returns that click's marker (None without a click)."""
        if not self.history:
            return None
        last = self.history.pop()
        self._restore(last)
        if self.running:
            self.worker.send("undo")  # the worker drops that click too; its own box content is not needed
        return last.marker

    def clear(self) -> list[Marker]:
        """Undo every click, newest first; returns their markers."""
        markers = []
        while self.history:
            markers.append(self.undo())
        return markers

    def stop(self) -> None:
        """End the worker and remove the temporary folder; the segments stay as they are, the undo history goes."""
        self.worker.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self.opened, self._pending, self.history = None, False, {}, []

    # --- the segments --------------------------------------------------------------------------

    def _write(self, patch: LabelPatch) -> dict[str, np.ndarray]:
        """Each label segment takes the voxels of the patch's box that the click changed (the whole box when the patch
        does not say), so an edit the user made in the box stays where the click changed nothing; returns what each
        segment held in the box before."""
        dims = self.reference.GetImageData().GetDimensions()[::-1]
        if any(r.stop > n for r, n in zip(patch.region, dims)):
            raise ConfigError(f"the worker's box {patch.start} + {patch.labels.shape[::-1]} lies outside '{self.reference.GetName()}'")
        return self._setBox(patch.region, {segmentID: patch.labels == value for segmentID, value in self.segments}, patch.changed)

    def _restore(self, click: _Click) -> None:
        assert click.patch is not None and click.saved is not None
        self._setBox(click.patch.region, click.saved)

    def _setBox(self, region, contents: Mapping[str, np.ndarray], where: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each segment of ``contents`` takes its mask in ``region`` ((z, y, x) slices of the reference), only ``where``
        when given, the rest of it as it is; returns what each held in ``region`` before."""
        before = {}
        wasModifying = self.segmentationNode.StartModify()
        try:
            for segmentID, inside in contents.items():
                mask = labelArray(self.segmentationNode, self.reference, [(segmentID, 1)]) > 0
                before[segmentID] = mask[region].copy()
                mask[region] = inside if where is None else np.where(where, inside, before[segmentID])
                setSegmentMask(self.segmentationNode, segmentID, mask, self.reference)
        finally:
            self.segmentationNode.EndModify(wasModifying)
        return before
