"""Whole-volume inference from any subset of a bundle's modalities.

The steps, each of which can refuse its input with a message naming the file or slot:

1. **Inputs.** Read and check every input (:mod:`magms.data.inputs`). The reference is the first present
   slot in the bundle's order. Inputs on the reference grid pass; inputs on another grid that
   overlaps it are resampled onto it, with a note; inputs that do not overlap it are refused.
2. **Preprocessing.** Do exactly what the bundle records: orientation and spacing (the working grid
   of :mod:`magms.data.grid`, MONAI's, resampled with SimpleITK), per-modality z-score inside the
   foreground (:mod:`magms.data.preprocessing`), the crop to the foreground's box.
3. **Network.** Sliding windows (:mod:`magms.windows`, MONAI's windows and blending in numpy) with
   the bundle's patch size, overlap and blending, windows batched. Only the present modalities'
   encoders run. Each batch of windows goes to a :class:`~magms.inference.predictors.WindowPredictor`: the
   network itself in PyTorch (eager; mixed precision on CUDA, and the CPU when CUDA runs out of
   memory), or its exported graphs in OpenVINO or ONNX Runtime on the CPU (:mod:`magms.inference.predictors`).
   With flip test-time augmentation (the bundle's ``postprocessing.flip_axes``) each window's softmax
   is averaged over its flips.
4. **Output.** The probabilities of the box are resampled back onto the reference input's own
   grid (linearly, as MONAI's inverse does), followed by an argmax, the bundle's label values and
   its size rules (:mod:`magms.sizerules`).

Nothing here imports torch or MONAI: a run on exported graphs that are already cached starts in
a fraction of a second (``Testing/test_engines.py`` keeps it so); the eager engine imports torch
when it loads the network.

For review, :meth:`Segmenter.segment_subsets` and :meth:`Segmenter.segment_flips` run steps 3 and 4
several times on one case whose inputs went through steps 1 and 2 once: from each subset of the
inputs, or from each flip of the windows alone. Every output then lies on the same grid, the
reference input's, so that they compare voxel by voxel (:mod:`magms.review`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from magms.bundle import OpenedModel, open_model
from magms.config import PostprocessConfig
from magms.data.grid import to_reference, to_working, working_grid
from magms.data.inputs import PreparedInputs, prepare_inputs
from magms.data.preprocessing import foreground_box, foreground_mask, normalize
from magms.devices import device_name
from magms.errors import ConfigError
from magms.inference.postprocess import ALL_FLIPS, flip_combinations, flips_averaged
from magms.inference.predictors import WindowPredictor, make_predictor
from magms.modalities import subsets_of
from magms.protocol import EngineRan
from magms.sizerules import apply_size_rules
from magms.windows import sliding_window, window_count

__all__ = ["Segmentation", "Segmenter", "WorkingCase", "softmax"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
Flip = tuple[int, ...]


@dataclasses.dataclass
class WorkingCase:
    """A segmented case as the network saw it, for refinement (:mod:`magms.inference.refine`).

    Attributes:
        grid: the working grid (:func:`magms.data.grid.working_grid`).
        box: the foreground box on it (three slices, X Y Z): what the network ran on.
        image: (M, x, y, z) float32 network input over the box, one channel per bundle slot (absent ones 0).
        probabilities: (C, x, y, z) float32 class probabilities over the box.
    """

    grid: sitk.Image
    box: tuple[slice, slice, slice]
    image: np.ndarray
    probabilities: np.ndarray


@dataclasses.dataclass
class Segmentation:
    """Result of one case, on the reference input's grid.

    Attributes:
        labels: (z, y, x) label values of the bundle's scheme (SimpleITK array order).
        reference: the reference input image (its grid is the output's grid).
        present: the slots used, in bundle order.
        reference_slot: slot of the reference input.
        probabilities: (C, z, y, x) class probabilities, when asked for.
        notes: what was done that the user should know (resampling, fallbacks).
        seconds: wall time of the network part (not counting waits for another thread's network calls).
        engine: what ran the network, e.g. ``eager``, ``openvino fp32`` (:mod:`magms.inference.predictors`).
        working: the case on the working grid, when asked for (refinement starts from it).
    """

    labels: np.ndarray
    reference: sitk.Image
    present: tuple[str, ...]
    reference_slot: str
    probabilities: np.ndarray | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    engine: str = "eager"
    working: WorkingCase | None = None


@dataclasses.dataclass
class _Prepared:
    """One case after step 1 and the spatial part of step 2: what every run on it shares.

    Attributes:
        inputs: the checked inputs on the reference grid.
        grid: the working grid (:func:`magms.data.grid.working_grid`).
        working: (M, X, Y, Z) float32, the present slots in bundle order, on the working grid, not normalised.
        foreground: (M, X, Y, Z) bool, each channel's own foreground (:func:`foreground_mask`).
    """

    inputs: PreparedInputs
    grid: sitk.Image
    working: np.ndarray
    foreground: np.ndarray

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(self.inputs.images)

    def channels(self, subset: Sequence[str]) -> list[int]:
        return [self.present.index(s) for s in subset]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of (B, C, ...) float32 logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Segmenter:
    """Runs a bundle on cases with any subset of its modalities.

    Args:
        bundle: the opened bundle (:func:`magms.bundle.open_model`: nothing here reads ``magms.json`` again or
            hashes the weights again), or its folder, opened here.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        sw_batch_size: windows per network run (an engine that makes several runs at once gets as many times
            this in each call: :attr:`~magms.inference.predictors.WindowPredictor.parallel`).
        amp: mixed precision on CUDA.
        postprocessing: instead of the bundle's (``PostprocessConfig()``: the network's labels as they are).
        engine: what runs the network on each window: ``eager`` (the reference, in PyTorch),
            ``openvino``, ``onnxruntime`` or ``auto`` (:mod:`magms.inference.predictors`).
        precision: ``fp32``, or ``auto`` for the exported engine's own choice (bf16 in OpenVINO on
            CPUs with bf16 instructions).

    Attributes:
        model: the opened bundle; ``info`` is its :class:`~magms.bundle.BundleInfo`.
        predictor: the :class:`~magms.inference.predictors.WindowPredictor` every run goes through.
        notes: what the user should know about the engine (once, not per case).
    """

    def __init__(
        self, bundle: OpenedModel | str | os.PathLike[str], device: str = "auto", sw_batch_size: int = 2, amp: bool = True,
        postprocessing: PostprocessConfig | None = None, engine: str = "eager", precision: str = "fp32",
    ) -> None:
        self.model = bundle if isinstance(bundle, OpenedModel) else open_model(bundle)
        self.info = self.model.info
        self.predictor: WindowPredictor
        self.predictor, self.notes = make_predictor(self.model, device_name(device), engine, precision, amp)
        self.amp = amp
        self.sw_batch_size = sw_batch_size
        # one network call at a time: two threads may segment at once (magms segment --batch overlaps one
        # case's reading, resampling and writing with another's network)
        self._network = threading.Lock()
        self.postprocessing = self.info.postprocessing if postprocessing is None else postprocessing
        if postprocessing is not None:  # the bundle's own was checked when it was read
            postprocessing.check_against(self.info.scheme)

    @property
    def device(self) -> str:
        """Where the network runs now (``cpu`` after a CUDA out-of-memory fallback)."""
        return self.predictor.device

    def ran(self) -> EngineRan:
        """What runs the network now: the engine, its arithmetic and the device (:class:`~magms.protocol.EngineRan`)."""
        engine, _, precision = self.predictor.engine.partition(" ")  # "eager", or e.g. "openvino bf16"
        if not precision:  # eager: autocast on CUDA unless amp is off
            precision = "amp" if self.amp and self.device.startswith("cuda") else "fp32"
        return EngineRan(engine, precision, self.device)

    @property
    def slots(self) -> tuple[str, ...]:
        return self.info.slots

    def segment(
        self,
        inputs: Mapping[str, str | os.PathLike[str] | sitk.Image],
        probabilities: bool = False,
        progress: ProgressCallback | None = None,
        working: bool = False,
    ) -> Segmentation:
        """Segment one case.

        Args:
            inputs: slot -> image path or SimpleITK image; any non-empty subset of :attr:`slots`.
            probabilities: also return the class probabilities.
            progress: called with (windows done, windows in all) as the network runs.
            working: also return the case on the working grid (:class:`WorkingCase`).
        """
        prepared = self._prepare(inputs)
        return self._runs(prepared, [(prepared.present, self._own_flips(), probabilities)], progress, working)[0]

    def segment_subsets(
        self,
        inputs: Mapping[str, str | os.PathLike[str] | sitk.Image],
        subsets: Sequence[Sequence[str]] | None = None,
        probabilities: bool = False,
        progress: ProgressCallback | None = None,
    ) -> dict[tuple[str, ...], Segmentation]:
        """Segment one case from several subsets of its inputs, read and prepared once.

        Every output lies on the grid of the reference input of ``inputs`` (the first present slot),
        also that of a subset without it, so that the outputs compare voxel by voxel. With every
        input on that grid, each output is what :meth:`segment` gives for its subset alone.

        Args:
            inputs: slot -> image path or SimpleITK image, as for :meth:`segment`.
            subsets: the subsets to run, slots in any order (default: every non-empty subset of
                ``inputs``, smallest first, all of them last).
            probabilities: also return the class probabilities of the output from all of ``inputs``
                (the compared outputs keep labels only: their probabilities could take gigabytes).
            progress: called with (windows done, windows in all) over all the subsets together.
        Returns:
            Subset (slots in bundle order) -> its segmentation, in the order of ``subsets``.
        Raises:
            ConfigError: an empty subset, or one with a slot that ``inputs`` lacks.
        """
        prepared = self._prepare(inputs)
        if subsets is None:
            todo = subsets_of(prepared.present)
        else:
            todo = list(dict.fromkeys(self._subset(subset, prepared.present) for subset in subsets))
        variants = [(subset, self._own_flips(), probabilities and subset == prepared.present) for subset in todo]
        outputs = self._runs(prepared, variants, progress)
        return dict(zip(todo, outputs))

    def segment_flips(
        self,
        inputs: Mapping[str, str | os.PathLike[str] | sitk.Image],
        probabilities: bool = False,
        progress: ProgressCallback | None = None,
    ) -> tuple[Segmentation, dict[Flip, Segmentation]]:
        """Segment one case as :meth:`segment` does, and from each of the 8 flips of its windows
        alone (:func:`~magms.inference.postprocess.flip_combinations` of all three axes of the working grid),
        its inputs read and prepared once: a measure of the model's doubt when the case has one input.

        Without flip test-time augmentation in :attr:`postprocessing`, the first result is the
        no-flip one, run once.

        Args:
            inputs: slot -> image path or SimpleITK image, as for :meth:`segment`.
            probabilities: also return the class probabilities of the first result (the flips' outputs
                keep labels only).
            progress: called with (windows done, windows in all) over all the runs together.
        Returns:
            The segmentation of :meth:`segment`, and flip (working-grid axes, ``()`` for none) -> the
            segmentation from that flip alone, no flip first.
        """
        prepared = self._prepare(inputs)
        flips = flip_combinations(ALL_FLIPS)
        own = self._own_flips()
        variants = [(prepared.present, [flip], probabilities and own == [flip]) for flip in flips]
        if own != [()]:  # averaged over flips: a run of its own
            variants.insert(0, (prepared.present, own, probabilities))
        outputs = self._runs(prepared, variants, progress)
        return outputs[0], dict(zip(flips, outputs[len(outputs) - len(flips):]))

    def _own_flips(self) -> list[Flip]:
        return flip_combinations(self.postprocessing.flip_axes)

    def _subset(self, subset: Sequence[str], present: tuple[str, ...]) -> tuple[str, ...]:
        """``subset`` in bundle order, checked against the inputs given."""
        missing = [s for s in subset if s not in present]
        if not subset or missing:
            reason = "is empty" if not subset else f"has slot(s) {', '.join(missing)} not among the inputs ({', '.join(present)})"
            raise ConfigError(f"subset {'+'.join(subset) or '()'} {reason}")
        return tuple(s for s in self.slots if s in subset)

    def _prepare(self, inputs: Mapping[str, str | os.PathLike[str] | sitk.Image]) -> _Prepared:
        """Step 1 and the spatial part of step 2, done once per case."""
        prepared = prepare_inputs(inputs, self.slots)
        grid = working_grid(prepared.reference, self.info.preprocessing)
        working = to_working(list(prepared.images.values()), grid)  # the reference comes first
        return _Prepared(prepared, grid, working, foreground_mask(working))

    def _runs(
        self, prepared: _Prepared, variants: Sequence[tuple[tuple[str, ...], list[Flip], bool]], progress: ProgressCallback | None,
        working: bool = False,
    ) -> list[Segmentation]:
        """Steps 2 (intensities) to 4 for each (subset, flips averaged, probabilities kept), with one progress over all."""
        pre = self.info.preprocessing
        totals = []
        for subset, _, _ in variants:
            # the windows each run will have: those of its foreground's box
            box = foreground_box(prepared.foreground[prepared.channels(subset)].any(axis=0))
            totals.append(window_count(tuple(b.stop - b.start for b in box), pre.patch_size, pre.overlap))
        results = []
        for (subset, flips, probabilities), offset in zip(variants, np.cumsum([0, *totals[:-1]])):
            step = None if progress is None else _shifted(progress, int(offset), sum(totals))
            results.append(self._segment_prepared(prepared, subset, flips, probabilities, step, working))
        return results

    def _segment_prepared(
        self, prepared: _Prepared, subset: tuple[str, ...], flips: list[Flip], probabilities: bool, progress: ProgressCallback | None,
        working: bool = False,
    ) -> Segmentation:
        """Segment the ``subset`` of a prepared case, averaging the network over ``flips``."""
        pre = self.info.preprocessing
        x, foreground = normalize(prepared.working[prepared.channels(subset)], pre.normalization)
        box = foreground_box(foreground)
        full = np.zeros((len(self.slots), *(b.stop - b.start for b in box)), np.float32)
        for i, slot in enumerate(subset):
            full[self.slots.index(slot)] = x[(i, *box)]
        notes = list(prepared.inputs.notes)
        fallbacks = len(self.predictor.notes)
        start, waited = time.perf_counter(), [0.0]

        def probabilities_of(windows: np.ndarray) -> np.ndarray:
            asked = time.perf_counter()
            with self._network:
                waited[0] += time.perf_counter() - asked
                logits = self.predictor(windows, subset)
            return softmax(logits)

        inside = sliding_window(
            full, pre.patch_size, flips_averaged(probabilities_of, flips), pre.overlap, pre.blend_mode,
            self.sw_batch_size * self.predictor.parallel, progress,
        )
        seconds = time.perf_counter() - start - waited[0]
        notes += self.predictor.notes[fallbacks:]
        indices, back = to_reference(inside, box, prepared.grid, prepared.inputs.reference, keep=probabilities)
        labels = self.info.labels.decode(indices)
        voxel_ml = float(np.prod(prepared.inputs.reference.GetSpacing())) / 1000.0
        labels = apply_size_rules(labels, self.info.scheme, self.postprocessing.size_rules, voxel_ml)
        logger.info("segmented %s in %.1f s (%s, %s)", "+".join(subset), seconds, self.device, self.predictor.engine)
        return Segmentation(
            labels=labels,
            reference=prepared.inputs.reference,
            present=subset,
            reference_slot=prepared.inputs.reference_slot,
            probabilities=back,
            notes=notes,
            seconds=seconds,
            engine=self.predictor.engine,
            working=WorkingCase(prepared.grid, box, full, inside) if working else None,
        )


def _shifted(progress: ProgressCallback, offset: int, total: int) -> ProgressCallback:
    """``progress`` of one run among several: its windows counted after ``offset`` others, out of ``total``."""
    return lambda done, _: progress(offset + done, total)
