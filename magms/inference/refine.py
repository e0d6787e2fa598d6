"""Interactive refinement: clicks that correct a segmentation, re-running the network around each click only.

A :class:`Refiner` holds one case in memory: its network input and class probabilities on the working
grid (:class:`~magms.inference.segmenter.WorkingCase`) and its labels on the reference grid. A click is a
point in physical space, a sign and a region of the label scheme (WT, TC or ET for BraTS). It runs the
click-guided network (:class:`~magms.networks.guidance.ClickGuidance`) on the window of the bundle's patch size
centred on the click, encoding it once and decoding it with and without the new click (the earlier ones near
the window in both). The difference, the click's own effect, is added to the case's probabilities, in full in
the window's centre and fading towards the window's sides that lie inside the segmented box, so they leave no
seam; then the clicked spot itself (:func:`settle_clicked_spot`) is made what the click says. Nothing outside the
window changes. Only the part of the reference grid the window covers is resampled, and there only the voxels
whose class the click changed are relabelled: what the automatic result's size rules removed stays removed unless
the click brings it back. That part comes back as a :class:`~magms.protocol.LabelPatch` to paste into the
segmentation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from magms.bundle import OpenedModel, load_network, open_model
from magms.clicks import CLICK_SIGMA, ClickPoint, click_maps, neighbourhood
from magms.data.grid import reference_region, to_reference
from magms.errors import ConfigError
from magms.inference.predictors import EagerPredictor
from magms.inference.segmenter import Segmentation, Segmenter, WorkingCase, softmax
from magms.protocol import LabelPatch
from magms.windows import window_padding

__all__ = ["FRAMES", "ClickRequest", "Refiner", "blend_weight", "read_clicks", "settle_clicked_spot", "to_lps"]

#: Frames a click's coordinates may be given in: RAS (Slicer's world) or LPS (DICOM's, ITK's).
FRAMES = ("RAS", "LPS")
#: Width, in working voxels, over which a refined window fades into the probabilities around it.
FADE_VOXELS = 8


def to_lps(point: Sequence[float], frame: str) -> tuple[float, float, float]:
    """A physical point in ``frame`` (:data:`FRAMES`) as LPS, the frame of SimpleITK images."""
    if frame not in FRAMES:
        raise ConfigError(f"coordinate frame {frame!r}: expected one of {', '.join(FRAMES)}")
    if len(point) != 3:
        raise ConfigError(f"a click needs three coordinates, got {list(point)}")
    x, y, z = (float(v) for v in point)
    return (-x, -y, z) if frame == "RAS" else (x, y, z)


@dataclasses.dataclass(frozen=True)
class ClickRequest:
    """A click as a user gives it: a physical point (LPS), a region key, a sign."""

    point: tuple[float, float, float]
    region: str
    positive: bool


def read_clicks(path: str | os.PathLike[str]) -> list[ClickRequest]:
    """The clicks of a ``magms segment --clicks`` file, in their order, as LPS points.

    The file is JSON: ``{"frame": "RAS", "clicks": [{"point": [x, y, z], "region": "wt", "positive": true}, ...]}``;
    ``frame`` is ``RAS`` (Slicer's world coordinates) or ``LPS`` (DICOM's and ITK's).

    Raises:
        ConfigError: the file does not read as that, naming the file and the fault.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"--clicks {path}: cannot read it as JSON ({err})") from None
    if not isinstance(data, dict) or set(data) != {"frame", "clicks"} or not isinstance(data["clicks"], list):
        raise ConfigError(f'--clicks {path}: expected {{"frame": "RAS" or "LPS", "clicks": [...]}}, got {str(data)[:80]}')
    clicks = []
    for number, item in enumerate(data["clicks"], 1):
        ok = isinstance(item, dict) and set(item) == {"point", "region", "positive"}
        ok = ok and isinstance(item["region"], str) and isinstance(item["positive"], bool) and isinstance(item["point"], list)
        if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item["point"]):
            raise ConfigError(f'--clicks {path}: click {number} must be {{"point": [x, y, z], "region": "...", '
                              f'"positive": true or false}}, got {item!r}')
        try:
            point = to_lps(item["point"], data["frame"])
        except ConfigError as err:
            raise ConfigError(f"--clicks {path}: click {number}: {err}") from None
        clicks.append(ClickRequest(point, item["region"], item["positive"]))
    return clicks


