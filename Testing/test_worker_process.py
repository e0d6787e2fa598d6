"""The refinement worker seen from the Slicer side (``MAGMSCommonLib.worker``), with stand-in child processes: a worker
that hangs is ended by stop, one that dies is reported once with its last error line."""

from __future__ import annotations

import sys
import time

import pytest

from MAGMSCommonLib.worker import WorkerProcess


def _poll_until(worker: WorkerProcess, predicate, timeout: float = 20.0) -> list[dict]:
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += worker.poll()
        if predicate(seen):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {seen}")


def test_a_worker_that_hangs_is_ended_by_stop():
    worker = WorkerProcess()
    worker.start([sys.executable, "-c", "import time, sys; sys.stdin.close(); time.sleep(120)"])
    process = worker._process
    started = time.monotonic()
    worker.stop(grace=0.5)
    assert process.poll() is not None and time.monotonic() - started < 10 and not worker.running


def test_a_worker_that_dies_is_reported_once_with_its_last_error_line():
    worker = WorkerProcess()
    worker.start([sys.executable, "-c", "import sys; print('{\"id\": null, \"ok\": true, \"ready\": true}', flush=True); "
                                        "sys.stderr.write('boom: no model\\n'); sys.exit(3)"])
    replies = _poll_until(worker, lambda seen: any(r.get("ended") for r in seen))
    assert replies[0]["ready"] and worker.ready is not None
    ended = [r for r in replies if r.get("ended")]
    assert len(ended) == 1 and "exit status 3" in ended[0]["error"] and "boom: no model" in ended[0]["error"]
    assert worker.poll() == []
    with pytest.raises(RuntimeError, match="not running"):
        worker.send("click")


def test_a_stray_line_on_stdout_is_an_error_reply_not_a_crash():
    worker = WorkerProcess()
    worker.start([sys.executable, "-c", "print('hello from a library', flush=True)"])
    replies = _poll_until(worker, lambda seen: any(r.get("ended") for r in seen))
    assert "not JSON" in replies[0]["error"]
    worker.stop()
