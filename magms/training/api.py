"""The functions behind ``magms train``: :func:`train` for callers, :func:`train_from_options` for the command line."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from magms.commands import TrainOptions
from magms.config import PreprocessConfig, TrainConfig
from magms.data.cases import Case, find_cases, slots_of
from magms.modalities import canonical_slots
from magms.protocol import STOP_REQUEST_FILE
from magms.training.trainer import Trainer, TrainJob

__all__ = ["train", "train_from_options"]


def train(
    cases: Sequence[Case],
    out: str | os.PathLike[str],
    labels: str,
    slots: Sequence[str],
    net_overrides: Mapping[str, Any] | None = None,
    preprocessing: PreprocessConfig | None = None,
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    resume: bool = False,
    init: str | os.PathLike[str] | None = None,
    stop: Callable[[int], bool] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    options: Mapping[str, Any] | None = None,
    preprocess: str = "none",
) -> Path | None:
    """Train a MAG-MS model and write it as a bundle in ``out``.

    Args:
        cases: labelled cases (see :mod:`magms.data.cases`).
        out: output folder (bundle, checkpoint, metrics.csv).
        labels: label scheme key of the label files.
        slots: modality slots of the model, in order.
        net_overrides: :class:`~magms.config.NetConfig` fields other than slots and classes.
        preprocessing: working spacing, orientation, patch size...
        config: training options.
        device: ``auto``, ``cpu``, ``cuda``.
        resume: continue from ``out/checkpoint``.
        init: a bundle whose weights start the training (fine-tuning).
        stop: called with the global step after each step; True stops cleanly (checkpoint, no bundle).
        progress: called after each step with a dict (epoch, step, loss...).
        options: the ``magms train`` options of the run, kept in the bundle's provenance.
        preprocess: ``none``, or ``auto``/``register``/``strip``/``full``: each case co-registered and/or
            skull-stripped once into ``<out>.preprocessed/`` beside ``out`` as ``magms segment --preprocess`` does
            (:mod:`magms.data.clinical`); the label stays with the reference input, which never moves.
    Returns:
        The bundle folder, or None when the run stopped before the end (resume later).
    """
    job = TrainJob(cases=cases, out=out, labels=labels, slots=slots, net_overrides=net_overrides, preprocessing=preprocessing,
                   config=config, device=device, resume=resume, init=init, stop=stop, progress=progress, options=options,
                   preprocess=preprocess)
    return Trainer(job).run()


def train_from_options(options: TrainOptions, progress: Callable[[dict[str, Any]], None] | None = None) -> Path | None:
    """``magms train``: find the cases, then :func:`train` with the options of the command line or config file.

    Args:
        options: the parsed command line or config file.
        progress: called after each step with a dict (epoch, step, loss...).
    Returns:
        The bundle folder, or None when the run stopped early (resume later) or on ranks other than 0.
    """
    slots = canonical_slots(options.slots) or None
    cases = find_cases(options.data, slots)
    stop_file = Path(options.out) / STOP_REQUEST_FILE
    stop_file.unlink(missing_ok=True)  # a request left by an earlier run
    return train(
        cases, options.out, options.labels, slots or slots_of(cases), net_overrides=options.net_overrides(),
        preprocessing=options.preprocessing(), config=options.train_config(), device=options.device,
        resume=options.resume, init=options.init, stop=lambda step: stop_file.exists(), progress=progress,
        options=options.to_dict(), preprocess=options.preprocess,
    )