@dataclasses.dataclass
class _Step:
    """What one click changed, for undo."""

    point: ClickPoint
    window: tuple[slice, slice, slice]
    probabilities: np.ndarray  # the window's probabilities before the click
    update: LabelPatch  # the labels before the click


def blend_weight(window: Sequence[slice], shape: Sequence[int], fade: int = FADE_VOXELS) -> np.ndarray:
    """(x, y, z) weight of a refined window in the case: 1 inside, falling linearly to near 0 over ``fade`` voxels
    towards each side of the window that lies inside the case's box (of ``shape``). A side on the box's own border
    does not fade: beyond it there is nothing to blend with, and a click there must have its full effect.
    """
    weight = np.ones((), np.float32)
    for part, n in zip(window, shape):
        i = np.arange(part.stop - part.start, dtype=np.float32)
        edge = np.full(i.shape, np.inf, np.float32)
        if part.start > 0:
            edge = np.minimum(edge, i + 0.5)
        if part.stop < n:
            edge = np.minimum(edge, i[::-1] + 0.5)
        weight = weight[..., None] * np.minimum(1.0, edge / fade)
    return weight


def settle_clicked_spot(probabilities: np.ndarray, centre: Sequence[float], classes: Sequence[int], positive: bool,
                        radius: float = CLICK_SIGMA) -> None:
    """Make the clicked spot what the click says, in place: within ``radius`` voxels of ``centre``, the classes the
    click rules out (outside the region ``classes`` for a positive click, inside it for a negative one) get
    probability 0. The network's guidance usually does this itself; on a scan unlike its training it may fall short,
    and a click that leaves its own spot unchanged only makes the user click there again.

    Args:
        probabilities: (C, x, y, z) probabilities (or their unnormalised update) of a window, changed in place.
        centre: the click as a voxel index into the window; outside it, only the part of the spot inside changes.
        classes: the class indices of the clicked region.
        positive: the click's sign.
        radius: in voxels.
    """
    near = neighbourhood(centre, radius, probabilities.shape[1:])
    if near is None:
        return
    box, d2 = near
    spot = d2 <= radius**2
    allowed = np.isin(np.arange(probabilities.shape[0]), classes) == positive
    part = probabilities[(slice(None), *box)]
    values = part[:, spot]
    values[~allowed] = 0.0
    values[allowed] += 1e-6  # never all zero: the allowed classes keep their order
    part[:, spot] = values


