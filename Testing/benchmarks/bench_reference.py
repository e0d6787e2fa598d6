"""Compare our MAG-MS networks with the reference ``magms==2.2`` code (import name ``magnet``).

For each backbone (v2 UNETR and the light U-Net) the script

1. builds the reference network and ours, loads the reference's weights into ours through an
   explicit key mapping (:func:`reference_to_ours`, ``strict=True``) and checks that the
   parameter counts are equal;
2. runs both on the same input for several modality subsets and reports the largest absolute
   difference of the fused output (eval mode) and of the fused and every per-modality output
   (train mode);
3. times one training step (forward + MAG-MS loss + backward) and one inference window (eval,
   batch 1, all four modalities and one modality), each measurement in a fresh subprocess so
   its peak resident memory (``ru_maxrss``) is its own.

The reference is only ever imported here, from a throw-away virtual environment (see
``Testing/benchmarks/README.md``); it is not a dependency of ``magms`` and none of its code is
part of this repository.

Usage::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE /tmp/magms-ref-venv/bin/python \\
        Testing/benchmarks/bench_reference.py --quick
    /tmp/magms-ref-venv/bin/python Testing/benchmarks/bench_reference.py --backbone both --repeats 3

The full-size run (96^3) needs about 9 GB of memory per reference UNETR training step and takes
minutes on a few CPU cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from magms.config import NetConfig
from magms.losses import MAGMSLoss
from magms.networks import MAGMSNet, build_network

logger = logging.getLogger("bench_reference")

SLOTS = ("flair", "t1", "t1c", "t2")
TARGET_DICT = dict(enumerate(SLOTS))
NUM_CLASSES = 4
FULL_SIZE = {"unetr": 96, "unet": 96}
QUICK_SIZE = {"unetr": 32, "unet": 32}
SUBSETS: tuple[tuple[str, ...], ...] = (SLOTS, ("flair",), ("t1c", "t2"), ("flair", "t1", "t2"))


# --------------------------------------------------------------------------------------------
# reference side (imported lazily: the module must stay importable without ``magnet``)


def _import_reference() -> Any:
    try:
        import magnet  # noqa: F401  (the reference package, PyPI ``magms==2.2``)
    except ImportError as err:
        raise SystemExit(
            "the reference package is missing: run this script with the throw-away venv described in "
            f"Testing/benchmarks/README.md (/tmp/magms-ref-venv/bin/python), not {sys.executable} ({err})"
        ) from None
    return magnet


def _shim_reference_vit() -> None:
    """Let the reference UNETR builders run on MONAI >= 1.4.

    The reference passes ``pos_embed=`` to ``monai.networks.nets.ViT``; MONAI renamed it to
    ``proj_type=`` (the patch projection) and removed the old name in 1.4. We wrap the ``ViT``
    name the reference encoder module looks up, translating the keyword.
    """
    import magnet.networks.unetr.encoders as ref_encoders

    original = ref_encoders.ViT
    if getattr(original, "_magms_pos_embed_shim", False):
        return

    def vit(*args: Any, pos_embed: str | None = None, **kwargs: Any) -> nn.Module:
        if pos_embed is not None:
            kwargs.setdefault("proj_type", pos_embed)
        return original(*args, **kwargs)

    vit._magms_pos_embed_shim = True  # type: ignore[attr-defined]
    ref_encoders.ViT = vit


def build_reference(backbone: str, img: int) -> nn.Module:
    """The reference MAGNET2 network as its builders make it (4 modalities, 4 classes)."""
    _import_reference()
    if backbone == "unetr":
        _shim_reference_vit()
        from magnet.builder.unetr import build_v2

        return build_v2(len(SLOTS), NUM_CLASSES, img, target_dict=dict(TARGET_DICT))
    from magnet.builder.unet import build_v2_unet

    return build_v2_unet(len(SLOTS), NUM_CLASSES, target_dict=dict(TARGET_DICT))


def build_reference_loss() -> nn.Module:
    """The reference MAG-MS loss the way its segmentation training builds it.

    One ``monai.losses.DiceCELoss`` per output (fused first, then each modality), one
    ``PixelWiseKLDiv`` per modality and one MSE feature loss per modality, all weights 1.
    ``softmax_temperature=1`` makes the KL act on softmax probabilities as ours does with
    ``temperature=1`` (with ``None`` the reference would take raw logits as log-probabilities).
    """
    _import_reference()
    from magnet import losses as ref_losses
    from monai.losses import DiceCELoss

    m = len(SLOTS)
    dice = [ref_losses.Loss(DiceCELoss(to_onehot_y=True, softmax=True)) for _ in range(m + 1)]
    kl = [ref_losses.PixelWiseKLDiv(softmax_temperature=1.0) for _ in range(m)]
    mse = [ref_losses.Loss(nn.MSELoss(reduction="mean")) for _ in range(m)]
    return ref_losses.MAGMSLoss(dice, distillation_loss=kl, feature_losses=mse)


# --------------------------------------------------------------------------------------------
# our side


def build_ours(backbone: str, img: int, checkpointing: bool = False) -> MAGMSNet:
    return build_network(
        NetConfig(slots=SLOTS, out_channels=NUM_CLASSES, backbone=backbone, img_size=(img, img, img), checkpointing=checkpointing)
    )


# --------------------------------------------------------------------------------------------
# weight mapping

_UNETR_RULES: tuple[tuple[str, str], ...] = (
    (r"target_modules\.(\d+)\.vit\.(.+)", r"encoders.{slot}.vit.\2"),
    (r"target_modules\.(\d+)\.encoder([1-4])_fuse\.weight", "encoders.{slot}.fuse.{k_minus_1}.weight"),
    (r"target_modules\.(\d+)\.decoder4_fuse\.weight", "encoders.{slot}.fuse.4.weight"),
    (r"target_modules\.(\d+)\.(encoder[1-4]\..+)", r"encoders.{slot}.\2"),
    (r"decoder\.(.+)", r"decoder.\1"),
)
_UNET_RULES: tuple[tuple[str, str], ...] = (
    (r"target_modules\.(\d+)\.blocks\.(\d+)\.(\d+)\.0\.(weight|bias)", r"encoders.{slot}.levels.\2.\3.conv.\4"),
    (r"target_modules\.(\d+)\.fuse_convs\.(\d+)\.weight", r"encoders.{slot}.fuse.\2.weight"),
    (r"decoder\.blocks\.(\d+)\.(\d+)\.0\.(weight|bias)", r"decoder.levels.\1.\2.conv.\3"),
    (r"decoder\.seg_layer\.(weight|bias)", r"decoder.out.conv.\1"),
)
# reference U-Net decoder: c = 1, 2 are stride-1 ConvTranspose3d (k3, p1), ours Conv3d (k3, p1)
_UNET_TRANSPOSED_TO_CONV = re.compile(r"decoder\.blocks\.\d+\.[12]\.0\.weight")


def _transposed_to_conv(w: Tensor) -> Tensor:
    """Weight of a stride-1 ``ConvTranspose3d`` (in, out, k, k, k) as the equal ``Conv3d`` weight.

    A stride-1 transposed convolution with padding p is a convolution with the kernel's in/out
    axes swapped, the kernel mirrored in space and padding k - 1 - p (= 1 for k = 3, p = 1).
    """
    return w.transpose(0, 1).flip(2, 3, 4).contiguous()


def reference_to_ours(state: Mapping[str, Tensor], backbone: str, slots: Sequence[str] = SLOTS) -> dict[str, Tensor]:
    """Rename (and, where needed, convert) a reference ``MAGNET2`` state dict into ours.

    Args:
        state: ``state_dict()`` of ``magnet.builder.unetr.build_v2`` or ``magnet.builder.unet.build_v2_unet``.
        backbone: ``"unetr"`` or ``"unet"``.
        slots: our slot names in the reference's ``target_dict`` order.
    Raises:
        KeyError: a reference key no rule maps (names the key).
    """
    rules = _UNETR_RULES if backbone == "unetr" else _UNET_RULES
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for pattern, template in rules:
            match = re.fullmatch(pattern, key)
            if match is None:
                continue
            fields: dict[str, Any] = {}
            if key.startswith("target_modules."):
                fields["slot"] = slots[int(match.group(1))]
            if "{k_minus_1}" in template:
                fields["k_minus_1"] = int(match.group(2)) - 1
            new_key = match.expand(template.format(**fields))
            if backbone == "unet" and _UNET_TRANSPOSED_TO_CONV.fullmatch(key):
                value = _transposed_to_conv(value)
            out[new_key] = value
            break
        else:
            raise KeyError(f"no mapping rule for reference key {key!r} ({backbone})")
    return out


def compare_state_dicts(mapped: Mapping[str, Tensor], ours: Mapping[str, Tensor]) -> list[str]:
    """Why ``mapped`` would not load into ``ours`` with ``strict=True`` (empty list: it loads)."""
    problems = [f"missing in mapped reference: {k} {tuple(v.shape)}" for k, v in ours.items() if k not in mapped]
    problems += [f"not in ours: {k} {tuple(v.shape)}" for k, v in mapped.items() if k not in ours]
    problems += [
        f"shape differs: {k} reference {tuple(v.shape)} vs ours {tuple(ours[k].shape)}"
        for k, v in mapped.items()
        if k in ours and v.shape != ours[k].shape
    ]
    return problems


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, trainable and per top-level component parameter counts."""
    counts = {"total": 0, "trainable": 0}
    for name, p in model.named_parameters():
        counts["total"] += p.numel()
        counts["trainable"] += p.numel() if p.requires_grad else 0
        part = "encoders" if name.startswith(("encoders.", "target_modules.")) else name.split(".", 1)[0]
        counts[part] = counts.get(part, 0) + p.numel()
    return counts


