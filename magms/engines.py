"""Who runs the network on each sliding window: torch eager, or an exported graph on the CPU.

Eager PyTorch is the reference and the fallback. The exported engines, OpenVINO and ONNX Runtime,
run ONNX graphs made from the bundle's network. They follow the network's structure: each slot's
encoder and the shared decoder are separate graphs, and the mean of the present encoders'
features (:class:`~magms.networks.MeanFusion`) is taken between them. One export therefore serves
every subset of the slots (15 for four), and a run from one sequence compiles and runs one encoder.
OpenVINO joins the present encoders, their mean and the decoder into one model per subset when the
subset is first run, so that the features stay inside it (in its own layout and precision);
ONNX Runtime runs the graphs one after the other and takes the mean in numpy.

Graphs are data, not code: ONNX files and a JSON record (``graphs.json``), never pickles. They are
cached by the sha256 of the weights file, in this order:

* ``$MAGMS_ENGINE_CACHE/<sha256>/`` when that variable is set;
* ``<bundle>/.engines/<sha256[:16]>/`` beside the bundle when its folder is writable (older
  exports of replaced weights there are removed);
* ``$XDG_CACHE_HOME`` (default ``~/.cache``) ``/magms/engines/<sha256>/``.

The folder is written at once (:func:`magms.files.replace_folder`). A later run uses it when its
record matches (weights' sha256, slots, window shape, precision, format and the magms, torch and
ONNX versions that wrote it) and every graph's sha256 is the recorded one; otherwise it is exported
again.

Precision: the graphs are float32. ``fp32`` runs them in float32 on every engine; ``auto`` lets the
engine choose: OpenVINO then computes in bfloat16 on CPUs that have bf16 instructions (AVX512-BF16,
AMX) and float32 elsewhere; ONNX Runtime stays in float32. What ran is recorded in the predictor's
:attr:`~WindowPredictor.engine` (and so in each :class:`~magms.inference.Segmentation`).

Nothing here imports torch, OpenVINO or ONNX Runtime at import time (the CLI reads the choices).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

import magms
from magms.errors import ConfigError
from magms.files import replace_folder
from magms.protocol import ENGINES, EXPORTED_ENGINES, PRECISIONS

if TYPE_CHECKING:
    from magms.bundle import BundleInfo, OpenedModel
    from magms.networks import MAGMSNet

__all__ = [
    "ENGINES", "EXPORTED_ENGINES", "PRECISIONS", "AUTO_ORDER", "CACHE_ENV", "FAST_EXTRA", "GRAPHS_RECORD", "OPENVINO_STREAMS",
    "WindowPredictor", "EagerPredictor", "GraphPredictor", "resolve_engine", "engine_cache_folders", "cached_graphs",
    "export_graphs", "make_predictor",
]

logger = logging.getLogger(__name__)

#: What ``auto`` picks on the CPU, the first installed: engines measured faster than eager at equal labels
#: (Testing/benchmarks/bench_engines.py). ONNX Runtime was slower than eager there, so auto never picks it.
AUTO_ORDER = ("openvino",)
#: Where exported graphs go instead of beside the bundle or in the home cache.
CACHE_ENV = "MAGMS_ENGINE_CACHE"
#: How to install the optional engines.
FAST_EXTRA = "pip install 'magms-slicer[fast]'"
#: The record of an export, in its folder.
GRAPHS_RECORD = "graphs.json"
#: Version of the layout of an export folder.
GRAPHS_FORMAT = 1
#: ONNX opset of the exported graphs.
OPSET = 17
# the Python package each engine imports; the export needs ``onnx`` as well
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}

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


# --------------------------------------------------------------------------------------------
# choosing


def _import_engine(engine: str) -> None:
    """Import an engine's packages (and ``onnx``, which the export needs), or say what to install.

    Raises:
        ConfigError: a package is missing, naming it and the extra that installs it.
    """
    for package in (_PACKAGES[engine], "onnx"):
        try:
            if package == "onnx":  # found, not imported: a run whose graphs are cached never needs it
                if importlib.util.find_spec(package) is None:
                    raise ImportError(f"No module named {package!r}")
            else:
                importlib.import_module(package)
        except (ImportError, ValueError) as err:  # ValueError: find_spec of a module set to None
            raise ConfigError(
                f"--engine {engine} needs the optional package {package}, which is not installed ({err}): {FAST_EXTRA}"
            ) from None


def _installed(engine: str) -> bool:
    try:
        _import_engine(engine)
    except ConfigError:
        return False
    return True


def resolve_engine(engine: str, device: str) -> tuple[str, str | None]:
    """The engine that will run, and a note for the user when ``auto`` chose it.

    Args:
        engine: one of :data:`ENGINES`.
        device: where the network runs (``cpu``, ``cuda``, ``cuda:N``); the exported engines run on the CPU.
    Returns:
        (one of ``eager`` and :data:`EXPORTED_ENGINES`, a note or None).
    Raises:
        ConfigError: an unknown engine, an exported engine asked for with a CUDA device, or its
            package not installed.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "eager":
        return "eager", None
    if device != "cpu":
        if engine == "auto":  # eager with mixed precision is the fast path on CUDA
            return "eager", None
        raise ConfigError(f"--engine {engine} runs on the CPU, not on {device}: use --device cpu, or --engine eager or auto")
    if engine == "auto":
        for candidate in AUTO_ORDER:
            if _installed(candidate):
                return candidate, None  # the note names the precision too: make_predictor writes it
        return "eager", f"engine auto: eager ({', '.join(AUTO_ORDER)} not installed; {FAST_EXTRA} for a faster CPU path)"
    _import_engine(engine)
    return engine, None


