"""Where and how a model was trained, for its bundle: command, code commit, time and hardware.

A shipped model must be reproducible from its bundle alone; these facts are recorded, never used.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import magms

__all__ = ["run_environment", "source_commit", "utc_now"]


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def source_commit() -> str | None:
    """The git commit of the ``magms`` source (with ``-dirty`` when it has local changes), or None
    when the package is not in a git checkout or git is not installed."""
    root = Path(magms.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit or None


def run_environment(device: torch.device) -> dict[str, Any]:
    """The code commit, starting time (UTC) and hardware of this run: called when it starts, since
    the checkout may change while it runs."""
    hardware: dict[str, Any] = {
        "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    return {
        "commit": source_commit(),
        "started_utc": utc_now(),
        "hardware": hardware,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
