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
* The bundle at the end: ``model.safetensors`` + ``magms.json``, with provenance and the
  validation table.

``--resume`` continues exactly where the run stopped. On a CPU the final weights equal those of an
uninterrupted run: the data order and augmentation are re-seeded at every epoch, and the batches
already done in a stopped epoch are replayed without training.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from monai.data import CacheDataset, DataLoader
from monai.inferers import sliding_window_inference
from monai.transforms import Compose
from monai.utils import set_determinism

import magms
from magms.bundle import load_bundle, save_bundle
from magms.config import NetConfig, PreprocessConfig, TrainConfig
from magms.commands import TrainOptions
from magms.data.cases import Case, find_cases, slots_of
from magms.data.checks import check_cases
from magms.data.dataset import case_transforms, patch_transforms
from magms.data.preprocessing import run_in_foreground
from magms.devices import resolve_device
from magms.errors import ConfigError
from magms.files import replace_folder
from magms.labels import get_scheme
from magms.losses import MAGMSLoss
from magms.metrics import case_metrics
from magms.modalities import subsets_of
from magms.networks import build_network
from magms.protocol import CHECKPOINT_DIR, CHECKPOINT_STATE_FILE, METRICS_FILE, STOP_REQUEST_FILE

__all__ = ["train", "train_from_options"]

logger = logging.getLogger(__name__)



def split_cases(cases: Sequence[Case], fraction: float, seed: int, names: Sequence[str] = ()) -> tuple[list[Case], list[Case]]:
    """Split into (train, validation): the cases named in ``names``, else a seeded random
    ``fraction`` (at least one validation case when ``fraction`` > 0).

    Raises:
        ConfigError: a name that is no case, or every case named.
    """
    if names:
        known = {c.name for c in cases}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"validation case(s) {', '.join(unknown)} not in the data (cases: {', '.join(sorted(known))})")
        if known <= set(names):
            raise ConfigError("every case is a validation case: leave at least one for training")
        return [c for c in cases if c.name not in names], [c for c in cases if c.name in names]
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    n_val = 0 if fraction == 0 else min(max(1, round(fraction * len(cases))), len(cases) - 1)
    val = sorted(order[:n_val])
    return [c for i, c in enumerate(cases) if i not in val], [cases[i] for i in val]


# --------------------------------------------------------------------------------------------
# checkpoints (tensors in safetensors, everything else in JSON: nothing is ever unpickled)


def _write_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    def fill(tmp: Path) -> None:
        safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        opt = optimizer.state_dict()
        tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items() for k, v in s.items() if torch.is_tensor(v)}
        tensors["torch_rng"] = torch.get_rng_state()
        safetensors.torch.save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / CHECKPOINT_STATE_FILE).write_text(json.dumps({**state, "param_groups": opt["param_groups"]}, indent=1))

    replace_folder(folder, fill)