# --------------------------------------------------------------------------------------------
# the cache


def engine_cache_folders(bundle: Path, weights_sha256: str) -> list[Path]:
    """Where the graphs of a bundle may be, in the order they are looked for and written."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return [Path(configured) / weights_sha256]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [bundle / ".engines" / weights_sha256[:16], home / "magms" / "engines" / weights_sha256]


def _versions() -> dict[str, str]:
    from importlib.metadata import version  # read, not imported: a cached run never imports torch (seconds)

    return {"magms": magms.__version__, "torch": version("torch"), "onnx": version("onnx")}


def _expected_record(info: BundleInfo) -> dict[str, Any]:
    """The record of an export of this bundle by this installation, without the files' digests."""
    return {
        "format_version": GRAPHS_FORMAT,
        "graphs": f"onnx opset {OPSET}",
        "weights_sha256": info.weights_sha256,
        "slots": list(info.slots),
        "window": list(info.preprocessing.patch_size),
        "precision": "fp32",
        "versions": _versions(),
    }


def _read_valid_record(folder: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The folder's record if it matches ``expected`` and its graphs are intact, else None (why is logged)."""
    from magms.bundle import file_sha256

    path = folder / GRAPHS_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.info("%s: unreadable (%s): exporting again", path, err)
        return None
    if not isinstance(record, dict) or {k: record.get(k) for k in expected} != expected:
        logger.info("%s: made for other weights, window or versions: exporting again", path)
        return None
    files = record.get("files")
    wanted = [f"encoder-{slot}.onnx" for slot in expected["slots"]] + ["decoder.onnx"]
    if not isinstance(files, dict) or sorted(files) != sorted(wanted):
        return None
    for name, digest in files.items():
        if not (folder / name).is_file() or file_sha256(folder / name) != digest:
            logger.info("%s: missing or changed: exporting again", folder / name)
            return None
    return record


def cached_graphs(info: BundleInfo, bundle: str | os.PathLike[str], load_net: Callable[[], MAGMSNet]) -> tuple[Path, bool]:
    """The folder of the bundle's exported graphs, exporting them first when no valid export exists.

    Args:
        info: the bundle's :class:`~magms.bundle.BundleInfo` (weights' sha256 checked on reading).
        bundle: the bundle folder.
        load_net: gives the bundle's network, called only to export (it imports torch).
    Returns:
        (the folder, whether it was exported now).
    Raises:
        ConfigError: no cache folder can be written (each tried is named).
    """
    folders = engine_cache_folders(Path(bundle), info.weights_sha256)
    expected = _expected_record(info)
    for folder in folders:
        if _read_valid_record(folder, expected) is not None:
            return folder, False
    net = load_net()
    failures = []
    for folder in folders:
        try:
            export_graphs(net, info, folder)
        except OSError as err:  # a read-only bundle folder: the next place
            failures.append(f"{folder} ({err})")
            continue
        if folder.parent.name == ".engines":  # beside the bundle: exports of replaced weights are stale
            for other in folder.parent.iterdir():
                if other != folder and not other.name.startswith("."):
                    shutil.rmtree(other, ignore_errors=True)
        return folder, True
    raise ConfigError(f"cannot write the exported graphs to {'; '.join(failures)}: set {CACHE_ENV} to a writable folder")


def export_graphs(net: MAGMSNet, info: BundleInfo, folder: Path) -> None:
    """Export each slot's encoder and the decoder as ONNX graphs, with their record, into ``folder``
    (replaced at once). The batch axis is dynamic; the window is the bundle's patch size.

    Raises:
        OSError: the folder cannot be written.
    """
    import copy

    import torch

    from magms.bundle import file_sha256

    model = copy.deepcopy(net).to("cpu").eval()
    window = tuple(info.preprocessing.patch_size)
    example = torch.zeros(2, 1, *window)
    with torch.inference_mode():
        levels = len(model.encoders[info.slots[0]](example))
    names = [f"f{i}" for i in range(levels)]
    batch = {0: "batch"}

    def fill(tmp: Path) -> None:
        files = {}
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of the dynamo one (which needs onnxscript),
            # and notes that instance norm uses the window's statistics, which is what eval does too
            warnings.simplefilter("ignore")
            for slot in info.slots:
                name = f"encoder-{slot}.onnx"
                torch.onnx.export(
                    model.encoders[slot], (example,), str(tmp / name), input_names=["image"], output_names=names,
                    dynamic_axes={"image": batch, **{n: batch for n in names}}, opset_version=OPSET, dynamo=False,
                )
                files[name] = file_sha256(tmp / name)
            with torch.no_grad():
                features = model.encoders[info.slots[0]](example)
            torch.onnx.export(
                model.decoder, (tuple(features),), str(tmp / "decoder.onnx"), input_names=names, output_names=["logits"],
                dynamic_axes={"logits": batch, **{n: batch for n in names}}, opset_version=OPSET, dynamo=False,
            )
            files["decoder.onnx"] = file_sha256(tmp / "decoder.onnx")
        record = {**_expected_record(info), "files": files}
        (tmp / GRAPHS_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    folder.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(folder, fill)
    logger.info("exported %d graphs of %s to %s", len(info.slots) + 1, ", ".join(info.slots), folder)


# --------------------------------------------------------------------------------------------
# the engines


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
