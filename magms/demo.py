"""``magms demo``: build a MAG-MS network and run it on a real case for every modality subset.

A smoke run of the whole core on real anatomy: the slots are guessed from the file names, the
images read with SimpleITK, z-scored inside the brain, cropped around the brain's centre, and the
(untrained) network is run once per non-empty subset of the modalities found. It proves the
pipeline and shows the cost per subset; it does not segment anything meaningful.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from magms.cases import case_from_folder
from magms.config import NetConfig
from magms.errors import ImageError
from magms.io import read_image, same_grid
from magms.labels import get_scheme
from magms.modalities import MODALITIES
from magms.networks import build_network

__all__ = ["DEFAULT_CASE", "load_case", "run_demo"]

logger = logging.getLogger(__name__)

DEFAULT_CASE = Path("brats_unlabelled") / "BraTS-GLI-00001-000"
DEMO_SLOTS = ("flair", "t1", "t1c", "t2")


def _zscore_nonzero(a: np.ndarray) -> np.ndarray:
    # statistics inside the head only: the zero background would shrink the spread
    fg = a != 0
    if not fg.any():
        return a.astype(np.float32)
    mean, std = a[fg].mean(), a[fg].std()
    out = np.zeros_like(a, dtype=np.float32)
    out[fg] = (a[fg] - mean) / (std if std > 0 else 1.0)
    return out


def load_case(images: dict[str, Path], size: int) -> np.ndarray:
    """Read, check, normalise and crop the images of one case to a (M, size, size, size) array.

    Raises:
        ImageError: an image is unusable, or the images do not share one grid.
    """
    arrays, ref, ref_path = [], None, None
    for path in images.values():
        img = sitk.DICOMOrient(read_image(path), "LPS")
        if ref is None:
            ref, ref_path = img, path
        elif not same_grid(img, ref):
            raise ImageError(
                f"{path.name}: grid {img.GetSize()} at {img.GetSpacing()} mm differs from "
                f"{ref_path.name} {ref.GetSize()} at {ref.GetSpacing()} mm"
            )
        arrays.append(_zscore_nonzero(sitk.GetArrayFromImage(img)))
    volume = np.stack(arrays)  # (M, z, y, x)
    head = np.argwhere(np.any(volume != 0, axis=0))
    centre = ((head.min(0) + head.max(0)) // 2) if len(head) else np.array(volume.shape[1:]) // 2
    out = np.zeros((len(arrays), size, size, size), dtype=np.float32)
    src, dst = [], []
    for c, n in zip(centre, volume.shape[1:]):
        lo = int(c) - size // 2
        a, b = max(lo, 0), min(lo + size, n)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def run_demo(
    case: Path,
    backbone: str = "unet",
    size: int = 96,
    device: str = "cpu",
    seed: int = 0,
    emit: Callable[[str], None] = print,
) -> list[dict[str, object]]:
    """Run an untrained network on ``case`` for every non-empty subset; emit a markdown table.

    Returns:
        One row per subset: ``subset``, ``shape``, ``seconds``.
    """
    images = case_from_folder(case, DEMO_SLOTS).images
    volume = torch.from_numpy(load_case(images, size))
    torch.manual_seed(seed)
    scheme = get_scheme("brats2023")
    config = NetConfig(slots=DEMO_SLOTS, out_channels=len(scheme.labels), backbone=backbone, img_size=(size,) * 3)
    net = build_network(config).to(device).eval()
    x = torch.zeros(1, len(DEMO_SLOTS), size, size, size, device=device)
    for slot in images:
        x[0, DEMO_SLOTS.index(slot)] = volume[list(images).index(slot)]
    found = list(images)
    emit(f"case {case.name}: {', '.join(f'{MODALITIES[s].name} <- {p.name}' for s, p in images.items())}")
    emit(f"network: {backbone}, {sum(p.numel() for p in net.parameters()):,} parameters, input {size}^3, {device}")
    emit("")
    emit("| present modalities | output shape | seconds |")
    emit("|---|---|---|")
    rows = []
    for r in range(1, len(found) + 1):
        for subset in itertools.combinations(found, r):
            start = time.perf_counter()
            with torch.inference_mode():
                logits = net(x, list(subset))
            seconds = time.perf_counter() - start
            rows.append({"subset": subset, "shape": tuple(logits.shape), "seconds": seconds})
            emit(f"| {' + '.join(subset)} | {tuple(logits.shape)} | {seconds:.2f} |")
    return rows