# --------------------------------------------------------------------------------------------
# equality


def _max_abs(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: reference {tuple(a.shape)} vs ours {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().max())


def check_equality(
    backbone: str, img: int, subsets: Sequence[Sequence[str]], atol: float, rtol: float, seed: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """Build both networks with the reference's weights in ours and compare outputs.

    Returns a record with parameter counts, state-dict problems and, per subset and output,
    the max abs difference, the max abs reference value and whether it is within
    ``atol + rtol * max|reference|``.
    """
    torch.manual_seed(seed)
    ref = build_reference(backbone, img)
    ours = build_ours(backbone, img)
    result: dict[str, Any] = {
        "backbone": backbone,
        "img": img,
        "params_ref": count_parameters(ref),
        "params_ours": count_parameters(ours),
        "rows": [],
    }
    mapped = reference_to_ours(ref.state_dict(), backbone)
    problems = compare_state_dicts(mapped, ours.state_dict())
    result["state_dict_problems"] = problems
    if problems:
        logger.error("%s: reference weights do not fit ours:\n  %s", backbone, "\n  ".join(problems))
        return result
    ours.load_state_dict(mapped, strict=True)
    result["loaded_strict"] = True
    ref.to(device)
    ours.to(device)

    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, len(SLOTS), img, img, img, generator=g).to(device)

    def record(subset: Sequence[str], mode: str, output: str, r: Tensor, o: Tensor) -> None:
        diff = _max_abs(r, o)
        scale = float(r.abs().max())
        ok = diff <= atol + rtol * scale
        result["rows"].append(
            {"subset": "+".join(subset), "mode": mode, "output": output, "max_abs_diff": diff, "max_abs_ref": scale, "ok": ok}
        )
        logger.info("%s %s %s %s: max |diff| %.3g (max |ref| %.3g)", backbone, "+".join(subset), mode, output, diff, scale)

    with torch.no_grad():
        for subset in subsets:
            targets = [SLOTS.index(s) for s in subset]
            ref.train()
            ours.train()
            r = ref({"image": x, "targets": targets}).out  # (B, 1 + M, C, ...): fused, then present in slot order
            o = ours(x, present=list(subset))
            record(subset, "train", "fused", r[:, 0], o.logits)
            for j, slot in enumerate(s for s in SLOTS if s in subset):
                record(subset, "train", slot, r[:, 1 + j], o.modality_logits[slot])
            del r, o
            ref.eval()
            ours.eval()
            r = ref({"image": x, "targets": targets})
            if isinstance(r, tuple):  # eval returns (fused, additional outputs) when the decoder has none: []
                r = r[0]
            record(subset, "eval", "fused", r, ours(x, present=list(subset)))
    return result


# --------------------------------------------------------------------------------------------
# timing and equality run in child processes (--child)
#
# Linux starts a child's ru_maxrss at the RSS high-water mark of the process that spawned it
# (``subprocess`` uses vfork + exec), so the parent never builds a network itself: it stays at
# "imports only", below what every child reaches, and each child's ru_maxrss is its own peak.


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _vm_hwm_mb() -> float | None:
    """Linux ``VmHWM`` (peak RSS of this address space since exec): a cross-check of ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    if spec["kind"] == "equality":
        return check_equality(spec["backbone"], int(spec["img"]), spec["subsets"], spec["atol"], spec["rtol"],
                              device=spec.get("device", "cpu"))
    return _time_child(spec)


def _time_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement: build one network, run warm-up and timed steps, report times and peak RSS."""
    impl, backbone, what, img = spec["impl"], spec["backbone"], spec["what"], int(spec["img"])
    present = list(spec["present"])
    targets = [SLOTS.index(s) for s in present]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, len(SLOTS), img, img, img, generator=g)
    y = torch.randint(0, NUM_CLASSES, (1, 1, img, img, img), generator=g)
    device = torch.device(spec.get("device", "cpu"))
    x, y = x.to(device), y.to(device)

    if impl == "ours":
        model: nn.Module = build_ours(backbone, img, checkpointing=bool(spec.get("checkpointing")))
        loss_fn: nn.Module = MAGMSLoss()

        def train_step() -> None:
            loss = loss_fn(model(x, present=present), y)
            loss.backward()

        def infer() -> None:
            with torch.inference_mode():
                model(x, present=present)

    else:
        model = build_reference(backbone, img)
        loss_fn = build_reference_loss()

        def train_step() -> None:
            loss = loss_fn(model({"image": x, "targets": targets}), y)
            loss.backward()
            loss_fn.reset()  # torchmanager losses keep every value until reset

        def infer() -> None:
            with torch.no_grad():
                model({"image": x, "targets": targets})

    model.to(device)
    loss_fn.to(device)
    step: Callable[[], None]
    if what == "train":
        model.train()
        step = train_step
    else:
        model.eval()
        step = infer
    gc.collect()
    build_rss = _peak_rss_mb()
    times = []
    for i in range(int(spec["warmup"]) + int(spec["repeats"])):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # kernels run asynchronously: wait for the step's
        elapsed = time.perf_counter() - t0
        if i >= int(spec["warmup"]):
            times.append(elapsed)
    peak_gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"times": times, "peak_rss_mb": _peak_rss_mb(), "vm_hwm_mb": _vm_hwm_mb(), "build_rss_mb": build_rss, "peak_gpu_mb": peak_gpu}


