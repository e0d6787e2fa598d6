"""What the ``magms`` child process and the Slicer modules agree on, without importing torch.

The Slicer side runs ``magms segment`` and ``magms train`` as child processes and follows them
through their stderr and their output folder. Both sides import the line format, the file names
and the shared constants from here, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = [
    "TARGET_PROTOCOLS",
    "METRICS_FILE",
    "CHECKPOINT_DIR",
    "CHECKPOINT_STATE_FILE",
    "STOP_REQUEST_FILE",
    "RUN_OPTIONS_FILE",
    "MIN_OVERLAP",
    "PREPROCESS_MODES",
    "ENGINES",
    "EXPORTED_ENGINES",
    "PRECISIONS",
    "EngineChoice",
    "EngineRan",
    "format_ran",
    "parse_ran",
    "ProgressLine",
    "format_progress",
    "parse_progress",
]

#: One row per epoch, appended and flushed, so another process can follow a training run.
METRICS_FILE = "metrics.csv"
#: The training checkpoint folder inside a run's output folder, and the file that marks it complete.
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.json"
#: A file in a run's output folder that asks ``magms train`` to save a checkpoint and stop. The trainer
#: looks for it between steps: a request through the file system reaches it through any launcher
#: (PythonSlicer does not forward signals to python-real) and the same way on every platform.
STOP_REQUEST_FILE = "stop-requested"
#: The ``magms train`` options a run was started with, in its output folder, as a ``--config`` file: ``--resume``
#: continues with them (those given again win), so a default changed in between does not change the run.
RUN_OPTIONS_FILE = "train_options.json"

#: Smallest fraction of an input's world box that must lie inside the reference input's box.
MIN_OVERLAP = 0.5

#: ``--preprocess`` of ``magms segment`` and ``magms train`` (:mod:`magms.data.clinical`): nothing, what
#: the inputs need, co-registration, brain extraction, or both.
PREPROCESS_MODES = ("none", "auto", "register", "strip", "full")
#: ``--targets`` choices: the radiotherapy target protocols of :mod:`magms.targets`.
TARGET_PROTOCOLS = ("estro-eano-2023", "rtog-nrg", "lgg")

#: ``--engine`` choices: eager PyTorch (the reference), the exported graphs in OpenVINO or ONNX Runtime, or auto.
ENGINES = ("auto", "eager", "openvino", "onnxruntime")
#: The engines that run exported graphs, on the CPU.
EXPORTED_ENGINES = ("openvino", "onnxruntime")
#: ``--precision`` choices.
PRECISIONS = ("fp32", "auto")


@dataclasses.dataclass(frozen=True)
class EngineChoice:
    """Where and how the network is to run, named as ``magms segment`` names it (``--device``, ``--engine``,
    ``--precision``): one record from the Segmenter's panel to its child process, which decides nothing again.

    Raises:
        ValueError: an engine or precision ``magms segment`` does not know (named).
    """

    device: str = "auto"
    engine: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine: expected one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclasses.dataclass(frozen=True)
class EngineRan:
    """What ran the network: ``eager``, ``openvino`` or ``onnxruntime``; its arithmetic (``fp32``, ``bf16``,
    ``fp16``, or ``amp``: mixed precision on CUDA); the device (``cpu``, ``cuda``, ``cuda:N``)."""

    engine: str
    precision: str
    device: str

    def describe(self) -> str:
        return f"{self.engine} {self.precision} on {self.device}"


_RAN = re.compile(r"^ran (?P<engine>\S+) (?P<precision>\S+) on (?P<device>\S+)$")


def format_ran(ran: EngineRan) -> str:
    """The line ``magms segment --progress lines`` prints on stderr once the network is ready, e.g. ``ran openvino bf16 on cpu``."""
    return f"ran {ran.describe()}"


def parse_ran(line: str) -> EngineRan | None:
    """The inverse of :func:`format_ran`; None for any other line."""
    match = _RAN.match(line.rstrip())
    return EngineRan(match["engine"], match["precision"], match["device"]) if match else None


_PROGRESS = re.compile(r"^progress (?P<done>\d+)/(?P<total>\d+)(?:\s+(?P<detail>.*))?$")


@dataclasses.dataclass(frozen=True)
class ProgressLine:
    """``progress DONE/TOTAL [detail]``: windows of a segmentation, or steps of a training run."""

    done: int
    total: int
    detail: str = ""


def format_progress(done: int, total: int, detail: str = "") -> str:
    """The line ``--progress lines`` prints on stderr, e.g. ``progress 3/8 flair+t1c``."""
    return f"progress {done}/{total}" + (f" {detail}" if detail else "")


def parse_progress(line: str) -> ProgressLine | None:
    """The inverse of :func:`format_progress`; None for any other line."""
    match = _PROGRESS.match(line.rstrip())
    if match is None:
        return None
    return ProgressLine(int(match["done"]), int(match["total"]), match["detail"] or "")
