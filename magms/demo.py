"""``magms demo``: the main job end to end on the real sample data, with the built-in model.

1. The model: the built-in one (:mod:`magms.builtin`), a bundle given with ``--model``, or, with
   ``--train``, a light model trained here for a few CPU minutes on the labelled BraTS 2013 sample
   cases (``brats_flair_t1c/``; reused from ``OUT/model`` when it is there).
2. Every case in ``brats_unlabelled/`` is segmented from every subset of the model's modalities
   that it has, the slots guessed from the file names.
3. So are the labelled sample cases the model was not trained on (its validation cases, found by
   name in the sample-data folders), and each subset's Dice is measured.
4. Written: ``OUT/<case>/<subset>.seg.nrrd`` (a Slicer segmentation) and ``OUT/<case>/<subset>.png``
   (an overlay through the tumour) for every run, and the per-subset table of the labelled cases,
   ``OUT/evaluation/`` (``summary.md``, ``heatmap.png``, ``metrics.csv``, as ``magms evaluate``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from magms.bundle import METADATA_FILE, BundleInfo, OpenedModel
from magms.config import PreprocessConfig, TrainConfig
from magms.data.cases import Case, case_from_folder, find_cases
from magms.data.io import write_labelmap
from magms.errors import ImageError
from magms.inference import Segmentation, Segmenter
from magms.inference.usecases import each_subset
from magms.labels import LabelScheme
from magms.overlay import render_overlay

__all__ = ["TRAIN_DATA", "UNLABELLED", "EVALUATION", "run_demo", "train_sample_model", "held_out_cases"]

logger = logging.getLogger(__name__)

TRAIN_DATA = Path("brats_flair_t1c")
UNLABELLED = Path("brats_unlabelled")
EVALUATION = Path("evaluation")


def train_sample_model(
    data: Path,
    model: Path,
    minutes: float,
    device: str = "auto",
    spacing: float = 2.0,
    patch: int = 48,
    channels: tuple[int, ...] = (16, 32, 64, 128),
    emit: Callable[[str], None] = print,
    progress: Callable[[dict], None] | None = None,
) -> Path:
    """A light FLAIR + T1c model trained for ``minutes`` on the BraTS 2013 sample cases, in ``model``
    (reused, or resumed, when a run is there already)."""
    from magms.training import train

    if (model / METADATA_FILE).is_file():
        emit(f"using the model in {model} (delete it to train again)")
        return model
    if not (data / TRAIN_DATA).is_dir():
        raise ImageError(f"{data / TRAIN_DATA}: sample data not found (give --data, or set MAGMS_TEST_DATA)")
    emit(f"training on {data / TRAIN_DATA} for up to {minutes:g} minutes -> {model}")
    cases = find_cases(data / TRAIN_DATA, ("flair", "t1c"))
    train(
        cases, model, "brats2013", ("flair", "t1c"), net_overrides={"channels": channels},
        preprocessing=PreprocessConfig(spacing=(spacing,) * 3, patch_size=(patch,) * 3, overlap=0.5),
        config=TrainConfig(epochs=1000, max_minutes=minutes, val_fraction=0.25, val_every=1000, samples_per_case=4, batch_size=1),
        device=device, resume=(model / "checkpoint").is_dir(), progress=progress,
    )
    return model


def held_out_cases(data: Path, info: BundleInfo) -> list[Case]:
    """The labelled sample cases a bundle was validated on, not trained on: its provenance's
    ``validation_cases`` found by name in the sample-data folders, each with its label scheme."""
    schemes = info.training.get("case_schemes") or {}
    cases = []
    for name in info.training.get("validation_cases") or []:
        folders = sorted(p for p in data.glob(f"*/{name}") if p.is_dir())
        if not folders:
            continue
        case = case_from_folder(folders[0], info.slots)
        if case.label is not None:
            cases.append(dataclasses.replace(case, scheme=schemes.get(name)))
    return cases


def run_demo(
    data: Path,
    out: Path,
    model: OpenedModel | Path,
    device: str = "auto",
    emit: Callable[[str], None] = print,
    engine: str = "auto",
    precision: str = "auto",
) -> list[Path]:
    """Segment the sample cases with ``model`` from every subset they have; returns the files written.

    ``engine`` and ``precision`` are those of ``magms segment`` (:mod:`magms.inference.engine`); the engine's
    notes (what auto chose, an export) are emitted first.

    Raises:
        ImageError: the sample-data folder is missing.
    """
    from magms.evaluate import dice_table, evaluate, write_reports

    if not (data / UNLABELLED).is_dir():
        raise ImageError(f"{data / UNLABELLED}: sample data not found (give --data, or set MAGMS_TEST_DATA)")
    segmenter = Segmenter(model, device=device, engine=engine, precision=precision)
    info = segmenter.info
    emit(f"model {segmenter.model.folder}: slots {', '.join(info.slots)}, labels {info.scheme.key}, "
         f"network run by {segmenter.predictor.engine}")
    for note in segmenter.notes:
        emit(f"note: {note}")
    written: list[Path] = []

    def keep(case: Case, result: Segmentation) -> None:
        paths = _write_result(out, case, result, info.scheme)
        used = " + ".join(f"{s} ({case.images[s].name})" for s in result.present)
        emit(f"{case.name}: {used} -> {case.name}/{paths[0].name}, {paths[1].name} ({result.seconds:.1f} s)")
        written.extend(paths)

    for folder in sorted(p for p in (data / UNLABELLED).iterdir() if p.is_dir()):
        case = case_from_folder(folder, info.slots)
        for _, result in each_subset(segmenter, case.images):
            keep(case, result)
    labelled = held_out_cases(data, info)
    if not labelled:
        emit("no labelled sample case the model was not trained on: no Dice table")
        return written
    rows: list[dict[str, object]] = []
    for scheme in dict.fromkeys(c.scheme for c in labelled):
        group = [c for c in labelled if c.scheme == scheme]
        rows += evaluate(segmenter, group, data_labels=scheme, on_result=keep)
    reports = write_reports(rows, out / EVALUATION, info.scheme, overwrite=True)
    emit(f"Dice per modality subset on {len(labelled)} held-out case(s) ({', '.join(c.name for c in labelled)}):")
    for line in dice_table(rows, info.scheme):
        emit(line)
    return written + reports


def _write_result(out: Path, case: Case, result: Segmentation, scheme: LabelScheme) -> list[Path]:
    """``OUT/<case>/<subset>.seg.nrrd`` and ``OUT/<case>/<subset>.png`` of one run."""
    subset = "+".join(result.present)
    folder = out / case.name
    folder.mkdir(parents=True, exist_ok=True)
    seg, png = folder / f"{subset}.seg.nrrd", folder / f"{subset}.png"
    write_labelmap(result.labels, result.reference, seg, scheme, overwrite=True)
    title = f"{case.name}: " + " + ".join(result.present)
    render_overlay(result.reference, result.labels, scheme, png, title=title)
    return [seg, png]
