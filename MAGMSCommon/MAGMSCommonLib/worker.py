"""The refinement worker (``magms serve``) as a child process: requests written to its stdin, replies polled.

The worker keeps the network loaded between clicks (:mod:`magms.inference.worker`); this side only writes
request lines and collects reply lines (:mod:`magms.protocol`). Reader threads queue the replies and keep the
last lines of stderr, and :meth:`WorkerProcess.poll` hands the replies over, so the panel never blocks on a
pipe: its timer polls, as for the other child processes (:mod:`MAGMSCommonLib.runner`).

Through Slicer's ``PythonSlicer`` launcher the pipes reach the real Python. ``PythonSlicer`` has no splash
screen (``SuperBuild/python_configure_python_launcher.cmake``, v5.8.1:248), so the CTK launcher forwards the
output channels (``Base/ctkAppLauncher.cpp``, ``ctkAppLauncherPrivate::runProcess``); standard input reaches the
child through ``ctkInteractiveProcess::setupChildProcess`` (``dup2``) on Linux and macOS and
``QProcess::ForwardedInputChannel`` on Windows (commontk/AppLauncher v0.1.31, which Slicer 5.8.1 uses, and
later). The worker runs in a session of its own, so that :meth:`WorkerProcess.stop` ends the launcher and the
Python behind it together.
"""

from __future__ import annotations

import collections
import itertools
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from magms.protocol import read_message, worker_request
from MAGMSCommonLib.runner import killProcessTree, processGroupOptions

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """One ``magms serve`` child: start it, send requests, poll the replies, stop it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._errors: collections.deque[str] = collections.deque(maxlen=20)
        self._ids = itertools.count(1)
        self._errorReader: threading.Thread | None = None
        self.ready: dict[str, Any] | None = None  # the worker's first line, once it came

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Start the worker; its ready line arrives through :meth:`poll` like a reply (with ``ready``).

        Raises:
            RuntimeError: a worker is running already.
            OSError: the program cannot be started.
        """
        if self.running:
            raise RuntimeError("the refinement worker is running already")
        group = processGroupOptions()
        self._process = subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="utf-8", errors="replace", env=dict(env) if env is not None else None, **group,
        )
        self._replies, self.ready = queue.Queue(), None
        self._errors.clear()
        threading.Thread(target=self._readReplies, args=(self._process, self._replies), daemon=True).start()
        self._errorReader = threading.Thread(target=self._readErrors, args=(self._process, self._errors), daemon=True)
        self._errorReader.start()

    @staticmethod
    def _readReplies(process: subprocess.Popen[str], replies: queue.Queue) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                replies.put(read_message(line, "worker reply"))
            except ValueError as err:  # a stray line (a library printing): said, not fatal
                replies.put({"id": None, "ok": False, "error": str(err)})
        replies.put(None)

    @staticmethod
    def _readErrors(process: subprocess.Popen[str], errors: collections.deque) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if line.strip():
                errors.append(line.rstrip("\r\n"))

    def send(self, op: str, **fields: Any) -> int:
        """Write one request; returns its id (its reply carries it).

        Raises:
            RuntimeError: the worker is not running (with its last error lines).
        """
        if not self.running or self._process is None or self._process.stdin is None:
            raise RuntimeError(f"the refinement worker is not running{self._lastError()}")
        requestID = next(self._ids)
        try:
            self._process.stdin.write(worker_request(op, requestID, **fields))
            self._process.stdin.flush()
        except OSError as err:  # it ended between the check and the write
            raise RuntimeError(f"the refinement worker stopped ({err}){self._lastError()}") from None
        return requestID

    def poll(self) -> list[dict[str, Any]]:
        """The replies that came since the last call, oldest first. When the worker has ended, a last reply
        ``{"id": None, "ok": False, "ended": True, "error": ...}`` says so once."""
        replies = []
        while True:
            try:
                reply = self._replies.get_nowait()
            except queue.Empty:
                return replies
            if reply is None:
                code = self._process.wait() if self._process is not None else None
                if self._errorReader is not None:
                    self._errorReader.join(timeout=2)  # its last lines say why it ended
                replies.append({"id": None, "ok": False, "ended": True,
                                "error": f"the refinement worker ended (exit status {code}){self._lastError()}"})
                return replies
            if reply.get("ready"):
                self.ready = reply
            replies.append(reply)

    def wait(self, requestID: int, timeout: float) -> dict[str, Any]:
        """Poll until the reply to ``requestID`` (scripts and tests; the panel polls from its timer).

        Raises:
            TimeoutError: no reply within ``timeout`` seconds.
            RuntimeError: the worker ended first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reply in self.poll():
                if reply.get("id") == requestID:
                    return reply
                if reply.get("ended"):
                    raise RuntimeError(reply["error"])
            time.sleep(0.02)
        raise TimeoutError(f"no reply to request {requestID} within {timeout} s")

    def stop(self, grace: float = 1.5) -> None:
        """Ask the worker to stop, then end its whole process group if it has not within ``grace`` seconds."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                self.send("stop")
                process.stdin.close()
                process.wait(timeout=grace)
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                pass
        if process.poll() is None:
            killProcessTree(process)
            process.wait()
        self._process = None

    def _lastError(self) -> str:
        return f": {self._errors[-1]}" if self._errors else ""
