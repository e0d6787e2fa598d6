"""What runs the network on each sliding window: torch eager, or the exported graphs on the CPU.

Eager PyTorch is the reference and the fallback. The exported engines, OpenVINO and ONNX Runtime,
run ONNX graphs made from the bundle's network. They follow the network's structure: each slot's
encoder and the shared decoder are separate graphs, and the mean of the present encoders'
features (:class:`~magms.networks.MeanFusion`) is taken between them. One export therefore serves
every subset of the slots (15 for four), and a run from one sequence compiles and runs one encoder.
OpenVINO joins the present encoders, their mean and the decoder into one model per subset when the
subset is first run, so that the features stay inside it (in its own layout and precision);
ONNX Runtime runs the graphs one after the other and takes the mean in numpy.

The graphs are made once per model and cached (:mod:`~magms.inference.graphs`); the engine that runs
them is chosen by :mod:`~magms.inference.engine`.

Precision: the graphs are float32. ``fp32`` runs them in float32 on every engine; ``auto`` lets the
engine choose: OpenVINO then computes in bfloat16 on CPUs that have bf16 instructions (AVX512-BF16,
AMX) and float32 elsewhere; ONNX Runtime stays in float32. What ran is recorded in the predictor's
:attr:`~WindowPredictor.engine` (and so in each :class:`~magms.inference.Segmentation`).

Nothing here imports torch, OpenVINO or ONNX Runtime at import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from magms.errors import ConfigError
from magms.protocol import PRECISIONS

if TYPE_CHECKING:
    from magms.bundle import OpenedModel
    from magms.networks import MAGMSNet
from magms.inference.engine import resolve_engine
from magms.inference.graphs import cached_graphs

__all__ = ["OPENVINO_STREAMS", "WindowPredictor", "EagerPredictor", "GraphPredictor", "make_predictor"]

logger = logging.getLogger(__name__)

Arrays = list[np.ndarray]
#: The network compiled for one subset of the slots: each present slot's (B, 1, D, H, W) windows, in
#: bundle order -> (B, C, D, H, W) float32 logits, an array the caller owns.
SubsetGraph = Callable[[Arrays], np.ndarray]
#: Threads OpenVINO runs in parallel, each on its own part of a call's windows: on 2 cores, two of one
#: thread each took 1.2 s for a case's 12 windows where one of two threads took 1.5 s (bench_engines.py).
OPENVINO_STREAMS = 2


class WindowPredictor(Protocol):
    """Maps a batch of windows and the present slots to logits: what sliding-window inference calls.

    Attributes:
        engine: what runs, for people and records, e.g. ``"eager"``, ``"openvino bf16"``.
        device: where it runs now: ``cpu``, ``cuda`` or ``cuda:N``.
        notes: what happened that the user should know (a fallback), appended as it happens.
        parallel: runs made at once, each on its share of a call's windows: a call should hold this
            many times the windows of one run.
    """

    engine: str
    device: str
    notes: list[str]
    parallel: int

    def __call__(self, window: np.ndarray, present: Sequence[str]) -> np.ndarray:
        """
        Args:
            window: (B, M, D, H, W) float32; channel m is slot m, absent ones ignored.
            present: the present slots, in bundle order.
        Returns:
            (B, C, D, H, W) float32 logits.
        """
        ...


class EagerPredictor:
    """The network itself, in PyTorch, on its device (the reference).

    On CUDA it runs under mixed precision (bf16 where supported) unless ``amp`` is off. When CUDA runs
    out of memory, the network moves to the CPU for the rest of its runs, with a note.

    Args:
        net: the network in eval mode, on ``device``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision on CUDA.
    """

    engine = "eager"
    parallel = 1

    def __init__(self, net: MAGMSNet, device: str = "cpu", amp: bool = True) -> None:
        self.net, self.device, self.amp = net, device, amp
        self.notes: list[str] = []

    def __call__(self, window: np.ndarray, present: Sequence[str]) -> np.ndarray:
        import torch

        if self.device.startswith("cuda"):
            try:
                return self._run(window, present)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                self.notes.append("CUDA ran out of memory: running on the CPU")
                self.net.cpu()
                self.device = "cpu"
        return self._run(window, present)

    def _run(self, window: np.ndarray, present: Sequence[str]) -> np.ndarray:
        import torch

        x = torch.from_numpy(window).to(self.device)
        cuda = self.device.startswith("cuda")
        if self.amp and cuda:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            context: Any = torch.autocast("cuda", dtype=dtype)
        else:
            context = contextlib.nullcontext()
        with torch.inference_mode(), context:
            return self.net(x, present=list(present)).float().cpu().numpy()


class GraphPredictor:
    """Exported graphs: the present slots' encoders, the mean of their features, the decoder.

    The network of a subset is compiled when the subset is first run: a run from one sequence
    compiles one encoder and the decoder.

    Args:
        slots: the network's slots, in channel order.
        compile_subset: the present slots, in bundle order -> the network compiled for them.
        engine: what runs, e.g. ``"openvino fp32"``.
        parallel: runs the engine makes at once (:data:`OPENVINO_STREAMS`), each on its share of a
            call's windows.
    """

    device = "cpu"

    def __init__(self, slots: Sequence[str], compile_subset: Callable[[tuple[str, ...]], SubsetGraph], engine: str,
                 parallel: int = 1) -> None:
        self.slots = tuple(slots)
        self.engine = engine
        self.parallel = parallel
        self.notes: list[str] = []
        self._compile = compile_subset
        self._subsets: dict[tuple[str, ...], SubsetGraph] = {}

    def __call__(self, window: np.ndarray, present: Sequence[str]) -> np.ndarray:
        if not present:
            raise ValueError("present: at least one slot is needed")
        subset = tuple(present)
        if subset not in self._subsets:
            self._subsets[subset] = self._compile(subset)
        x = np.asarray(window, dtype=np.float32)
        return self._subsets[subset]([np.ascontiguousarray(x[:, m : m + 1]) for m in map(self.slots.index, subset)])


def _onnxruntime_compiler(folder: Path, threads: int) -> Callable[[tuple[str, ...]], SubsetGraph]:
    import onnxruntime as ort

    sessions: dict[str, Callable[[Arrays], Arrays]] = {}

    def session(name: str) -> Callable[[Arrays], Arrays]:
        if name not in sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            loaded = ort.InferenceSession(str(folder / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
            inputs = [i.name for i in loaded.get_inputs()]
            sessions[name] = lambda arrays: loaded.run(None, dict(zip(inputs, arrays)))
        return sessions[name]

    def compile_subset(present: tuple[str, ...]) -> SubsetGraph:
        encoders, decoder = [session(f"encoder-{slot}") for slot in present], session("decoder")

        def run(windows: Arrays) -> np.ndarray:
            fused = encoders[0]([windows[0]])
            for encoder, x in zip(encoders[1:], windows[1:]):  # summed in slot order and divided once, as MeanFusion does
                for total, f in zip(fused, encoder([x])):
                    total += f
            scale = np.float32(len(present))
            return decoder([f / scale for f in fused])[0]

        return run

    return compile_subset


def _openvino_compiler(folder: Path, precision: str, threads: int) -> tuple[Callable[[tuple[str, ...]], SubsetGraph], str]:
    import openvino as ov

    core = ov.Core()
    compiled_cache = folder / "openvino-cache"
    if os.access(folder, os.W_OK):  # OpenVINO's own cache of compiled models: compiling again takes half as long
        core.set_property({"CACHE_DIR": str(compiled_cache)})
    config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": OPENVINO_STREAMS}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    # the precision OpenVINO will compute in: asked for, or its own choice for this CPU (bf16 with AMX)
    ran = "fp32" if precision == "fp32" else _ov_precision(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))

    def compile_subset(present: tuple[str, ...]) -> SubsetGraph:
        compiled = core.compile_model(_openvino_subset_model(core, folder, present), "CPU", config)
        requests = [compiled.create_infer_request() for _ in range(OPENVINO_STREAMS)]

        def run(windows: Arrays) -> np.ndarray:
            parts = np.array_split(np.arange(len(windows[0])), min(len(requests), len(windows[0])))
            for request, part in zip(requests, parts):  # each on its own stream, at once
                request.start_async([x[part[0] : part[-1] + 1] for x in windows])
            logits = []
            for request, _ in zip(requests, parts):
                request.wait()
                logits.append(np.array(request.get_output_tensor(0).data, dtype=np.float32))  # its buffer is reused
            return np.concatenate(logits) if len(logits) > 1 else logits[0]

        return run

    return compile_subset, ran


def _openvino_subset_model(core: Any, folder: Path, present: tuple[str, ...]) -> Any:
    """One OpenVINO model of the present slots' encoders, the mean of their features and the decoder;
    its inputs are the slots' windows (``image-<slot>``), its output the logits."""
    import openvino as ov
    import openvino.opset13 as ops

    encoders = [core.read_model(str(folder / f"encoder-{slot}.onnx")) for slot in present]
    decoder = core.read_model(str(folder / "decoder.onnx"))
    for slot, encoder in zip(present, encoders):
        image = encoder.get_parameters()[0]
        image.set_friendly_name(f"image-{slot}")
        image.output(0).get_tensor().set_names({f"image-{slot}"})
    for level, feature in enumerate(decoder.get_parameters()):
        # what each encoder's result node gives at this level, summed in slot order and divided once (MeanFusion)
        total = encoders[0].outputs[level].get_node().input_value(0)
        for encoder in encoders[1:]:
            total = ops.add(total, encoder.outputs[level].get_node().input_value(0)).output(0)
        if len(present) > 1:
            total = ops.divide(total, ops.constant(np.float32(len(present)))).output(0)
        for target in feature.output(0).get_target_inputs():
            target.replace_source_output(total)
    return ov.Model(decoder.get_results(), [e.get_parameters()[0] for e in encoders], "+".join(present))


