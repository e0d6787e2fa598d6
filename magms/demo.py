"""``magms demo``: the main job end to end on the real sample data.

1. Unless ``OUT/model`` already holds a bundle, train a light model for a few CPU minutes on the
   labelled BraTS 2013 cases (FLAIR and post-contrast T1, ``brats_flair_t1c/``).
2. Segment every case in ``brats_unlabelled/`` with whichever of the model's modalities it has,
   the slots guessed from the file names.
3. For each case, write ``OUT/<case>.seg.nrrd`` (a Slicer segmentation) and ``OUT/<case>.png`` (an
   overlay through the tumour).

A few minutes of training on three cases make a rough model, not a clinical one. What the demo
shows is the whole path on real images: data in, model bundle, segmentation out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from magms.bundle import METADATA_FILE
from magms.data.cases import case_from_folder, find_cases
from magms.config import PreprocessConfig
from magms.errors import ImageError
from magms.inference import Segmenter
from magms.data.io import write_labelmap
from magms.overlay import render_overlay
from magms.config import TrainConfig
from magms.training import train

__all__ = ["TRAIN_DATA", "UNLABELLED", "run_demo"]

logger = logging.getLogger(__name__)

TRAIN_DATA = Path("brats_flair_t1c")
UNLABELLED = Path("brats_unlabelled")


def run_demo(
    data: Path,
    out: Path,
    minutes: float = 6.0,
    device: str = "auto",
    spacing: float = 2.0,
    patch: int = 48,
    channels: tuple[int, ...] = (16, 32, 64, 128),
    emit: Callable[[str], None] = print,
    progress: Callable[[dict], None] | None = None,
) -> list[Path]:
    """Train (if needed) and segment the sample data; returns the files written.

    Raises:
        ImageError: the sample-data folders are missing.
    """
    for sub in (TRAIN_DATA, UNLABELLED):
        if not (data / sub).is_dir():
            raise ImageError(f"{data / sub}: sample data not found (give --data, or set MAGMS_TEST_DATA)")
    model = out / "model"
    if (model / METADATA_FILE).is_file():
        emit(f"using the model in {model} (delete it to train again)")
    else:
        emit(f"training on {data / TRAIN_DATA} for up to {minutes:g} minutes -> {model}")
        cases = find_cases(data / TRAIN_DATA, ("flair", "t1c"))
        train(
            cases, model, "brats2013", ("flair", "t1c"), net_overrides={"channels": channels},
            preprocessing=PreprocessConfig(spacing=(spacing,) * 3, patch_size=(patch,) * 3, overlap=0.5),
            config=TrainConfig(epochs=1000, max_minutes=minutes, val_fraction=0.25, val_every=1000, samples_per_case=4, batch_size=1),
            device=device, resume=(model / "checkpoint").is_dir(), progress=progress,
        )
    segmenter = Segmenter(model, device=device)
    emit(f"model: slots {', '.join(segmenter.slots)}; validation {segmenter.info.validation}")
    written = []
    for folder in sorted(p for p in (data / UNLABELLED).iterdir() if p.is_dir()):
        case = case_from_folder(folder, segmenter.slots)
        result = segmenter.segment(case.images)
        seg = out / f"{case.name}.seg.nrrd"
        png = out / f"{case.name}.png"
        write_labelmap(result.labels, result.reference, seg, segmenter.info.labels, overwrite=True)
        used = " + ".join(f"{s} ({case.images[s].name})" for s in result.present)
        render_overlay(result.reference, result.labels, segmenter.info.labels, png, title=f"{case.name}: {used}")
        emit(f"{case.name}: {used} -> {seg.name}, {png.name} ({result.seconds:.1f} s)")
        written += [seg, png]
    return written
