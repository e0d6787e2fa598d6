"""Whole-volume inference from any subset of a bundle's modalities.

The steps, each of which can refuse its input with a message naming the file or slot:

1. **Inputs.** Read and check every input (:mod:`magms.data.inputs`). The reference is the first present
   slot in the bundle's order. Inputs on the reference grid pass; inputs on another grid that
   overlaps it are resampled onto it, with a note; inputs that do not overlap it are refused.
2. **Preprocessing.** Do exactly what the bundle records, with MONAI transforms: orientation,
   spacing, per-modality z-score inside the non-zero foreground.
3. **Network.** MONAI sliding-window inference with the bundle's patch size, overlap and blending.
   It runs under ``torch.inference_mode`` with windows batched, and uses AMP on CUDA. Only the
   present modalities' encoders run. With flip test-time augmentation (the bundle's
   ``postprocessing.flip_axes``) each window's softmax is averaged over its flips. If CUDA runs out
   of memory, stitching moves to the CPU, then the whole run does.
4. **Output.** The spatial transforms are inverted, so the probabilities come back onto the
   reference input's own grid, followed by an argmax, the bundle's label values and its size
   rules (:mod:`magms.postprocess`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference

from magms.bundle import load_bundle
from magms.config import PostprocessConfig, PreprocessConfig
from magms.data.inputs import prepare_inputs
from magms.data.preprocessing import normalize, run_in_foreground
from magms.data.tensors import sitk_to_metatensor, spatial_transform
from magms.devices import resolve_device
from magms.networks import MAGMSNet
from magms.postprocess import apply_size_rules, check_postprocessing, flip_averaged

__all__ = ["Segmentation", "Segmenter"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


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
        seconds: wall time of the network part.
    """

    labels: np.ndarray
    reference: sitk.Image
    present: tuple[str, ...]
    reference_slot: str
    probabilities: np.ndarray | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def _window_count(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    # the same grid of windows as MONAI's sliding_window_inference (after padding to roi)
    padded = tuple(max(s, r) for s, r in zip(shape, roi))
    interval = tuple(r if r == s else max(int(r * (1 - overlap)), 1) for s, r in zip(padded, roi))
    return len(dense_patch_slices(padded, roi, interval))


class Segmenter:
    """Runs a bundle on cases with any subset of its modalities.

    Args:
        bundle: bundle folder.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        sw_batch_size: windows per network call.
        amp: mixed precision on CUDA.
        postprocessing: instead of the bundle's (``PostprocessConfig()``: the network's labels as they are).
    """

    def __init__(
        self, bundle: str | os.PathLike[str], device: str = "auto", sw_batch_size: int = 2, amp: bool = True,
        postprocessing: PostprocessConfig | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.net: MAGMSNet
        self.net, self.info = load_bundle(bundle, device=self.device)
        self.sw_batch_size = sw_batch_size
        self.amp = amp
        self.postprocessing = self.info.postprocessing if postprocessing is None else postprocessing
        if postprocessing is not None:  # the bundle's own was checked when it was read
            check_postprocessing(postprocessing, self.info.scheme)

    @property
    def slots(self) -> tuple[str, ...]:
        return self.info.slots

    def segment(
        self,
        inputs: Mapping[str, str | os.PathLike[str] | sitk.Image],
        probabilities: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Segmentation:
        """Segment one case.

        Args:
            inputs: slot -> image path or SimpleITK image; any non-empty subset of :attr:`slots`.
            probabilities: also return the class probabilities.
            progress: called with (windows done, windows in all) as the network runs.
        """
        prepared = prepare_inputs(inputs, self.slots)
        present = tuple(prepared.images)
        pre = self.info.preprocessing
        volumes = [sitk_to_metatensor(prepared.images[s]) for s in present]  # the reference comes first
        image = MetaTensor(torch.cat([v.as_tensor() for v in volumes]), affine=volumes[0].affine)
        spatial = spatial_transform(pre)
        working = spatial(image)
        x, foreground = normalize(working.as_tensor(), pre.normalization)
        full = torch.zeros(1, len(self.slots), *x.shape[1:])
        for i, slot in enumerate(present):
            full[0, self.slots.index(slot)] = x[i]
        notes = list(prepared.notes)
        start = time.perf_counter()
        classes = self.info.labels.num_classes
        probs = run_in_foreground(full, foreground, lambda crop: self._run(crop, present, pre, notes, progress), classes)
        seconds = time.perf_counter() - start
        pred = MetaTensor(probs[0], meta=dict(working.meta))  # meta holds the working affine
        pred.applied_operations = working.applied_operations
        back = spatial.inverse(pred).as_tensor().float()  # (C, X, Y, Z) on the reference grid
        back = back.permute(0, 3, 2, 1).contiguous()  # -> (C, z, y, x)
        labels = self.info.labels.decode(back.argmax(dim=0).numpy())
        voxel_ml = float(np.prod(prepared.reference.GetSpacing())) / 1000.0
        labels = apply_size_rules(labels, self.info.scheme, self.postprocessing.size_rules, voxel_ml)
        logger.info("segmented %s in %.1f s (%s)", "+".join(present), seconds, self.device)
        return Segmentation(
            labels=labels,
            reference=prepared.reference,
            present=present,
            reference_slot=prepared.reference_slot,
            probabilities=back.numpy() if probabilities else None,
            notes=notes,
            seconds=seconds,
        )

    def _run(self, x: torch.Tensor, present: tuple[str, ...], pre: PreprocessConfig, notes: list[str], progress: ProgressCallback | None) -> torch.Tensor:
        total = _window_count(tuple(x.shape[2:]), pre.patch_size, pre.overlap)
        done = 0

        def probabilities(window: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(window, present=list(present)).float(), dim=1)

        flipped = flip_averaged(probabilities, self.postprocessing.flip_axes)

        def predictor(window: torch.Tensor) -> torch.Tensor:
            nonlocal done
            probs = flipped(window)
            done = min(done + window.shape[0], total)
            if progress is not None:
                progress(done, total)
            return probs

        def infer(sw_device: torch.device, device: torch.device) -> torch.Tensor:
            nonlocal done
            done = 0
            amp = self.amp and sw_device.type == "cuda"
            dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
            ctx = torch.autocast("cuda", dtype=dtype) if amp else contextlib.nullcontext()
            with torch.inference_mode(), ctx:
                return sliding_window_inference(
                    x.to(sw_device), pre.patch_size, self.sw_batch_size, predictor, overlap=pre.overlap,
                    mode=pre.blend_mode, sw_device=sw_device, device=device,
                ).cpu()

        if self.device.type != "cuda":
            return infer(self.device, self.device)
        try:
            return infer(self.device, self.device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            notes.append("CUDA ran out of memory: windows on the GPU, stitching on the CPU")
        try:
            return infer(self.device, torch.device("cpu"))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            notes.append("CUDA ran out of memory again: running on the CPU")
        self.net.cpu()
        self.device = torch.device("cpu")
        return infer(self.device, self.device)