def run_child(spec: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Run :func:`_child` in a fresh interpreter; its log goes to our stderr, its result is JSON on stdout."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        spec = {**spec, "threads": threads}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    if proc.returncode != 0:
        logger.error("child %s failed with exit status %d (its traceback is above)", spec, proc.returncode)
        return {"error": f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


MEASUREMENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("train step, 4 modalities", "train", SLOTS),
    ("train step, 4 modalities, ours with checkpointing=True", "train_ckpt", SLOTS),
    ("inference window, 4 modalities", "infer", SLOTS),
    ("inference window, 1 modality (flair)", "infer", ("flair",)),
)


def run_timings(backbone: str, img: int, repeats: int, warmup: int, threads: int | None, device: str = "cpu") -> list[dict[str, Any]]:
    rows = []
    for label, what, present in MEASUREMENTS:
        row: dict[str, Any] = {"backbone": backbone, "what": f"{label}, {img}^3", "img": img}
        for impl in ("ours", "ref"):
            if impl == "ref" and what == "train_ckpt":
                row[impl] = rows[0][impl]  # the reference has no such option: same step as the first row
                continue
            spec = {
                "kind": "timing", "impl": impl, "backbone": backbone, "what": "train" if what == "train_ckpt" else what,
                "checkpointing": what == "train_ckpt", "present": list(present),
                "img": img, "repeats": repeats, "warmup": warmup, "device": device,
            }
            logger.info("timing %s %s: %s", impl, backbone, label)
            row[impl] = run_child(spec, threads)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# report


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def timing_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| backbone | what | ours median s | ref median s | speed-up (ref/ours) | ours peak MB | ref peak MB | memory (ours/ref) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        o, r = row["ours"], row["ref"]
        o_s = statistics.median(o["times"]) if "times" in o else None
        r_s = statistics.median(r["times"]) if "times" in r else None
        # on CUDA the memory that matters is the GPU's
        key = "peak_gpu_mb" if o.get("peak_gpu_mb") is not None else "peak_rss_mb"
        o_m, r_m = o.get(key), r.get(key)
        speed = r_s / o_s if o_s and r_s else None
        mem = o_m / r_m if o_m and r_m else None
        lines.append(
            f"| {row['backbone']} | {row['what']} | {_fmt(o_s, '.3f')} | {_fmt(r_s, '.3f')} | {_fmt(speed, '.2f')}x"
            f" | {_fmt(o_m, '.0f')} | {_fmt(r_m, '.0f')} | {_fmt(mem, '.2f')} |"
        )
    return "\n".join(lines)


def equality_report(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| backbone | size | params ours | params ref | equal | ours: encoders / decoder / trainable | strict load |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for res in results:
        if "error" in res:
            lines.append(f"| {res['backbone']} | {res['img']}^3 | failed: {res['error']} | - | - | - | - |")
            continue
        po, pr = res["params_ours"]["total"], res["params_ref"]["total"]
        parts = res["params_ours"]
        lines.append(
            f"| {res['backbone']} | {res['img']}^3 | {po:,} | {pr:,} | {'yes' if po == pr else 'NO'}"
            f" | {parts.get('encoders', 0):,} / {parts.get('decoder', 0):,} / {parts['trainable']:,}"
            f" | {'yes' if res.get('loaded_strict') else 'NO'} |"
        )
    lines += ["", "| backbone | subset | mode | output | max abs diff | max abs ref | within tol |", "|---|---|---|---|---:|---:|---|"]
    for res in results:
        for p in res.get("state_dict_problems", []):
            lines.append(f"| {res['backbone']} | - | - | {p} | - | - | NO |")
        for row in res.get("rows", []):
            lines.append(
                f"| {res['backbone']} | {row['subset']} | {row['mode']} | {row['output']} | {row['max_abs_diff']:.3g}"
                f" | {row['max_abs_ref']:.3g} | {'yes' if row['ok'] else 'NO'} |"
            )
    return "\n".join(lines)


def _versions() -> str:
    import monai

    magnet = _import_reference()
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}, "
        f"reference magms {getattr(magnet, 'VERSION', '?')}, torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cpus {os.cpu_count()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1; 0 with --quick)")
    parser.add_argument("--quick", action="store_true", help="32^3 inputs and 1 repeat: a correctness smoke run")
    parser.add_argument("--backbone", choices=("unet", "unetr", "both"), default="both")
    parser.add_argument("--threads", type=int, default=None, help="torch / OpenMP threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where both networks run (default cpu)")
    parser.add_argument("--skip-equality", action="store_true", help="timings only")
    parser.add_argument("--skip-timing", action="store_true", help="parameter counts and output equality only")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the output comparison")
    parser.add_argument("--rtol", type=float, default=1e-4, help="tolerance relative to max |reference output|")
    parser.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    repeats = 1 if args.quick else args.repeats
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    backbones = ("unet", "unetr") if args.backbone == "both" else (args.backbone,)
    sizes = QUICK_SIZE if args.quick else FULL_SIZE

    print(f"# MAG-MS: ours vs reference magms 2.2\n\n{_versions()}\n")
    equality: list[dict[str, Any]] = []
    if not args.skip_equality:
        for backbone in backbones:
            spec = {
                "kind": "equality", "backbone": backbone, "img": sizes[backbone],
                "subsets": [list(s) for s in SUBSETS], "atol": args.atol, "rtol": args.rtol, "device": args.device,
            }
            logger.info("equality %s at %d^3", backbone, sizes[backbone])
            res = run_child(spec, args.threads)
            equality.append(res if "error" not in res else {"backbone": backbone, "img": sizes[backbone], **res})
        print(f"## Parameters and outputs (atol {args.atol:g} + rtol {args.rtol:g} * max|ref|)\n")
        print(equality_report(equality) + "\n")
    timings: list[dict[str, Any]] = []
    if not args.skip_timing:
        for backbone in backbones:
            timings += run_timings(backbone, sizes[backbone], repeats, warmup, args.threads, args.device)
        memory = "peak GPU memory" if args.device.startswith("cuda") else "peak memory (RSS)"
        print(f"## Time and {memory} (device {args.device}, batch 1, median of {repeats}, {warmup} warm-up, fresh process each)\n")
        print(timing_table(timings) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps({"equality": equality, "timings": timings}, indent=2))

    failed = any(not r.get("loaded_strict") or not all(row["ok"] for row in r.get("rows", [])) for r in equality)
    failed = failed or any("error" in row[impl] for row in timings for impl in ("ours", "ref"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
