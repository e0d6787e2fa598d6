"""Compute devices and the packages ``magms`` needs at run time, without importing torch early.

The Slicer module asks what to install and which devices exist before torch may be installed, so
nothing here imports torch at import time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from magms.errors import ConfigError
from magms.protocol import EXPORTED_ENGINES

if TYPE_CHECKING:
    import torch

__all__ = [
    "REQUIREMENTS", "DICOM_REQUIREMENTS", "DICOM_MODULES_BY_KIND", "BRAIN_REQUIREMENTS", "FAST_REQUIREMENTS", "AUTO_ENGINE_REQUIREMENTS",
    "engine_requirements", "dicom_requirements", "Requirement", "satisfies", "RequirementState", "unmet_requirements",
    "distribution_version", "installed_versions", "Device", "describe_devices", "resolve_device", "cuda_may_be_present",
    "device_name",
]


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A run-time dependency: the name to import and the pip specifier (as in ``pyproject.toml``)."""

    module: str
    spec: str

    @property
    def project(self) -> str:
        """The distribution name pip knows (``rt-utils`` for the module ``rt_utils``)."""
        return re.split(r"[<>=!~;\[ ]", self.spec, maxsplit=1)[0]


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

# The optional DICOM export (magms export, --rtstruct, --dicom-seg): pyproject.toml's ``dicom`` extra,
# the same specifiers (a test keeps them equal). The Slicer module installs them on demand.
DICOM_REQUIREMENTS = (
    Requirement("pydicom", "pydicom>=2.4"),
    Requirement("highdicom", "highdicom>=0.22"),
    Requirement("rt_utils", "rt-utils>=1.2.7"),
) + (
    # Python 3.9 (Slicer 5.8) gets highdicom 0.22 and pydicom 2.4, which need numpy 1, so OpenCV 4 for rt-utils
    (Requirement("numpy", "numpy<2"), Requirement("cv2", "opencv-python<5")) if sys.version_info < (3, 10) else ()
)
# What each DICOM object needs (module names of DICOM_REQUIREMENTS): rt-utils writes the RT Structure
# Set, highdicom the SEG; numpy and OpenCV (rt-utils' contours) only where the markers above add them.
DICOM_MODULES_BY_KIND = {"rtstruct": ("pydicom", "rt_utils", "numpy", "cv2"), "seg": ("pydicom", "highdicom", "numpy")}

# The optional brain extraction for raw clinical images (--preprocess strip|full, auto on an unstripped
# input): pyproject.toml's ``brain`` extra (a test keeps them equal). The Slicer module installs it on demand.
BRAIN_REQUIREMENTS = (Requirement("deepbet", "deepbet>=1.0.2"),)


def dicom_requirements(kinds: Sequence[str] = ("rtstruct", "seg")) -> tuple[Requirement, ...]:
    """The :data:`DICOM_REQUIREMENTS` that writing ``kinds`` (``rtstruct``, ``seg``) needs.

    Raises:
        ValueError: an unknown kind.
    """
    unknown = [k for k in kinds if k not in DICOM_MODULES_BY_KIND]
    if unknown:
        raise ValueError(f"kinds: expected some of {', '.join(DICOM_MODULES_BY_KIND)}, got {unknown}")
    modules = {m for kind in kinds for m in DICOM_MODULES_BY_KIND[kind]}
    return tuple(r for r in DICOM_REQUIREMENTS if r.module in modules)


