"""What ``magms`` needs that Slicer's Python lacks, and how it is installed inside Slicer.

Nothing is installed at import time, and nothing heavy is imported to find out: versions come from
the package metadata (:func:`magms.devices.unmet_requirements`). The widget shows
:func:`describeUnmet`, asks, then calls :func:`installInSlicer`.

PyTorch comes only from the PyTorch extension (``PyTorchUtils``), which picks the build that fits
the computer's GPU; plain pip would bring a CUDA build of its own choosing on Linux, so there is no
pip fallback. A torch outside the tested range is not replaced inside a running Slicer: the message
says how to change it in the PyTorch Utils module. MONAI and the rest are installed with pip, pinned
to the ranges the core is tested with (``magms.devices.REQUIREMENTS``, equal to pyproject.toml).

The DICOM export (``magms export``) needs pydicom, highdicom and rt-utils, pyproject.toml's ``dicom``
extra (``magms.devices.DICOM_REQUIREMENTS``). They are asked for only when the user exports
(:func:`ensureDicomInSlicer`), and need no restart: only the child process imports them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence

from magms.devices import DICOM_REQUIREMENTS, RequirementState, unmet_requirements
from magms.errors import ConfigError

__all__ = ["unmet", "describeUnmet", "pyTorchExtensionPresent", "installInSlicer", "ensureInSlicer",
           "unmetDicom", "describeUnmetDicom", "ensureDicomInSlicer"]

PYTORCH_EXTENSION_MODULE = "PyTorchUtils"


def unmet() -> list[RequirementState]:
    """The requirements that are missing or outside the tested version range."""
    return unmet_requirements()


def pyTorchExtensionPresent() -> bool:
    """Whether the PyTorch extension's module can be imported (found without importing it)."""
    return importlib.util.find_spec(PYTORCH_EXTENSION_MODULE) is not None


def _torchAdvice(state: RequirementState, extension: bool) -> str:
    if not extension:
        return ("PyTorch comes from the PyTorch extension, which is not installed: install 'PyTorch' in the "
                "Extensions Manager, restart Slicer, then try again.")
    if state.installed is None:
        return "PyTorch will be installed by the PyTorch extension (it picks the build for your GPU)."
    return (f"PyTorch {state.installed} is installed, but MAGMS is tested with {state.requirement.spec}: "
            f"install a version in that range in the PyTorch Utils module (Utilities), restart Slicer, then try again.")


def describeUnmet(states: Sequence[RequirementState], extension: bool | None = None) -> str:
    """The text shown before installing: what is missing or outside its range, and what will happen."""
    extension = pyTorchExtensionPresent() if extension is None else extension
    lines = ["MAGMS needs these Python packages:"] + [f"  {s.describe()}" for s in states]
    torch = next((s for s in states if s.requirement.module == "torch"), None)
    if torch is not None:
        lines.append(_torchAdvice(torch, extension))
    if installable(states, extension):
        lines.append("Install them now? This can take several minutes and may need a restart of Slicer.")
    return "\n".join(lines)


def installable(states: Sequence[RequirementState], extension: bool) -> bool:
    """Whether :func:`installInSlicer` can fix ``states`` (torch only when missing and the extension is there)."""
    torch = next((s for s in states if s.requirement.module == "torch"), None)
    return torch is None or (extension and torch.installed is None)


