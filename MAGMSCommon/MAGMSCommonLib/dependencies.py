"""What ``magms`` needs that this Python lacks, and how to install it inside Slicer.

Nothing is installed at import time: the widget lists :func:`missing` to the user, asks, and then
calls :func:`installInSlicer`. torch comes from the PyTorch Utils extension when it is installed
(it picks the build that fits the computer's CUDA), else from pip.
"""

from __future__ import annotations

import importlib
import sys

from magms.devices import Requirement, missing_requirements

__all__ = ["missing", "describeMissing", "installInSlicer", "ensureInSlicer"]


def missing() -> list[Requirement]:
    """The run-time requirements that cannot be imported here."""
    return missing_requirements()


def describeMissing(requirements: list[Requirement]) -> str:
    """The confirmation text: what will be installed, and from where."""
    lines = ["MAGMS needs these Python packages, which are not installed yet:"]
    lines += [f"  {r.spec}" for r in requirements]
    if any(r.module == "torch" for r in requirements):
        lines.append("PyTorch comes from the PyTorch Utils extension if it is installed (it picks the build for your GPU), else from pip.")
    lines.append("Install them now? This can take several minutes and may need a restart of Slicer.")
    return "\n".join(lines)


def installInSlicer(requirements: list[Requirement]) -> bool:
    """Install ``requirements`` in Slicer's Python. Returns True when a restart is needed.

    A restart is needed when a package of the same name was imported already (the new version
    cannot replace it in a running Slicer).
    """
    import slicer  # Slicer only: never imported by the logic tests

    restart = any(r.module in sys.modules for r in requirements)
    rest = [r for r in requirements if r.module != "torch"]
    if len(rest) < len(requirements):
        torch_spec = next(r.spec for r in requirements if r.module == "torch")
        try:
            import PyTorchUtils  # the PyTorch extension's module

            PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=torch_spec[len("torch"):])
        except ImportError:
            slicer.util.pip_install([torch_spec])
    if rest:
        slicer.util.pip_install([r.spec for r in rest])
    importlib.invalidate_caches()
    return restart


def ensureInSlicer() -> bool:
    """In Slicer: True when nothing is missing; else ask, install, and offer a restart when needed.

    Never called at import time: the modules call it when the user starts work.
    """
    import slicer

    needed = missing()
    if not needed:
        return True
    if not slicer.util.confirmOkCancelDisplay(describeMissing(needed)):
        return False
    with slicer.util.tryWithErrorDisplay("Installing the Python packages failed.", waitCursor=True):
        if installInSlicer(needed):
            if slicer.util.confirmYesNoDisplay("Slicer must restart to use the new packages. Restart now?"):
                slicer.util.restart()
            return False
    return not missing()
