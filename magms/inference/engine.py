"""Which engine runs the network: eager PyTorch (the reference), or the exported graphs in OpenVINO or
ONNX Runtime on the CPU; ``auto`` takes the first installed of :data:`AUTO_ORDER` on the CPU, eager on CUDA.

Nothing here imports torch, OpenVINO or ONNX Runtime at import time (the CLI reads the choices).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import TYPE_CHECKING

from magms.errors import ConfigError
from magms.protocol import ENGINES

if TYPE_CHECKING:
    pass

__all__ = ["AUTO_ORDER", "FAST_EXTRA", "resolve_engine"]

logger = logging.getLogger(__name__)

#: What ``auto`` picks on the CPU, the first installed: engines measured faster than eager at equal labels
#: (Testing/benchmarks/bench_engines.py). ONNX Runtime was slower than eager there, so auto never picks it.
AUTO_ORDER = ("openvino",)
#: How to install the optional engines.
FAST_EXTRA = "pip install 'magms-slicer[fast]'"
# the Python package each engine imports; the export needs ``onnx`` as well
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}


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