class Refiner:
    """One case, segmented, then corrected click by click.

    Args:
        bundle: the opened bundle or its folder, whose network must take clicks (``click_regions`` in ``magms.json``),
            or a :class:`~magms.inference.segmenter.Segmenter` of such a bundle (its engine and post-processing
            make the first, automatic segmentation).
        device: where the network runs (``cpu``, ``cuda``, ``auto``); not with a Segmenter.
        engine: the engine of the first, automatic segmentation; not with a Segmenter. The clicks always run
            the network in PyTorch.

    Examples::

        refiner = Refiner("Resources/Models/brats-glioma-4seq")
        first = refiner.open({"flair": "flair.nii.gz", "t1c": "t1c.nii.gz"})
        update = refiner.click((-12.0, 30.5, 8.0), "wt", positive=True, frame="RAS")
        labels = refiner.labels  # the whole result; update.labels is what changed
    """

    def __init__(
        self, bundle: Segmenter | OpenedModel | str | os.PathLike[str], device: str = "cpu", engine: str = "eager"
    ) -> None:
        if isinstance(bundle, Segmenter):
            model = bundle.model
        else:
            model = bundle if isinstance(bundle, OpenedModel) else open_model(bundle)
        info = model.info
        if not info.network.click_regions:
            raise ConfigError(f"{model.folder}: this model takes no clicks (its network has no click guidance)")
        self.segmenter = bundle if isinstance(bundle, Segmenter) else Segmenter(model, device=device, engine=engine)
        predictor = self.segmenter.predictor
        self.net = predictor.net if isinstance(predictor, EagerPredictor) else load_network(model, device="cpu")
        self.device = predictor.device if isinstance(predictor, EagerPredictor) else "cpu"
        self.info = info
        self.regions = tuple(r.key for r in info.scheme.regions)
        self._case: WorkingCase | None = None
        self._result: Segmentation | None = None
        self._steps: list[_Step] = []

    # ----------------------------------------------------------------------------------------

    def open(self, inputs: Mapping[str, str | os.PathLike[str] | sitk.Image]) -> Segmentation:
        """Segment a case automatically and hold it for clicks (the clicks of a case opened before are dropped).

        Args:
            inputs: slot -> image path or SimpleITK image, any subset of the bundle's slots.
        Returns:
            The automatic segmentation. It is the case the clicks then correct: its ``labels`` are :attr:`labels`,
            changed in place by every click, undo and clear.
        """
        result = self.segmenter.segment(inputs, working=True)
        self._result, self._case, self._steps = result, result.working, []
        return result

    @property
    def labels(self) -> np.ndarray:
        """The case's labels now, (z, y, x) on the reference grid."""
        return self._opened()[0].labels

    @property
    def reference(self) -> sitk.Image:
        """The reference input, whose grid the labels lie on."""
        return self._opened()[0].reference

    @property
    def clicks(self) -> list[ClickPoint]:
        """The clicks so far, oldest first, indexed into the working grid's foreground box."""
        return [step.point for step in self._steps]

    def click(self, point: Sequence[float], region: str, positive: bool, frame: str = "LPS") -> LabelPatch:
        """Correct ``region`` at a physical point: positive adds its surroundings, negative removes them.

        Args:
            point: the click's physical coordinates in ``frame``.
            region: a region key of the bundle's scheme (e.g. ``wt``).
            positive: the sign of the click.
            frame: ``RAS`` or ``LPS``.
        Returns:
            The labels of the part of the reference grid that may have changed, and which of them did.
        Raises:
            ConfigError: no case open, an unknown region or frame, or a point outside the segmented part of the image.
        """
        result, case = self._opened()
        if region not in self.regions:
            raise ConfigError(f"region {region!r}: this model's regions are {', '.join(self.regions)}")
        index = np.asarray(case.grid.TransformPhysicalPointToContinuousIndex(to_lps(point, frame)))
        index -= [b.start for b in case.box]
        shape = case.probabilities.shape[1:]
        if np.any(index < -0.5) or np.any(index > np.asarray(shape) - 0.5):
            raise ConfigError(f"click at {list(point)} ({frame}) lies outside the part of the image the model segmented")
        new = ClickPoint(tuple(float(v) for v in index), positive, self.regions.index(region))
        window = self._window(index, shape)
        old = case.probabilities[(slice(None), *window)].copy()
        change = self._correction(window, [*self.clicks, new])
        updated = np.maximum(old + blend_weight(window, shape) * change, 0.0)
        settle_clicked_spot(updated, index - [w.start for w in window], self.info.scheme.region_indices(region), positive)
        case.probabilities[(slice(None), *window)] = updated / updated.sum(axis=0, keepdims=True)
        before = self._paste(window, old)
        self._steps.append(_Step(new, window, old, before))
        return LabelPatch.of(result.labels, before.region, before.labels)

    def undo(self) -> LabelPatch | None:
        """Take the last click back; the labels it changed return as they were. None when there is no click."""
        result, case = self._opened()
        if not self._steps:
            return None
        step = self._steps.pop()
        case.probabilities[(slice(None), *step.window)] = step.probabilities
        result.labels[step.update.region] = step.update.labels
        return step.update

    def clear(self) -> LabelPatch | None:
        """Take every click back: the automatic result again. None when there is no click."""
        updates = []
        while self._steps:
            updates.append(self.undo())
        if not updates:
            return None
        region = [slice(min(u.region[a].start for u in updates), max(u.region[a].stop for u in updates)) for a in range(3)]
        return LabelPatch.of(self._opened()[0].labels, region)

    # ----------------------------------------------------------------------------------------

    def _opened(self) -> tuple[Segmentation, WorkingCase]:
        if self._result is None or self._case is None:
            raise ConfigError("no case is open: open one before clicking")
        return self._result, self._case

    def _window(self, index: np.ndarray, shape: Sequence[int]) -> tuple[slice, slice, slice]:
        """The patch-sized window centred on ``index`` and moved inside the box (smaller where the box is)."""
        patch = self.info.preprocessing.patch_size
        starts = [int(np.clip(round(float(c) - p / 2), 0, max(0, n - p))) for c, p, n in zip(index, patch, shape)]
        return tuple(slice(s, min(s + p, n)) for s, p, n in zip(starts, patch, shape))  # type: ignore[return-value]

    def _correction(self, window: tuple[slice, slice, slice], points: Sequence[ClickPoint]) -> np.ndarray:
        """(C, window) change of the class probabilities that the last of ``points`` makes, the others given.

        The window is encoded once and decoded with and without the last click: their difference is the click's
        own effect. Adding only that to the case's probabilities keeps everything else as the sliding windows
        made it (one window alone, centred elsewhere, would not give their blend). The window is padded to the
        patch size as the sliding windows are (zeros, half before, half after).
        """
        import torch

        case = self._case
        assert case is not None
        patch = self.info.preprocessing.patch_size
        sizes = [w.stop - w.start for w in window]
        before = [b for b, _ in window_padding(sizes, patch)]
        x = np.zeros((1, case.image.shape[0], *patch), np.float32)
        inner = tuple(slice(b, b + n) for b, n in zip(before, sizes))
        x[(0, slice(None), *inner)] = case.image[(slice(None), *window)]
        origin = [w.start - b for w, b in zip(window, before)]
        maps = np.stack([click_maps(points, patch, len(self.regions), origin),
                         click_maps(points[:-1], patch, len(self.regions), origin)])
        present = list(self._opened()[0].present)
        with torch.inference_mode():
            fused = self.net.fuse(torch.from_numpy(x).to(self.device), present)
            both = tuple(f.expand(2, *f.shape[1:]) for f in fused)  # one decoder run for the two
            logits = self.net.decode(both, torch.from_numpy(maps).to(self.device)).float().cpu().numpy()
        probabilities = softmax(logits)
        return (probabilities[0] - probabilities[1])[(slice(None), *inner)]

    def _paste(self, window: tuple[slice, slice, slice], previous: np.ndarray) -> LabelPatch:
        """Bring the window's probabilities to the reference grid and relabel the voxels whose class they changed
        (``previous``: the window's probabilities before); returns the labels of the region as they were.

        Only a changed class is written: a voxel the click did not change keeps its label, so what the automatic
        result's size rules removed stays removed, and an earlier click's decision stays as it was.
        """
        result, case = self._opened()
        grid_window = tuple(slice(b.start + w.start, b.start + w.stop) for b, w in zip(case.box, window))
        region = reference_region(grid_window, case.grid, result.reference)
        if region is None:
            return LabelPatch((0, 0, 0), result.labels[:0, :0, :0].copy())
        # the source reaches a few voxels beyond the window, so that the region's border voxels interpolate
        # between probabilities of the case, not the background that lies outside the source
        shape = case.probabilities.shape[1:]
        source = tuple(slice(max(w.start - 3, 0), min(w.stop + 3, n)) for w, n in zip(window, shape))
        grid_source = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(case.box, source))
        now = case.probabilities[(slice(None), *source)]
        then = now.copy()
        then[(slice(None), *(slice(w.start - s.start, w.stop - s.start) for w, s in zip(window, source)))] = previous
        indices, _ = to_reference(now, grid_source, case.grid, result.reference)
        earlier, _ = to_reference(then, grid_source, case.grid, result.reference)
        before = LabelPatch.of(result.labels, region)
        changed = indices[region] != earlier[region]
        result.labels[region] = np.where(changed, self.info.scheme.decode(indices[region]), before.labels)
        return before