def _ov_precision(hint: Any) -> str:
    text = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(text, text)


def _threads() -> int:
    """Threads for an exported engine: ``OMP_NUM_THREADS`` when set (as torch takes it), else 0, the
    engine's own choice (one per physical core)."""
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "0")), 0)
    except ValueError:
        return 0


def _load_eager(model: OpenedModel, device: str, amp: bool) -> EagerPredictor:
    from magms.bundle import load_network

    return EagerPredictor(load_network(model, device=device), device, amp)


def make_predictor(
    model: OpenedModel, device: str = "cpu", engine: str = "eager", precision: str = "fp32", amp: bool = True,
) -> tuple[WindowPredictor, list[str]]:
    """The predictor of the engine asked for, and notes for the user (the engine auto chose, an export).

    Only the eager engine, or an export, loads the network in PyTorch; exported graphs found in the
    cache run without importing torch. The graphs are keyed by the recorded sha256, which the opened
    model's weights were verified against: they run only for those weights.

    Args:
        model: the opened bundle (:func:`magms.bundle.open_model`); the graphs are cached beside its
            folder when it is writable.
        device: where the network runs: ``cpu``, ``cuda`` or ``cuda:N``.
        engine: one of :data:`ENGINES`.
        precision: one of :data:`PRECISIONS`, for the exported engines.
        amp: mixed precision on CUDA, for the eager engine.
    Raises:
        ConfigError: see :func:`resolve_engine`; an unknown precision; no writable cache folder.
        BundleError: the weights do not load into the network.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    name, note = resolve_engine(engine, device)
    notes = [note] if note else []
    if name == "eager":
        return _load_eager(model, device, amp), notes
    eager: list[EagerPredictor] = []  # loaded only to export, and kept for the fallback

    def load_net() -> MAGMSNet:
        eager.append(_load_eager(model, "cpu", amp))
        return eager[0].net

    info = model.info
    try:
        folder, exported = cached_graphs(info, model.folder, load_net)
    except Exception as err:  # auto falls back to the reference; an engine asked for by name says why it cannot run
        if engine != "auto":
            raise
        logger.warning("exporting the graphs for %s failed", name, exc_info=True)
        predictor = eager[0] if eager else _load_eager(model, device, amp)
        return predictor, [f"engine auto: eager (exporting the graphs for {name} failed: {err})"]
    if exported:
        notes.append(f"exported the network's graphs for {name} to {folder} (once per model)")
    if name == "onnxruntime":
        predictor = GraphPredictor(info.slots, _onnxruntime_compiler(folder, _threads()), f"{name} fp32")
    else:
        compile_subset, ran = _openvino_compiler(folder, precision, _threads())
        predictor = GraphPredictor(info.slots, compile_subset, f"{name} {ran}", parallel=OPENVINO_STREAMS)
    if engine == "auto" or precision == "auto":  # say what was chosen, and how to get the reference
        chosen = "engine auto" if engine == "auto" else f"engine {name}"
        notes.insert(0, f"{chosen}: {predictor.engine}{'' if precision == 'fp32' else ' (precision auto)'} "
                        "(--engine eager --precision fp32 for the reference)")
    return predictor, notes