def _read_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    try:
        state = json.loads((folder / CHECKPOINT_STATE_FILE).read_text())
        model.load_state_dict(safetensors.torch.load_file(str(folder / "model.safetensors")), strict=True)
        tensors = safetensors.torch.load_file(str(folder / "optimizer.safetensors"))
    except (OSError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{folder}: cannot resume from this checkpoint ({err})") from err
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key == "torch_rng":
            continue
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(tensors["torch_rng"])
    return state


# --------------------------------------------------------------------------------------------
# the loop


def _lr_factor(step: int, total: int, time_fraction: float = 0.0) -> float:
    """Linear warm-up (5% of the steps, at most 50, or 5% of a time limit), then cosine to 0.

    With a time limit the schedule follows whichever is further along, steps or time, so a run
    stopped by ``max_minutes`` still ends at a low learning rate.
    """
    warmup = min(max(1, total // 20), 50)
    if step < warmup and time_fraction < 0.05:
        return (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_fraction)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _validate(model, val_ds, slots, scheme, pre, device) -> dict[str, float]:
    """Mean Dice per subset and region (labels for schemes without regions) on the working grid."""
    model.eval()
    sums: dict[str, list[float]] = {}
    with torch.inference_mode():
        for item in val_ds:
            present = [s for s, p in zip(slots, item["present"].tolist()) if p]
            truth = scheme.decode(item["label"][0].numpy().astype(np.int64))
            x = item["image"].as_tensor()[None].to(device)
            foreground = item["foreground"].as_tensor()[0] > 0.5
            for subset in subsets_of(present):
                probs = run_in_foreground(x, foreground, lambda crop: sliding_window_inference(
                    crop, pre.patch_size, 2, lambda w: torch.softmax(model(w, present=list(subset)), 1),
                    overlap=pre.overlap, mode=pre.blend_mode,
                ), len(scheme.labels))
                pred = scheme.decode(probs[0].argmax(0).numpy())
                for row in case_metrics(pred, truth, scheme, (1.0, 1.0, 1.0)):
                    if row["kind"] == ("region" if scheme.regions else "label"):
                        sums.setdefault(f"{'+'.join(subset)}:{row['target']}", []).append(float(row["dice"]))
    model.train()
    return {k: float(np.mean(v)) for k, v in sums.items()}


class _TrainStep(torch.nn.Module):
    """Network and loss as one module: DDP then sees one forward per backward, also when the
    random-subset policy decodes a second fusion."""

    def __init__(self, net: torch.nn.Module, loss_fn: MAGMSLoss, policy: str) -> None:
        super().__init__()
        self.net, self.loss_fn, self.policy = net, loss_fn, policy

    def forward(self, x: torch.Tensor, present: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        output = self.net(x, present)
        terms = self.loss_fn.terms(output, y)
        if self.policy == "random_subset":
            subset = present & (torch.rand(present.shape) < 0.5)
            empty = ~subset.any(dim=1)
            subset[empty] = present[empty]
            # the subset's fusion reuses the encoders' features: one more decoder pass, no re-encoding
            terms["seg_subset"] = self.loss_fn.dice_ce(self.net.decode_subset(output, subset), y)
        return torch.stack(list(terms.values())).sum(), terms


def _init_distributed(dev: torch.device) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, initialised here) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, dev, False
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    created = not torch.distributed.is_initialized()
    if created:
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world, dev, created


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
    Returns:
        The bundle folder, or None when the run stopped before the end (resume later).
    """
    out_dir = Path(out)
    scheme = get_scheme(labels)
    pre = preprocessing or PreprocessConfig()
    dev = resolve_device(device)
    rank, world, dev, created_group = _init_distributed(dev)
    main_rank = rank == 0
    if world > 1 and main_rank:
        logger.warning("distributed training: %d ranks (%s)", world, torch.distributed.get_backend())
    ckpt = out_dir / CHECKPOINT_DIR
    if resume and not (ckpt / CHECKPOINT_STATE_FILE).is_file():
        raise ConfigError(f"{out_dir}: nothing to resume (no {CHECKPOINT_DIR}/state.json)")
    if not resume and (ckpt.exists() or (out_dir / "magms.json").exists()):
        raise ConfigError(f"{out_dir}: holds a run already (use --resume, or another --out)")
    train_cases, val_cases = split_cases(cases, config.val_fraction, config.seed, config.val_cases)
    check_cases(cases, slots, scheme)
    if world > 1:
        torch.distributed.barrier()  # every rank has checked the output folder before rank 0 writes
    if main_rank:
        out_dir.mkdir(parents=True, exist_ok=True)

    set_determinism(config.seed)
    net_cfg = NetConfig(slots=tuple(slots), out_channels=len(scheme.labels), img_size=pre.patch_size, **dict(net_overrides or {}))
    model = build_network(net_cfg)
    if init is not None:
        source, info = load_bundle(init)
        if info.network != net_cfg:
            raise ConfigError(f"{init}: its network config differs from this run's; fine-tuning needs the same architecture")
        model.load_state_dict(source.state_dict())
    model.to(dev).train()

    as_dict = lambda c: {"name": c.name, "images": {s: str(p) for s, p in c.images.items() if s in slots}, "label": str(c.label)}  # noqa: E731
    base = case_transforms(slots, scheme, pre)
    train_ds = CacheDataset([as_dict(c) for c in train_cases], Compose(base), progress=False)
    augment = Compose(patch_transforms(pre, config.samples_per_case))
    val_ds = CacheDataset([as_dict(c) for c in val_cases], Compose(base), progress=False) if val_cases else []

    class Patches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(train_ds)

        def __getitem__(self, i: int):
            return augment(dict(train_ds[i]))

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(math.ceil(len(train_cases) / world) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    loss_fn = MAGMSLoss(distill=config.distill, kl_weight=config.kl_weight, feature_weight=config.feature_weight)
    step_module: torch.nn.Module = _TrainStep(model, loss_fn, config.policy)
    if world > 1:
        # a modality absent from a rank's batch leaves its encoder without gradient there
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True
        )
    state: dict[str, Any] = {"epoch": 0, "step": 0, "step_in_epoch": 0, "seconds": 0.0}
    if resume:
        state = _read_checkpoint(ckpt, model, optimizer)
        logger.info("resuming at epoch %d, step %d", state["epoch"] + 1, state["step"])
    amp = config.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    stop_requested = False

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stop_requested
        stop_requested = True

    # SIGBREAK: Ctrl-Break in a Windows console (signal.SIGBREAK exists on Windows only)
    stop_signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])
    previous = {s: signal.signal(s, on_signal) for s in stop_signals}
    started = time.monotonic() - state["seconds"]
    last_validation: dict[str, float] = {}
    metrics_path = out_dir / METRICS_FILE
    try:
        while state["epoch"] < config.epochs:
            epoch = state["epoch"]
            augment.set_random_state(seed=config.seed + epoch)
            if world > 1:
                sampler = torch.utils.data.distributed.DistributedSampler(Patches(), num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
                sampler.set_epoch(epoch)
                loader = DataLoader(Patches(), batch_size=config.batch_size, sampler=sampler, num_workers=0)
            else:
                loader = DataLoader(Patches(), batch_size=config.batch_size, shuffle=True, num_workers=0,
                                    generator=torch.Generator().manual_seed(config.seed + epoch))
            sums: dict[str, float] = {}
            n = 0
            minutes_up = False
            for i, batch in enumerate(loader):
                if i < state["step_in_epoch"]:
                    continue  # replayed: same data and augmentation as before the stop
                x, y = batch["image"].as_tensor().to(dev), batch["label"].as_tensor().to(dev)
                present = batch["present"].to(torch.bool)
                elapsed = (time.monotonic() - started) / 60
                time_fraction = elapsed / config.max_minutes if config.max_minutes else 0.0
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * _lr_factor(state["step"], total_steps, time_fraction)
                with torch.autocast("cuda", enabled=amp):
                    loss, terms = step_module(x, present, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                state["step"] += 1
                state["step_in_epoch"] = i + 1
                n += 1
                sums["loss"] = sums.get("loss", 0.0) + loss.item()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.item()
                if progress is not None and main_rank:
                    progress({"epoch": epoch + 1, "epochs": config.epochs, "step": state["step"], "total_steps": total_steps, "loss": loss.item()})
                minutes_up = config.max_minutes is not None and (time.monotonic() - started) / 60 >= config.max_minutes
                stop_now = stop_requested or (stop is not None and stop(state["step"]))
                if world > 1:  # every rank stops at the same step
                    flags = torch.tensor([int(stop_now), int(minutes_up)], device=dev)
                    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
                    stop_now, minutes_up = bool(flags[0]), bool(flags[1])
                if stop_now:
                    state["seconds"] = time.monotonic() - started
                    if main_rank:
                        _write_checkpoint(ckpt, model, optimizer, state)
                    logger.warning("stopped at step %d; continue with --resume", state["step"])
                    return None
                if minutes_up:
                    break
            row = {"epoch": epoch + 1, "step": state["step"], "lr": optimizer.param_groups[0]["lr"],
                   **{k: v / max(n, 1) for k, v in sums.items()}}
            last = epoch + 1 == config.epochs or minutes_up or (
                config.max_minutes is not None and (time.monotonic() - started) / 60 >= config.max_minutes
            )
            if main_rank and val_ds and (last or (epoch + 1) % config.val_every == 0):
                row.update({f"val_dice:{k}": v for k, v in _validate(model, val_ds, slots, scheme, pre, dev).items()})
            if any(k.startswith("val_dice:") for k in row):
                last_validation = {k: v for k, v in row.items() if k.startswith("val_dice:")}
            state.update(epoch=epoch + 1, step_in_epoch=0, seconds=time.monotonic() - started)
            row["seconds"] = round(state["seconds"], 1)
            if main_rank:
                _append_metrics(metrics_path, row)
                _write_checkpoint(ckpt, model, optimizer, state)
            if world > 1:
                torch.distributed.barrier()
            if config.max_minutes is not None and state["seconds"] / 60 >= config.max_minutes:
                logger.warning("time limit of %s minutes reached after epoch %d", config.max_minutes, epoch + 1)
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if created_group and not main_rank:
            torch.distributed.destroy_process_group()
    if not main_rank:
        return None

    validation = {k.split(":", 1)[1]: v for k, v in last_validation.items()}
    table: dict[str, dict[str, float]] = {}
    for key, value in validation.items():
        subset, target = key.split(":")
        table.setdefault(subset, {})[f"{target}_dice"] = value
    save_bundle(
        out_dir, model, net_cfg, scheme, pre,
        training={
            "cases": [c.name for c in train_cases], "validation_cases": [c.name for c in val_cases],
            "epochs_done": state["epoch"], "steps": state["step"], "config": config.to_dict(),
            "seconds": round(state["seconds"], 1), "magms_version": magms.__version__,
            "init": str(init) if init else None,
        },
        validation=table, overwrite=True,
    )
    if created_group:
        torch.distributed.destroy_process_group()
    return out_dir


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    header = list(row) if new else next(csv.reader(open(path, encoding="utf-8")))
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        f.flush()


def train_from_options(options: TrainOptions, progress: Callable[[dict[str, Any]], None] | None = None) -> Path | None:
    """``magms train``: find the cases, then :func:`train` with the options of the command line or config file.

    Returns:
        The bundle folder, or None when the run stopped early (resume later) or on ranks other than 0.
    """
    from magms.modalities import canonical_slot

    slots = tuple(canonical_slot(s) for s in options.slots) or None
    cases = find_cases(options.data, slots)
    stop_file = Path(options.out) / STOP_REQUEST_FILE
    stop_file.unlink(missing_ok=True)  # a request left by an earlier run
    return train(
        cases, options.out, options.labels, slots or slots_of(cases), net_overrides=options.net_overrides(),
        preprocessing=options.preprocessing(), config=options.train_config(), device=options.device,
        resume=options.resume, init=options.init, stop=lambda step: stop_file.exists(), progress=progress,
    )
