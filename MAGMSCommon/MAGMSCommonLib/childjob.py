"""A ``magms`` child process as a job of a panel: started from an options record, polled, its lines as signals.

Both modules run their work in children (``magms segment``, ``magms export``, ``magms train``), so the
part they share is here: the runner, the Python that runs ``magms``, the options written to a file
and passed as ``--config``, and what the child says besides progress (``note:`` lines and the
``ran`` line of :mod:`magms.protocol`). Each job says what its progress means and what to do when the
child ends. Plain-Python signals: PythonQt's Qt signals are unreliable on Python objects.
"""

from __future__ import annotations

import time
from pathlib import Path

import slicer

from magms.options import Options
from magms.protocol import EngineRan, parse_ran
from MAGMSCommonLib.child import childEnvironment, childPython, configCommand
from MAGMSCommonLib.runner import ProcessRunner, RunState
from MAGMSCommonLib.signal import Signal

__all__ = ["ChildJob"]


class ChildJob:
    """One ``magms`` child process at a time.

    Args:
        scene: the MRML scene the job reads or adds to.
        python: the Python that runs ``magms`` (default: :func:`~MAGMSCommonLib.child.childPython`).
        runner: the process runner (tests inject one that starts nothing).

    Signals:
        progress(fraction: float, text: str)
        failed(message: str)

    Attributes:
        notes: the child's ``note:`` lines (what it did beyond the plain run: registration, brain extraction).
        ran: what ran the network, from the child's ``ran`` line; None before it has said.
    """

    def __init__(self, scene: slicer.vtkMRMLScene, python: str | None = None, runner: ProcessRunner | None = None) -> None:
        self.scene = scene
        self.python = python or childPython()
        self.runner = runner or ProcessRunner()
        self.progress = Signal(float, str)
        self.failed = Signal(str)
        self.notes: list[str] = []
        self.ran: EngineRan | None = None
        self.runner.progress.connect(self._onProgress)
        self.runner.finished.connect(self._onRunFinished)
        self.runner.output.connect(self._onOutput)

    @property
    def running(self) -> bool:
        return self.runner.running

    def poll(self) -> None:
        """Call regularly (the widget's timer); signals are emitted from here."""
        if self.running:
            self.runner.poll()

    def wait(self, timeout: float | None = None) -> None:
        """Poll until the job has ended (scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the job did not end within {timeout} s")
            time.sleep(0.05)

    def _startChild(self, options: Options, configFile: Path) -> None:
        """Write ``options`` to ``configFile`` and start ``magms <command> --config configFile``; raises what
        starting raises (OSError: no such program)."""
        self.runner.start(configCommand(self.python, options, configFile), env=childEnvironment())

    def _onOutput(self, line: str) -> None:
        if line.startswith("note: "):
            self.notes.append(line[len("note: "):])
        self.ran = parse_ran(line) or self.ran

    def _onProgress(self, done: int, total: int) -> None:
        raise NotImplementedError

    def _onRunFinished(self, state: RunState, message: str) -> None:
        raise NotImplementedError
