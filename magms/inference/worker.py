"""The refinement worker behind ``magms serve``: a :class:`~magms.inference.refine.Refiner` answering requests.

It reads one JSON request per line and writes one JSON reply per line (:mod:`magms.protocol`), so the
network stays loaded between clicks and the Slicer module talks to it through a pipe. A request that
cannot be carried out (malformed, a file that does not read, a click outside the image) gets an error
reply and the worker waits for the next one; only ``stop`` or the end of its input ends it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TextIO

from magms.errors import MAGMSError
from magms.inference.refine import Refiner
from magms.protocol import LabelPatch, encode_patch, read_message, worker_reply

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def _field(message: dict[str, Any], name: str, kind: type) -> Any:
    """A request's field, of the type asked for (a JSON true is no number)."""
    if name not in message:
        raise ValueError(f"request {message.get('op')!r} needs the field {name!r}")
    value = message[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"request field {name!r} must be a {kind.__name__}, got {value!r}")
    return value


def _patch(patch: LabelPatch | None) -> dict[str, Any] | None:
    return None if patch is None else encode_patch(patch)


def _open(refiner: Refiner, message: dict[str, Any], preprocess: str) -> dict[str, Any]:
    from magms.data.clinical import preprocess_inputs

    inputs = _field(message, "inputs", dict)
    if not inputs or not all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
        raise ValueError(f"request field 'inputs' must map slot names to file paths, got {inputs!r}")
    # prepared as magms segment --preprocess prepares them, so that the worker's case is the one Apply segmented
    prepared = preprocess_inputs(inputs, refiner.info.slots, preprocess)
    result = refiner.open(prepared.images)
    return {"present": list(result.present), "reference": result.reference_slot, "notes": prepared.notes + result.notes}


def _click(refiner: Refiner, message: dict[str, Any]) -> dict[str, Any]:
    point = _field(message, "point", list)
    if len(point) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point):
        raise ValueError(f"request field 'point' must be three numbers, got {point!r}")
    patch = refiner.click(point, _field(message, "region", str), _field(message, "positive", bool), _field(message, "frame", str))
    return {"patch": _patch(patch)}


_HANDLERS: dict[str, Callable[[Refiner, dict[str, Any], str], dict[str, Any]]] = {
    "open": _open,
    "click": lambda refiner, message, _: _click(refiner, message),
    "undo": lambda refiner, *_: {"patch": _patch(refiner.undo())},
    "clear": lambda refiner, *_: {"patch": _patch(refiner.clear())},
    "stop": lambda refiner, *_: {},
}


def serve(refiner: Refiner, requests: TextIO, replies: TextIO, preprocess: str = "none") -> int:
    """Answer requests until ``stop`` or the end of ``requests``.

    Args:
        refiner: the loaded model, no case open yet.
        requests: one JSON request per line (standard input).
        replies: where the ready line and one reply per request go (standard output), each flushed.
        preprocess: how ``open`` prepares a case's images (``magms segment --preprocess``).
    Returns:
        0.
    """

    def reply(request_id: Any, ok: bool, **fields: Any) -> None:
        replies.write(worker_reply(request_id, ok, **fields))
        replies.flush()

    reply(None, True, ready=True, regions=list(refiner.regions), slots=list(refiner.info.slots))
    for line in requests:
        if not line.strip():
            continue
        request_id = None
        started = time.perf_counter()
        try:
            message = read_message(line, "request")
            request_id = message.get("id")
            op = message.get("op")
            if op not in _HANDLERS:
                raise ValueError(f"unknown op {op!r}: expected one of {', '.join(_HANDLERS)}")
            fields = _HANDLERS[op](refiner, message, preprocess)
        except (MAGMSError, ValueError) as err:
            reply(request_id, False, error=str(err))
            continue
        except Exception as err:  # the worker outlives a bug in one request; the traceback goes to stderr
            logger.exception("request failed")
            reply(request_id, False, error=f"internal error: {type(err).__name__}: {err}")
            continue
        reply(request_id, True, seconds=round(time.perf_counter() - started, 3), **fields)
        if op == "stop":
            break
    return 0