# The optional fast CPU path (magms segment --engine): pyproject.toml's ``fast`` extra, the same
# specifiers (a test keeps them equal). The export needs onnx; each engine its own package.
FAST_REQUIREMENTS = (
    Requirement("openvino", "openvino>=2024.0"),
    Requirement("onnxruntime", "onnxruntime>=1.17"),
    Requirement("onnx", "onnx>=1.15"),
)
# What ``--engine auto`` runs on the CPU: OpenVINO, and onnx to export the graphs once per model. Their wheels
# exist for every platform and Python Slicer runs (Linux, Windows, macOS x86-64 and arm64; 3.9 to 3.12), so
# ``pip install magms-slicer`` installs them (pyproject.toml's dependencies end with them); inside Slicer the
# Segmenter offers them on a computer without a CUDA GPU (180 MB installed, no use on a GPU).
def engine_requirements(engine: str) -> tuple[Requirement, ...]:
    """What an exported engine needs beyond the core: its runtime, and onnx to export the graphs once per model;
    eager and auto nothing (auto falls back to PyTorch)."""
    return tuple(r for r in FAST_REQUIREMENTS if r.module in (engine, "onnx")) if engine in EXPORTED_ENGINES else ()


AUTO_ENGINE_REQUIREMENTS = engine_requirements("openvino")


def _release(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``; pre-release letters end a part (``"1rc1"`` -> 1)."""
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a specifier such as ``">=2.4,<2.14"`` (the forms pyproject.toml uses)."""
    have = _release(version)
    checks = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
              "!=": lambda a, b: a != b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        op = next(o for o in checks if clause.startswith(o))
        if not checks[op](have, _release(clause[len(op):])):
            return False
    return True


@dataclasses.dataclass(frozen=True)
class RequirementState:
    """A requirement and the version installed (None: not installed)."""

    requirement: Requirement
    installed: str | None

    @property
    def specifier(self) -> str:
        return self.requirement.spec[len(self.requirement.project):]

    @property
    def ok(self) -> bool:
        return self.installed is not None and satisfies(self.installed, self.specifier)

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.requirement.spec}: not installed"
        return f"{self.requirement.spec}: {self.installed} is installed" + ("" if self.ok else ", which is outside that range")


def unmet_requirements(requirements: Sequence[Requirement] = REQUIREMENTS) -> list[RequirementState]:
    """The ``requirements`` (default: those of every run) that are missing or installed in a version
    outside the tested range; :data:`DICOM_REQUIREMENTS` for the DICOM export.

    Read from the package metadata: nothing is imported (Slicer asks before torch may exist).
    """
    versions = installed_versions()
    states = [RequirementState(r, versions[r.module]) for r in requirements]
    return [s for s in states if not s.ok]


def distribution_version(*spellings: str) -> str | None:
    """The installed version of a distribution from its metadata, trying each spelling of its name in turn
    (Python 3.9 matches names as written: "Pillow", "SimpleITK"); None: not installed. Nothing is imported."""
    from importlib.metadata import PackageNotFoundError, version

    for name in dict.fromkeys(spellings):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def installed_versions() -> dict[str, str | None]:
    """magms and each requirement's installed version (None: not installed), the DICOM export's and
    the brain extraction's and the fast CPU path's included, read from the package metadata, so nothing
    is imported."""
    import magms

    found: dict[str, str | None] = {"magms": magms.__version__}
    for requirement in REQUIREMENTS + DICOM_REQUIREMENTS + BRAIN_REQUIREMENTS + FAST_REQUIREMENTS:
        found[requirement.module] = distribution_version(requirement.project, requirement.module)
    return found


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


def cuda_may_be_present() -> bool:
    """False when no CUDA device can be used here, found without importing torch (which takes seconds):
    torch is not installed or is a CPU-only build, the machine is a Mac, or a Linux machine has no
    NVIDIA driver loaded. True means only "ask torch"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        return False
    if "+cpu" in torch_version or sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia/version"):
        return False
    return True


def device_name(name: str) -> str:
    """:func:`resolve_device` as a string (``cpu``, ``cuda``, ``cuda:N``); ``cpu``, and ``auto`` where
    :func:`cuda_may_be_present` says no, without importing torch.

    Raises:
        ConfigError: as :func:`resolve_device`.
    """
    if name == "cpu" or (name == "auto" and not cuda_may_be_present()):
        return "cpu"
    return str(resolve_device(name))
