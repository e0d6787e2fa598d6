"""What the ``magms`` child process and the Slicer modules agree on, without importing torch.

The Slicer side runs ``magms segment`` and ``magms train`` as child processes and follows them
through their stderr and their output folder, and ``magms serve`` (the refinement worker) through
its standard input and output. Both sides import the line format, the file names, the worker's
messages and the shared constants from here, so they cannot drift apart.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
    "WORKER_OPS",
    "LabelPatch",
    "worker_request",
    "worker_reply",
    "read_message",
    "encode_patch",
    "decode_patch",
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


# ------------------------------------------------------------------------------------------------
# the refinement worker, ``magms serve``: one JSON object per line each way. The worker first writes
# {"ok": true, "ready": ..., "regions": [...]} once its model is loaded; then each request gets one
# reply with the request's "id". A request it cannot carry out gets {"ok": false, "error": "..."}
# and the worker goes on; "stop" ends it.
#
#   {"id": 1, "op": "open", "inputs": {"flair": "/path/flair.nii.gz", ...}}
#       -> {"id": 1, "ok": true, "present": [...], "reference": "flair", "seconds": 2.9}
#   {"id": 2, "op": "click", "point": [x, y, z], "frame": "RAS", "region": "wt", "positive": true}
#       -> {"id": 2, "ok": true, "patch": <encode_patch, with "changed">, "seconds": 0.4}
#   {"id": 3, "op": "undo"} / {"id": 4, "op": "clear"} -> {"id": 3, "ok": true, "patch": <encode_patch> or null}
#   {"id": 5, "op": "stop"} -> {"id": 5, "ok": true}, then the worker exits

#: What the worker does on request.
WORKER_OPS = ("open", "click", "undo", "clear", "stop")


@dataclasses.dataclass(frozen=True)
class LabelPatch:
    """Labels of a box of the reference image: what a click changed.

    Attributes:
        start: the box's first voxel, an (i, j, k) index of the reference image (ITK and Slicer IJK order).
        labels: (k, j, i) label values (numpy's order of an ITK or Slicer image array).
        changed: (k, j, i) bool, the voxels whose label the click changed, so that a segmentation edited since
            takes only those; None when the whole box is news (an undo's, a clear's).
    """

    start: tuple[int, int, int]
    labels: np.ndarray
    changed: np.ndarray | None = None

    @property
    def region(self) -> tuple[slice, slice, slice]:
        """The box as (k, j, i) slices of the reference image's array."""
        return tuple(slice(s, s + n) for s, n in zip(self.start[::-1], self.labels.shape))  # type: ignore[return-value]

    @classmethod
    def of(cls, labels: np.ndarray, region: Sequence[slice], before: np.ndarray | None = None) -> LabelPatch:
        """A copy of ``labels`` (k, j, i) over ``region`` ((k, j, i) slices); with ``before``, the region's labels
        before the change, the voxels that differ from them are :attr:`changed`."""
        box = labels[tuple(region)].copy()
        changed = None if before is None else box != before
        return cls(tuple(int(r.start) for r in region[::-1]), box, changed)  # type: ignore[arg-type]


def encode_patch(patch: LabelPatch) -> dict[str, Any]:
    """A patch as JSON: start, size (i, j, k), dtype and the C-order bytes in base64."""
    labels = np.ascontiguousarray(patch.labels)
    data = {"start": [int(v) for v in patch.start], "size": [int(v) for v in labels.shape[::-1]],
            "dtype": labels.dtype.str, "data": base64.b64encode(labels.tobytes()).decode("ascii")}
    if patch.changed is not None:
        data["changed"] = base64.b64encode(np.packbits(patch.changed, axis=None).tobytes()).decode("ascii")
    return data


def decode_patch(data: Mapping[str, Any]) -> LabelPatch:
    """The inverse of :func:`encode_patch`.

    Raises:
        ValueError: a field missing or malformed, or the bytes do not fill the size.
    """
    try:
        size = [int(v) for v in data["size"]]
        raw = base64.b64decode(data["data"], validate=True)
        labels = np.frombuffer(raw, np.dtype(data["dtype"])).reshape(size[::-1]).copy()
        start = tuple(int(v) for v in data["start"])
        changed = None
        if data.get("changed") is not None:
            bits = np.frombuffer(base64.b64decode(data["changed"], validate=True), np.uint8)
            if bits.size != (labels.size + 7) // 8:
                raise ValueError(f"'changed' holds {bits.size} bytes, the size needs {(labels.size + 7) // 8}")
            changed = np.unpackbits(bits, count=labels.size).astype(bool).reshape(labels.shape)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"malformed label patch: {err}") from None
    if len(start) != 3 or len(size) != 3:
        raise ValueError(f"malformed label patch: start {start} and size {size} need three values each")
    return LabelPatch(start, labels, changed)  # type: ignore[arg-type]


def worker_request(op: str, request_id: int, **fields: Any) -> str:
    """One request line for the worker (ends with a newline)."""
    if op not in WORKER_OPS:
        raise ValueError(f"op: expected one of {', '.join(WORKER_OPS)}, got {op!r}")
    return json.dumps({"id": request_id, "op": op, **fields}) + "\n"


def worker_reply(request_id: Any, ok: bool, **fields: Any) -> str:
    """One reply line of the worker (ends with a newline)."""
    return json.dumps({"id": request_id, "ok": ok, **fields}) + "\n"


def read_message(line: str, where: str = "message") -> dict[str, Any]:
    """A request or reply line as a dict.

    Raises:
        ValueError: not one JSON object (the message says what was read).
    """
    try:
        message = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not JSON ({err.msg}): {line.strip()[:80]!r}") from None
    if not isinstance(message, dict):
        raise ValueError(f"{where} is not a JSON object: {line.strip()[:80]!r}")
    return message
