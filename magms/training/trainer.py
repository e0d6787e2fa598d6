""":class:`Trainer`: one training run as a loop of small methods; :class:`TrainJob`: what the run is given.

:meth:`Trainer.run` is the whole run: :meth:`~Trainer.initialize` (checks, data, network,
optimiser, resume), then per epoch :meth:`~Trainer.train_epoch` (a :meth:`~Trainer.train_step`
per batch, with the stop checks after each) and :meth:`~Trainer.on_epoch_end` (validation,
metrics row, checkpoint), and at last :meth:`~Trainer.finalize` (the bundle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose
from monai.utils import set_determinism

import magms
from magms.bundle import METADATA_FILE, load_bundle, save_bundle
from magms.config import NetConfig, PreprocessConfig, TrainConfig
from magms.data.cases import Case
from magms.data.checks import check_cases
from magms.data.clinical import preprocess_cases
from magms.data.dataset import case_transforms, patch_transforms
from magms.devices import resolve_device
from magms.errors import ConfigError, MAGMSError
from magms.files import atomic_write_text
from magms.labels import get_scheme
from magms.losses import MAGMSLoss, RegionDiceCELoss
from magms.networks import build_network
from magms.protocol import CHECKPOINT_DIR, CHECKPOINT_STATE_FILE, METRICS_FILE, RUN_OPTIONS_FILE
from magms.training.checkpoint import read_checkpoint, write_checkpoint
from magms.training.distributed import Ranks
from magms.training.metrics_log import EpochLosses, append_metrics
from magms.training.postprocessing import chosen_postprocessing
from magms.training.provenance import run_environment, utc_now
from magms.training.split import split_cases
from magms.training.step import ClickTrainStep, TrainStep, lr_factor
from magms.training.validation import Validation
from magms.training.validation import validate as validate_cases

__all__ = ["TrainJob", "Trainer"]

logger = logging.getLogger(__name__)

_VAL_PREFIX = "val_dice:"


class EpochEnd(enum.Enum):
    """How an epoch's batches ended."""

    COMPLETE = "complete"  # every batch trained
    TIME_UP = "time_up"  # ``max_minutes`` reached: the epoch is closed early, then the bundle written
    STOPPED = "stopped"  # a stop request: checkpoint only, resume later


class _Patches(torch.utils.data.Dataset):
    """Augmented patches of the cached training cases: item ``i`` is ``draw(i)``.

    It holds a function only, on purpose. MONAI's ``DataLoader`` re-seeds every randomizable object it
    finds among a dataset's attributes (``monai.data.utils.set_rnd``); the augmentation must keep the
    random state :meth:`Trainer._loader` gives it (seed + epoch), which exact resume relies on.
    """

    def __init__(self, draw: Callable[[int], Any], size: int) -> None:
        self._draw, self._size = draw, size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i: int) -> Any:
        return self._draw(i)


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """What one training run is given: the arguments of :func:`magms.training.train`, with the same
    meanings and defaults, kept as one record so that the :class:`Trainer` reads them from one place."""

    cases: Sequence[Case]
    out: str | os.PathLike[str]
    labels: str
    slots: Sequence[str]
    net_overrides: Mapping[str, Any] | None = None
    preprocessing: PreprocessConfig | None = None
    config: TrainConfig = TrainConfig()
    device: str = "auto"
    resume: bool = False
    init: str | os.PathLike[str] | None = None
    stop: Callable[[int], bool] | None = None
    progress: Callable[[dict[str, Any]], None] | None = None
    options: Mapping[str, Any] | None = None  # the ``magms train`` options, recorded: ``--config`` of them repeats the run
    preprocess: str = "none"  # ``--preprocess``: registration and brain extraction of raw cases, once, into OUT.preprocessed


