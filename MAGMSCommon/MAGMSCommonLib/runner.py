"""Runs ``magms`` in a separate process so that Slicer stays responsive, with progress and cancel.

The caller polls (the widget from a ``qt.QTimer``, tests in a loop): a reader thread queues the
child's stderr lines, :meth:`ProcessRunner.poll` turns them into signals. ``progress DONE/TOTAL``
lines (``--progress lines``, :mod:`magms.protocol`) become :attr:`ProcessRunner.progress`; the last other line is the
error message if the process fails. Cancel ends the whole process tree and is reported as
cancelled, not as a failure.
"""

from __future__ import annotations

import enum
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from magms.protocol import parse_progress

from .signal import Signal

__all__ = ["RunState", "ProcessRunner", "processGroupOptions", "killProcessTree"]


class RunState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ProcessRunner:
    """One child process at a time.

    Signals:
        progress(done: int, total: int): from ``progress DONE/TOTAL`` lines.
        output(line: str): every other line of the child's stderr.
        finished(state: RunState, message: str): once, when the child has ended; ``message`` is
            the child's last error line for FAILED, empty otherwise.
    """

    def __init__(self) -> None:
        self.progress = Signal(int, int)
        self.output = Signal(str)
        self.finished = Signal(RunState, str)
        self.state = RunState.IDLE
        self.lines: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancelled = False

    @property
    def running(self) -> bool:
        return self.state is RunState.RUNNING

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, command: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None,
              stdout: str | os.PathLike[str] | None = None) -> None:
        """Start ``command``.

        Args:
            stdout: a file for the child's standard output (its results); by default it is discarded.
        Raises:
            RuntimeError: a process is still running.
            OSError: the process cannot be started (no such program, no permission); the runner stays
                as it was, not running.
        """
        if self.running:
            raise RuntimeError("a process is still running")
        self.lines, self._cancelled = [], False
        self._queue = queue.Queue()
        group = processGroupOptions()
        out = open(stdout, "w", encoding="utf-8") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
        try:
            self._process = subprocess.Popen(
                list(command), stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", env=dict(env) if env is not None else None, cwd=cwd, **group,
            )
        finally:
            if stdout is not None:
                out.close()  # the child has its own handle
        # running only once there is a process: a start that raised (no such program) leaves nothing to cancel or poll
        self.state = RunState.RUNNING
        threading.Thread(target=self._read, args=(self._process, self._queue), daemon=True).start()

    @staticmethod
    def _read(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line.rstrip("\r\n"))
        lines.put(None)

    def poll(self) -> RunState:
        """Emit what the child has written since the last call; emit ``finished`` once it has ended."""
        if not self.running or self._process is None:
            return self.state
        ended = False
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            progress = parse_progress(line)
            if progress is not None:
                self.progress.emit(progress.done, progress.total)
            elif line.strip():
                self.lines.append(line)
                self.output.emit(line)
        if not ended:
            return self.state
        code = self._process.wait()
        if self._cancelled:
            self.state, message = RunState.CANCELLED, ""
        elif code == 0:
            self.state, message = RunState.SUCCEEDED, ""
        else:
            self.state = RunState.FAILED
            message = _errorMessage(self.lines) or f"the process ended with exit status {code}"
        self.finished.emit(self.state, message)
        return self.state

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> RunState:
        """Poll until the child has ended (for scripts and tests; the widget polls from a timer)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is RunState.RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the process did not end within {timeout} s")
            time.sleep(interval)
        return self.state

    def cancel(self, grace: float = 5.0) -> None:
        """End the child and everything it started: SIGTERM to its group, SIGKILL after ``grace`` s."""
        if not self.running or self._process is None:
            return
        self._cancelled = True
        process = self._process
        if sys.platform != "win32":
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        killProcessTree(process)  # also children that outlived the parent
        process.wait()
        self.wait(timeout=grace + 5)


def _errorMessage(lines: Sequence[str]) -> str:
    """The child's error: from its last ``magms ...: error:`` line to the end (a list of bad cases
    spans several lines), else its last line."""
    starts = [i for i, line in enumerate(lines) if ": error: " in line]
    return "\n".join(lines[starts[-1]:]) if starts else (lines[-1] if lines else "")


def processGroupOptions() -> dict:
    """``Popen`` options for a child in a new process group (session), so that ending it reaches every process it
    starts (through a launcher too); on Windows also no console window (Slicer has none; launchConsoleProcess hides it)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def killProcessTree(process: subprocess.Popen) -> None:
    """End a child started with :func:`processGroupOptions` and everything it started, at once."""
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False,
                       creationflags=subprocess.CREATE_NO_WINDOW)
    else:
        _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
