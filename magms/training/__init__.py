"""``magms train``: one MAG-MS model from cases with any modalities, resumable, seeded.

Two subset policies are available:

* ``paper``: every step encodes all modalities present for the case. The fused output and each
  single modality are trained, with the fused output teaching the singles (He et al., ISBI 2024).
* ``random_subset``: each step also trains the fused output of a random non-empty subset of each
  sample's modalities, so that 2- and 3-modality inputs are trained directly.

A case that lacks a modality in the data simply has fewer present.

What is written into the output folder:

* ``checkpoint/``: written at the end of every epoch and on a stop request, atomically.
  ``model.safetensors`` and ``optimizer.safetensors`` hold tensors only; ``state.json`` holds the
  step, epoch, scheduler and RNG states.
* ``metrics.csv``: one row per epoch, appended and flushed, so a second process can follow it.
* ``train_options.json``: the ``magms train`` options of the last sitting, which ``--resume`` starts from.
* The bundle at the end: ``model.safetensors`` + ``magms.json``, with provenance, the
  validation table and the size of the spurious components to remove, chosen on the validation cases.

``--resume`` continues exactly where the run stopped. On a CPU without a time limit the final weights
equal those of an uninterrupted run: the data order and augmentation are re-seeded at every epoch,
and the batches already done in a stopped epoch are replayed without training (with a time limit
the learning rate follows the clock).

The modules, each one job of a run:

* :mod:`~magms.training.api`: :func:`train` and :func:`train_from_options` (the command line's entry).
* :mod:`~magms.training.trainer`: :class:`Trainer`, the run as a loop of small methods, and
  :class:`TrainJob`, what a run is given.
* :mod:`~magms.training.step`: the loss of one step and the learning-rate schedule.
* :mod:`~magms.training.validation`: Dice of every modality subset on the validation cases.
* :mod:`~magms.training.postprocessing`: the size of the spurious components the bundle removes, chosen on them.
* :mod:`~magms.training.checkpoint`, :mod:`~magms.training.metrics_log`: what the run writes while it goes.
* :mod:`~magms.training.distributed`: ranks under ``torchrun``.
* :mod:`~magms.training.split`: :func:`split_cases`.
"""

from __future__ import annotations

from magms.config import TrainConfig  # the options of train(), at hand beside it
from magms.training.api import train, train_from_options
from magms.training.split import split_cases
from magms.training.trainer import Trainer, TrainJob

__all__ = ["TrainConfig", "TrainJob", "Trainer", "split_cases", "train", "train_from_options"]