def _recorded_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options as ``RUN_OPTIONS_FILE`` records them: the data and the starting bundle as absolute paths,
    so that a resume from another working folder reads the same cases."""
    absolute = {k: os.path.abspath(options[k]) for k in ("data", "init") if options.get(k) is not None}
    return {**options, **absolute}


#: Where ``--preprocess`` puts the preprocessed cases: beside the output folder, not in it, so that a bundle
#: passed on never carries patient images (reused by ``--resume``).
PREPROCESSED_SUFFIX = ".preprocessed"


class Trainer:
    """Train a MAG-MS model and write it as a bundle, as a loop of small methods.

    The set-up, the loop and the end are :meth:`initialize`, :meth:`run` and :meth:`finalize`, as in
    MONAI's ``BundleWorkflow``; :meth:`run` calls the other two, so a trainer is used once.

    Args:
        job: the data, model, options and hooks of the run (see :func:`magms.training.train`).

    Examples::

        job = TrainJob(cases, "runs/m1", "brats2013", ("flair", "t1c"), config=TrainConfig(epochs=5))
        bundle = Trainer(job).run()  # None when stopped early: resume with TrainJob(..., resume=True)
    """

    # built by initialize()
    ranks: Ranks
    train_cases: list[Case]
    val_cases: list[Case]
    net_cfg: NetConfig
    model: torch.nn.Module
    augment: Compose
    patches: _Patches
    val_ds: CacheDataset | list[Any]
    optimizer: torch.optim.Optimizer
    total_steps: int
    step_module: torch.nn.Module
    amp: bool
    scaler: torch.amp.GradScaler
    state: dict[str, Any]  # epoch and step done, step in the epoch, seconds (validating: val_seconds): what the checkpoint keeps
    environment: dict[str, Any]  # command, commit, start time, hardware: for the bundle's provenance
    # set by run() and train_epoch()
    started: float  # time.monotonic() at which the run would have started, had it never stopped
    losses: EpochLosses

    def __init__(self, job: TrainJob) -> None:
        self.job, self.config = job, job.config
        self.out_dir = Path(job.out)
        self.checkpoint_dir = self.out_dir / CHECKPOINT_DIR
        self.scheme = get_scheme(job.labels)
        self.pre = job.preprocessing or PreprocessConfig()
        self.stop_requested = False  # set by SIGINT/SIGTERM while run() runs

    # ----------------------------------------------------------------------------------------
    # the run

    def run(self) -> Path | None:
        """Set up, train epoch by epoch until the end, a time limit or a stop request, then write the bundle.

        Returns:
            The bundle folder, or None when the run stopped before the end (resume later) or on ranks other than 0.
        """
        self.initialize()
        try:
            with self._stop_signals():
                self.started = time.monotonic() - self.state["seconds"]
                while self.state["epoch"] < self.config.epochs:
                    ended = self.train_epoch()
                    if ended is EpochEnd.STOPPED:
                        return None
                    self.on_epoch_end(time_up=ended is EpochEnd.TIME_UP)
                    if self._time_limit_reached():
                        break
        finally:
            if not self.ranks.is_main:
                self.ranks.close()  # rank 0 keeps the group until its bundle is written
        return self.finalize()

    # ----------------------------------------------------------------------------------------
    # set-up, in this order: a bad folder or bad data fails before anything is built

    def initialize(self) -> None:
        """Check the output folder and the data, then build everything the loop needs."""
        self.ranks = Ranks.from_environment(resolve_device(self.job.device))
        self.environment = run_environment(self.ranks.device)
        self._check_output_folder()
        self._split_and_check_cases()
        self._create_output_folder()
        self._preprocess_cases()
        set_determinism(self.config.seed)
        self._build_network()
        self._build_datasets()
        self._build_optimisation()
        self._load_state()

    def _check_output_folder(self) -> None:
        """A resume needs a checkpoint; a new run never overwrites an earlier one."""
        if self.job.resume and not (self.checkpoint_dir / CHECKPOINT_STATE_FILE).is_file():
            raise ConfigError(f"{self.out_dir}: nothing to resume (no {CHECKPOINT_DIR}/{CHECKPOINT_STATE_FILE})")
        if not self.job.resume and (self.checkpoint_dir.exists() or (self.out_dir / METADATA_FILE).exists()):
            raise ConfigError(f"{self.out_dir}: holds a run already (use --resume, or another --out)")

    def _split_and_check_cases(self) -> None:
        """Split into training and validation cases, then check every case, reporting all bad ones at once."""
        config = self.config
        self.train_cases, self.val_cases = split_cases(self.job.cases, config.val_fraction, config.seed, config.val_cases)
        check_cases(self.job.cases, self.job.slots, self.scheme)

    def _create_output_folder(self) -> None:
        """Create the output folder on rank 0, once every rank has checked it, with this sitting's options in it
        (``RUN_OPTIONS_FILE``, which the next ``--resume`` starts from)."""
        self.ranks.barrier()  # every rank has checked the output folder before rank 0 writes
        if self.ranks.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.job.options is not None:
                atomic_write_text(self.out_dir / RUN_OPTIONS_FILE, json.dumps(_recorded_options(self.job.options), indent=1) + "\n")

    def _preprocess_cases(self) -> None:
        """``--preprocess``: each case registered and/or skull-stripped once into ``OUT.preprocessed/``, as
        ``magms segment --preprocess`` does (:func:`~magms.data.clinical.preprocess_cases`); rank 0 writes,
        the other ranks then read its files. Every failing case is reported at once."""
        mode = self.job.preprocess
        if mode == "none":
            return
        folder = self.out_dir.with_name(self.out_dir.name + PREPROCESSED_SUFFIX)
        done, failed = None, None
        if self.ranks.is_main:
            try:
                done = preprocess_cases(self.job.cases, self.job.slots, mode, folder)
            except MAGMSError as err:
                failed = err
        self.ranks.barrier()
        if failed is not None:
            raise failed
        if done is None:  # rank 0's files, reused; a case that failed there fails here the same way
            done = preprocess_cases(self.job.cases, self.job.slots, mode, folder)
        by_name = {case.name: case for case in done}
        self.train_cases = [by_name[c.name] for c in self.train_cases]
        self.val_cases = [by_name[c.name] for c in self.val_cases]

    def _build_network(self) -> None:
        """The network, with the weights of ``init`` when fine-tuning, in train mode on the device."""
        overrides = dict(self.job.net_overrides or {})
        classes = len(self.scheme.labels)
        clicking = self.config.max_clicks > 0
        if clicking:
            self._check_click_training()
            overrides["click_regions"] = len(self.scheme.regions)
        self.net_cfg = NetConfig(slots=tuple(self.job.slots), out_channels=classes, img_size=self.pre.patch_size, **overrides)
        self.model = build_network(self.net_cfg)
        init = self.job.init
        if init is not None and not self.job.resume:  # a resume takes the checkpoint's weights
            source, info = load_bundle(init)
            # click training may start from an automatic model: the same network, guidance aside
            regions = self.net_cfg.click_regions if clicking else info.network.click_regions
            if dataclasses.replace(info.network, click_regions=regions) != self.net_cfg:
                raise ConfigError(f"{init}: its network config differs from this run's; fine-tuning needs the same architecture")
            missing, _ = self.model.load_state_dict(source.state_dict(), strict=not clicking)
            if any(not key.startswith("guidance.") for key in missing):
                raise ConfigError(f"{init}: weights missing for {[k for k in missing if not k.startswith('guidance.')][:3]}")
        if clicking:  # the automatic model stays as it is: with no click the result is its result
            for name, parameter in self.model.named_parameters():
                parameter.requires_grad_(name.startswith("guidance."))
        self.model.to(self.ranks.device).train()
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last_3d)

    def _check_click_training(self) -> None:
        """Click training needs a model to guide and regions to click on."""
        if self.job.init is None and not self.job.resume:
            raise ConfigError("--max-clicks trains the click guidance of a model: give that model with --init")
        if not self.scheme.regions:
            raise ConfigError(f"--max-clicks: label scheme '{self.scheme.key}' has no regions to click on")

    def _build_datasets(self) -> None:
        """Cached prepared cases; training draws augmented patches from them, validation reads them whole."""
        base = case_transforms(self.job.slots, self.scheme, self.pre)
        train_ds = CacheDataset([self._case_record(c) for c in self.train_cases], Compose(base), progress=False)
        self.augment = Compose(patch_transforms(self.pre, self.config.samples_per_case, self.config.augmentation))
        augment = self.augment
        # a copy of the cached case: the augmentation must not change it
        self.patches = _Patches(lambda i: augment(dict(train_ds[i])), len(train_ds))
        self.val_ds = (
            CacheDataset([self._case_record(c) for c in self.val_cases], Compose(base), progress=False) if self.val_cases else []
        )

    def _case_record(self, case: Case) -> dict[str, Any]:
        """A case as the transforms read it: the model's modalities only."""
        images = {s: str(p) for s, p in case.images.items() if s in self.job.slots}
        return {"name": case.name, "images": images, "label": str(case.label), "scheme": case.scheme}

    def _build_optimisation(self) -> None:
        """Optimiser, step count, loss, the train step (under DDP when distributed) and the AMP scaler."""
        config = self.config
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
        # each rank takes its share of the cases, then batches it
        steps_per_epoch = math.ceil(math.ceil(len(self.train_cases) / self.ranks.world) / config.batch_size)
        self.total_steps = steps_per_epoch * config.epochs
        if config.max_clicks:  # the frozen model's own loss terms have nothing to train: the regions' loss after the clicks
            regions = [self.scheme.region_indices(r.key) for r in self.scheme.regions]
            step: torch.nn.Module = ClickTrainStep(self.model, RegionDiceCELoss(regions), regions, config.max_clicks)
        else:
            loss_fn = MAGMSLoss(
                distill=config.distill, kl_weight=config.kl_weight, feature_weight=config.feature_weight,
                segmentation_loss=self._segmentation_loss(),
            )
            step = TrainStep(self.model, loss_fn, config.policy, config.singles_per_step or None)
        self.step_module = self.ranks.wrap(step)
        self.amp = config.amp and self.ranks.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def _segmentation_loss(self) -> RegionDiceCELoss | None:
        """The loss on each output: ``None`` for MAGMSLoss's own Dice+CE over the labels, or one over the scheme's regions."""
        if self.config.seg_loss != "regions":
            return None
        if not self.scheme.regions:
            raise ConfigError(f"seg_loss 'regions': label scheme '{self.scheme.key}' has no regions to train on; use 'labels'")
        return RegionDiceCELoss([self.scheme.region_indices(r.key) for r in self.scheme.regions])

    def _load_state(self) -> None:
        """The loop's state: from the checkpoint when resuming (weights, optimiser, RNG too), else a fresh one."""
        self.state = {"epoch": 0, "step": 0, "step_in_epoch": 0, "seconds": 0.0, "val_seconds": 0.0}
        if self.job.resume:
            self.state = read_checkpoint(self.checkpoint_dir, self.model, self.optimizer)
            self.state.setdefault("val_seconds", 0.0)  # checkpoints written before the validation budget
            logger.info("resuming at epoch %d, step %d", self.state["epoch"] + 1, self.state["step"])

    # ----------------------------------------------------------------------------------------
    # one epoch, one step

    def train_epoch(self) -> EpochEnd:
        """Train the batches of the current epoch, checking after each step whether to stop.

        After a resume in the middle of an epoch, the batches done before the stop are drawn again
        (same data, same augmentation) but not trained, so the rest of the epoch sees what it would have.
        """
        self.losses = EpochLosses()
        for i, batch in enumerate(self._loader(self.state["epoch"])):
            if i < self.state["step_in_epoch"]:
                continue  # replayed: same data and augmentation as before the stop
            self.train_step(batch, i)
            stop_now, time_up = self._stop_flags()
            if stop_now:
                self._save_on_stop()
                return EpochEnd.STOPPED
            if time_up:
                return EpochEnd.TIME_UP
        return EpochEnd.COMPLETE

    def _loader(self, epoch: int) -> DataLoader:
        """The epoch's batches, in an order and with an augmentation that depend only on the seed and the epoch."""
        self.augment.set_random_state(seed=self.config.seed + epoch)
        if self.ranks.is_distributed:
            sampler = torch.utils.data.distributed.DistributedSampler(
                self.patches, num_replicas=self.ranks.world, rank=self.ranks.rank, shuffle=True, seed=self.config.seed
            )
            sampler.set_epoch(epoch)
            return DataLoader(self.patches, batch_size=self.config.batch_size, sampler=sampler, num_workers=0)
        return DataLoader(self.patches, batch_size=self.config.batch_size, shuffle=True, num_workers=0,
                          generator=torch.Generator().manual_seed(self.config.seed + epoch))

    def train_step(self, batch: Mapping[str, Any], index: int) -> None:
        """One optimisation step on ``batch``, the ``index``-th of the epoch (from 0)."""
        dev = self.ranks.device
        x, y = batch["image"].as_tensor().to(dev), batch["label"].as_tensor().to(dev)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        present = batch["present"].to(torch.bool)
        self._set_learning_rate()
        with torch.autocast("cuda", enabled=self.amp):
            loss, terms = self.step_module(x, present, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state["step"] += 1
        self.state["step_in_epoch"] = index + 1
        self.losses.add(loss, terms)
        self._report_progress(loss.item())

    def _report_progress(self, loss: float) -> None:
        """Tell the caller's ``progress`` about the step just done (rank 0 only: one report per step)."""
        if self.job.progress is not None and self.ranks.is_main:
            self.job.progress({"epoch": self.state["epoch"] + 1, "epochs": self.config.epochs, "step": self.state["step"],
                               "total_steps": self.total_steps, "loss": loss, "seconds": self._seconds(),
                               "max_seconds": None if self.config.max_minutes is None else 60 * self.config.max_minutes})

    def _set_learning_rate(self) -> None:
        """The schedule's rate for the coming step, by steps done and, with a time limit, by time spent."""
        time_fraction = self._minutes() / self.config.max_minutes if self.config.max_minutes else 0.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * lr_factor(self.state["step"], self.total_steps, time_fraction, self.config.lr_schedule)

    # ----------------------------------------------------------------------------------------
    # end of an epoch

    def on_epoch_end(self, time_up: bool) -> None:
        """Validate when due, append the epoch's row to metrics.csv and write the checkpoint.

        Args:
            time_up: the epoch was cut short by ``max_minutes``; it is the last, so it is validated.
        """
        epoch = self.state["epoch"] + 1  # the epoch just trained, counted from 1
        lr = self.optimizer.param_groups[0]["lr"]
        row: dict[str, Any] = {"epoch": epoch, "step": self.state["step"], "lr": lr, **self.losses.means()}
        last = epoch == self.config.epochs or time_up or self._time_up()
        if self.ranks.is_main and self.val_ds and (last or (epoch % self.config.val_every == 0 and self._within_validation_budget())):
            started = time.monotonic()
            validation = self.validate(component_sizes=last)
            self.state["last_validation"] = {f"{_VAL_PREFIX}{k}": v for k, v in validation.dice.items()}
            self.state["lesion_dice_by_min_component_ml"] = {str(k): v for k, v in validation.lesion_dice_by_min_size.items()}
            row.update(self.state["last_validation"])
            self.state["val_seconds"] += time.monotonic() - started
        self.state.update(epoch=epoch, step_in_epoch=0, seconds=self._seconds())
        row["seconds"] = round(self.state["seconds"], 1)
        row["val_seconds"] = round(self.state["val_seconds"], 1)
        if self.ranks.is_main:
            append_metrics(self.out_dir / METRICS_FILE, row)
            write_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.state)
        self.ranks.barrier()  # no rank runs ahead into the next epoch while rank 0 validates and writes

    def _within_validation_budget(self) -> bool:
        """Whether the time spent validating so far is within ``val_share`` of the run's time."""
        return self.state["val_seconds"] <= self.config.val_share * self._seconds()

    def validate(self, component_sizes: bool = False) -> Validation:
        """Mean Dice per subset and region on the validation cases, and with ``component_sizes`` the whole region's
        lesion-wise Dice with small components removed (see :func:`magms.training.validation.validate`)."""
        return validate_cases(self.model, self.val_ds, self.job.slots, self.scheme, self.pre, self.ranks.device, component_sizes)

    # ----------------------------------------------------------------------------------------
    # stopping: signals, the stop callback, the time limit

    @contextlib.contextmanager
    def _stop_signals(self) -> Iterator[None]:
        """SIGINT, SIGTERM (and Ctrl-Break on Windows) request a clean stop while the loop runs; the previous
        handlers come back after. Through a launcher that forwards no signal, the stop request file
        (:data:`magms.protocol.STOP_REQUEST_FILE`, polled by the ``stop`` callback) does the same."""

        def on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
            # only a flag: the loop checks it after the step, where a checkpoint is consistent
            self.stop_requested = True

        self.stop_requested = False
        signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])
        previous = {s: signal.signal(s, on_signal) for s in signals}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop_flags(self) -> tuple[bool, bool]:
        """(stop now, time is up) after a step, agreed by all ranks so that they stop at the same step."""
        time_up = self._time_up()
        stop_now = self.stop_requested or (self.job.stop is not None and self.job.stop(self.state["step"]))
        stop_now, time_up = self.ranks.agree(stop_now, time_up)
        return stop_now, time_up

    def _save_on_stop(self) -> None:
        """Write the checkpoint in the middle of the epoch, for ``--resume``."""
        self.state["seconds"] = self._seconds()
        if self.ranks.is_main:
            write_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.state)
        logger.warning("stopped at step %d; continue with --resume", self.state["step"])

    def _time_limit_reached(self) -> bool:
        """Whether the time recorded at the end of the epoch is past ``max_minutes``; the run then ends."""
        max_minutes = self.config.max_minutes
        if max_minutes is not None and self.state["seconds"] / 60 >= max_minutes:
            logger.warning("time limit of %s minutes reached after epoch %d", max_minutes, self.state["epoch"])
            return True
        return False

    def _time_up(self) -> bool:
        """Whether ``max_minutes`` have passed by now."""
        return self.config.max_minutes is not None and self._minutes() >= self.config.max_minutes

    def _seconds(self) -> float:
        """Seconds of training, those before a resume included."""
        return time.monotonic() - self.started

    def _minutes(self) -> float:
        """:meth:`_seconds` in minutes, the unit of ``max_minutes``."""
        return self._seconds() / 60

    # ----------------------------------------------------------------------------------------
    # the end

    def finalize(self) -> Path | None:
        """Write the bundle with its provenance, last validation and the post-processing that validation chose
        (rank 0), then leave the process group.

        Returns:
            The bundle folder on rank 0, else None.
        """
        if not self.ranks.is_main:
            return None
        save_bundle(
            self.out_dir, self.model, self.net_cfg, self.scheme, self.pre,
            training=self._provenance(), validation=self._validation_table(), overwrite=True,
            postprocessing=chosen_postprocessing(self._lesion_dice_by_min_size(), self.scheme),
        )
        self.ranks.close()
        return self.out_dir

    def _provenance(self) -> dict[str, Any]:
        """The bundle's ``training`` record: data, split, progress, options, versions."""
        return {
            "cases": [c.name for c in self.train_cases], "validation_cases": [c.name for c in self.val_cases],
            "epochs_done": self.state["epoch"], "steps": self.state["step"], "config": self.config.to_dict(),
            "seconds": round(self.state["seconds"], 1), "magms_version": magms.__version__,
            "init": str(self.job.init) if self.job.init else None,
            "case_schemes": {c.name: c.scheme for c in self.train_cases + self.val_cases if c.scheme},
            "options": dict(self.job.options) if self.job.options is not None else None,
            "lesion_dice_by_min_component_ml": self.state.get("lesion_dice_by_min_component_ml", {}),
            **self.environment, "finished_utc": utc_now(),
        }

    def _lesion_dice_by_min_size(self) -> dict[float, float]:
        """The last validation's whole-region lesion-wise Dice per smallest component kept (ml): chooses the size rule."""
        return {float(k): v for k, v in self.state.get("lesion_dice_by_min_component_ml", {}).items()}

    def _validation_table(self) -> dict[str, dict[str, float]]:
        """The last validation as subset -> ``<region>_dice`` -> Dice (before any post-processing)."""
        table: dict[str, dict[str, float]] = {}
        for key, value in self.state.get("last_validation", {}).items():
            subset, target = key[len(_VAL_PREFIX):].split(":")
            table.setdefault(subset, {})[f"{target}_dice"] = value
        return table
