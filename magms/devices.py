"""Compute devices and the packages ``magms`` needs at run time, without importing torch early.

The Slicer module asks what to install and which devices exist before torch may be installed, so
nothing here imports torch at import time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import TYPE_CHECKING

from magms.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["REQUIREMENTS", "Requirement", "missing_requirements", "Device", "describe_devices", "resolve_device"]


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A run-time dependency: the name to import and the pip specifier (as in ``pyproject.toml``)."""

    module: str
    spec: str


# The same specifiers as pyproject.toml's [project] dependencies (a test keeps them equal).
REQUIREMENTS = (
    Requirement("torch", "torch>=2.4,<2.14"),
    Requirement("monai", "monai>=1.4,<1.7"),
    Requirement("einops", "einops>=0.7"),
    Requirement("nibabel", "nibabel>=5"),
    Requirement("numpy", "numpy>=1.24"),
    Requirement("SimpleITK", "SimpleITK>=2.3"),
    Requirement("safetensors", "safetensors>=0.4"),
    Requirement("tqdm", "tqdm>=4.60"),
    Requirement("scipy", "scipy>=1.10"),
    Requirement("matplotlib", "matplotlib>=3.7"),
)


def missing_requirements() -> list[Requirement]:
    """The requirements whose module cannot be imported here (found without importing it)."""
    return [r for r in REQUIREMENTS if importlib.util.find_spec(r.module) is None]


@dataclasses.dataclass(frozen=True)
class Device:
    """A device to run on: ``key`` for ``--device`` and a description for people."""

    key: str
    description: str


def describe_devices() -> list[Device]:
    """Every CUDA device (name and memory), then the CPU. Without torch: the CPU, saying so."""
    if importlib.util.find_spec("torch") is None:
        return [Device("cpu", "CPU (PyTorch is not installed yet)")]
    import torch

    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(Device(f"cuda:{index}", f"{props.name}, {props.total_memory / 2**30:.0f} GiB"))
    cpu = "CPU" if devices else "CPU (no CUDA device found)"
    return devices + [Device("cpu", f"{cpu}, {torch.get_num_threads()} threads")]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``; ``cuda`` or ``cuda:N``.

    Raises:
        ConfigError: CUDA asked for but not available, or an unknown device name.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: no CUDA device found (use --device cpu or auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) found")
        return device
    raise ConfigError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