def installInSlicer(
    states: Sequence[RequirementState],
    pipInstall: Callable[[list[str]], None] | None = None,
    installTorch: Callable[[str], object] | None = None,
) -> bool:
    """Install what ``states`` lack. Returns True when Slicer must restart to use them.

    Args:
        pipInstall: installs pip requirement strings (default: ``slicer.util.pip_install``).
        installTorch: installs torch for a specifier, returns None when the user declined
            (default: the PyTorch extension's ``installTorch``).
    Raises:
        ConfigError: torch cannot be installed here (no PyTorch extension, or a version outside
            the range is installed); the message says what to do.
    """
    torch = next((s for s in states if s.requirement.module == "torch"), None)
    if torch is not None:
        extension = installTorch is not None or pyTorchExtensionPresent()
        if not installable([torch], extension):
            raise ConfigError(_torchAdvice(torch, extension))
        if (installTorch or _extensionInstallTorch)(torch.specifier) is None:
            raise ConfigError("PyTorch was not installed (declined or failed): MAGMS cannot run without it")
    rest = [s.requirement.spec for s in states if s.requirement.module != "torch"]
    if rest:
        (pipInstall or _slicerPipInstall)(rest)
    importlib.invalidate_caches()
    # a package imported before cannot be replaced in a running Slicer
    return any(s.requirement.module in sys.modules for s in states)


def _extensionInstallTorch(specifier: str) -> object:
    module = importlib.import_module(PYTORCH_EXTENSION_MODULE)
    return module.PyTorchUtilsLogic().installTorch(askConfirmation=True, torchVersionRequirement=specifier)


def _slicerPipInstall(requirements: list[str]) -> None:
    import slicer  # the Slicer application only

    slicer.util.pip_install(requirements)


def ensureInSlicer() -> bool:
    """In Slicer: True when nothing is unmet; else ask, install, and offer a restart when needed.

    Never called at import time: the modules call it when the user starts work.
    """
    import slicer

    states = unmet()
    if not states:
        return True
    extension = pyTorchExtensionPresent()
    if not installable(states, extension):
        slicer.util.errorDisplay(describeUnmet(states, extension))
        return False
    if not slicer.util.confirmOkCancelDisplay(describeUnmet(states, extension)):
        return False
    try:
        restart = installInSlicer(states)
    except Exception as err:  # noqa: BLE001 - shown to the user; tryWithErrorDisplay would re-raise into a Qt slot
        slicer.util.errorDisplay(f"Installing the Python packages failed: {err}")
        return False
    # the PyTorch extension imports torch once it has installed it, and a module imported before
    # cannot be replaced in a running Slicer: both need a restart
    if restart or any(s.requirement.module == "torch" for s in states):
        if slicer.app.testingEnabled():  # dialogs answer themselves there: a restart would run the tests again, unseen
            logging.getLogger(__name__).warning("the new packages need a restart of Slicer")
        elif slicer.util.confirmYesNoDisplay("Slicer must restart to use the new packages. Restart now?"):
            slicer.util.restart()
        return False
    return not unmet()


# --- the DICOM export's packages ----------------------------------------------------------------


def unmetDicom() -> list[RequirementState]:
    """The DICOM export's packages that are missing or outside the tested range."""
    return unmet_requirements(DICOM_REQUIREMENTS)


def describeUnmetDicom(states: Sequence[RequirementState], ask: bool = True) -> str:
    """What the DICOM export lacks, the exact pip requirements that install it, and (``ask``) the question."""
    lines = ["Export to DICOM needs these Python packages:"] + [f"  {s.describe()}" for s in states]
    lines.append("They are installed into Slicer's Python with pip: " + " ".join(repr(s.requirement.spec) for s in states)
                 + " (the 'dicom' extra of magms-slicer).")
    if ask:
        lines.append("Install them now? No restart is needed: the export runs in a separate process.")
    return "\n".join(lines)


def ensureDicomInSlicer() -> bool:
    """In Slicer: True when the DICOM export's packages are there; else ask and install them with pip.

    Called when the user exports, never at import time.
    """
    import slicer

    states = unmetDicom()
    if not states:
        return True
    if not slicer.util.confirmOkCancelDisplay(describeUnmetDicom(states)):
        return False
    try:
        installInSlicer(states)  # the child imports them: a package Slicer imported before needs no restart here
    except Exception as err:  # noqa: BLE001 - shown to the user
        slicer.util.errorDisplay(f"Installing the Python packages failed: {err}")
        return False
    left = unmetDicom()
    if left:
        slicer.util.errorDisplay(describeUnmetDicom(left, ask=False))
    return not left
