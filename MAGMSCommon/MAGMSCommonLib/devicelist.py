"""The devices ``magms`` can run on, asked of the child Python (``magms devices``), never of Slicer's.

Listing CUDA devices means importing torch; done in Slicer's own process it would load torch (and
its CUDA libraries) into Slicer just to open a module. The query runs in the background, and the
list starts with what needs no answer.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .child import childEnvironment, childPython
from .runner import ProcessRunner, RunState

__all__ = ["KNOWN_WITHOUT_ASKING", "DeviceQuery", "showDeviceList"]

#: What the device list shows before the child has answered (and if it cannot).
KNOWN_WITHOUT_ASKING = [("auto", "auto (CUDA if present)"), ("cpu", "CPU")]


class DeviceQuery:
    """Runs ``magms devices`` once and hands ``(key, description)`` pairs to ``done``.

    Args:
        done: called with the devices (CUDA ones first, then the CPU), or with
            :data:`KNOWN_WITHOUT_ASKING` and a reason when the child could not tell.
        runner, python: injectable for tests.
    """

    def __init__(self, done: Callable[[list[tuple[str, str]], str], None], runner: ProcessRunner | None = None,
                 python: str | None = None) -> None:
        self.done = done
        self.runner = runner or ProcessRunner()
        self.python = python or childPython()
        self.folder: Path | None = None
        self.runner.finished.connect(self._onFinished)

    def start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="magms-devices-"))
        command = [self.python, "-m", "magms", "devices", "--output", str(self.folder / "devices.json")]
        self.runner.start(command, env=childEnvironment())

    def startOnce(self) -> None:
        """Ask once per panel: the devices do not change while Slicer runs."""
        if self.folder is None:
            self.start()

    def cancel(self) -> None:
        self.runner.cancel()

    def poll(self) -> None:
        if self.runner.running:
            self.runner.poll()

    def _onFinished(self, state: RunState, message: str) -> None:
        try:
            report = json.loads((self.folder / "devices.json").read_text(encoding="utf-8")) if state is RunState.SUCCEEDED else None
        except (OSError, ValueError):
            report = None
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        if report is None:
            self.done(list(KNOWN_WITHOUT_ASKING), message or "the device list could not be read")
            return
        found = [(d["key"], f"{d['key']}: {d['description']}") for d in report["devices"]]
        self.done([KNOWN_WITHOUT_ASKING[0], *found], "")


def showDeviceList(view, devices: list[tuple[str, str]], current: str, problem: str) -> None:
    """What a panel shows when the device list has come: the list, and why it is short if it is."""
    view.showDevices(devices, current)
    if problem:
        view.showStatus(f"Only auto and CPU are listed: {problem}")
