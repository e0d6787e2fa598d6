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
extra (``magms.devices.DICOM_REQUIREMENTS``), and only what the chosen objects need: rt-utils for an
RT Structure Set, highdicom for a SEG. They are asked for only when the user exports
(:func:`ensureDicomInSlicer`). Brain extraction (deepbet, the ``brain`` extra) is asked for only
when a segmentation will need it (``ensureInSlicer(brain=True)``).

The fast CPU path (OpenVINO, and onnx for the one export of each model: :data:`FAST_IN_SLICER`) is
offered, never required, by the Segmenter when no CUDA GPU can be used (:func:`ensureForSegmentation`):
yes installs it, no (or closing the question) segments with PyTorch and is remembered in Slicer's
settings (:data:`FAST_DECLINED_KEY`), so it is not asked again; a failed install is not offered again
in the same Slicer session. The segmentation runs in a child process that imports them, so it starts
at once; a restart is offered only when pip changed a package Slicer has loaded.

Every pip install keeps the packages a running Slicer ships and may have imported (:data:`KEPT`:
numpy, pydicom and Pillow, which its DICOM plugins import, and torch) at their installed versions
with a pip constraint, unless MAGMS itself needs another version of one. Without it pip would, for
example, take ``highdicom>=0.22`` to the newest highdicom, which needs pydicom 3, and upgrade
Slicer's pydicom 2.4.4 (5.8 and 5.10) on disk under the plugins that loaded it; with it pip picks
highdicom 0.22, the newest for pydicom 2. When an install changes a package Slicer has imported
all the same, a restart is offered, as for the main install.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence

from magms.devices import (
    AUTO_ENGINE_REQUIREMENTS,
    BRAIN_REQUIREMENTS,
    RequirementState,
    cuda_may_be_present,
    dicom_requirements,
    distribution_version,
    engine_requirements,
    unmet_requirements,
)
from magms.errors import ConfigError

__all__ = ["unmet", "describeUnmet", "pyTorchExtensionPresent", "installInSlicer", "ensureInSlicer", "KEPT",
           "installedVersions", "keptConstraints", "unmetBrain", "unmetDicom", "describeUnmetDicom", "ensureDicomInSlicer",
           "FAST_IN_SLICER", "FAST_DECLINED_KEY", "unmetFast", "describeUnmetFast", "offerFast", "ensureForSegmentation"]

PYTORCH_EXTENSION_MODULE = "PyTorchUtils"
#: Distributions a running Slicer ships (or the PyTorch extension installed) and may have imported,
#: with their module names: a MAGMS install keeps each at its installed version (:func:`keptConstraints`).
KEPT = {"numpy": "numpy", "pydicom": "pydicom", "pillow": "PIL", "torch": "torch"}


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
    if any(s.requirement in BRAIN_REQUIREMENTS for s in states):
        lines.append("deepbet extracts the brain from images with the skull (it brings pandas and a few small packages; "
                     "your PyTorch stays as it is).")
    if installable(states, extension):
        lines.append("Install them now? This can take several minutes and may need a restart of Slicer.")
    return "\n".join(lines)


def installable(states: Sequence[RequirementState], extension: bool) -> bool:
    """Whether :func:`installInSlicer` can fix ``states`` (torch only when missing and the extension is there)."""
    torch = next((s for s in states if s.requirement.module == "torch"), None)
    return torch is None or (extension and torch.installed is None)


def installedVersions(names: Sequence[str] = tuple(KEPT)) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None: not installed), from its metadata."""
    return {name: distribution_version(name, name.capitalize()) for name in names}  # 3.9 matches "Pillow" as written


def keptConstraints(states: Sequence[RequirementState], versions: Mapping[str, str | None] | None = None) -> list[str]:
    """pip constraints (``name==version``) that keep each installed package of :data:`KEPT` as it is,
    except one that ``states`` ask to change (MAGMS needs another version of it).

    Args:
        versions: the installed versions (default: :func:`installedVersions`).
    """
    changing = {s.requirement.project.lower() for s in states} | {s.requirement.module.lower() for s in states}
    versions = installedVersions() if versions is None else versions
    return [f"{name}=={versions[name]}" for name in KEPT
            if versions.get(name) and name not in changing and KEPT[name].lower() not in changing]


def _changedImported(before: Mapping[str, str | None], after: Mapping[str, str | None]) -> list[str]:
    """The packages of :data:`KEPT` that a running Slicer has imported and whose version changed."""
    return [name for name in KEPT if before.get(name) != after.get(name) and KEPT[name] in sys.modules]


def installInSlicer(
    states: Sequence[RequirementState],
    pipInstall: Callable[[list[str]], None] | None = None,
    installTorch: Callable[[str], object] | None = None,
    versions: Callable[[], Mapping[str, str | None]] = installedVersions,
) -> bool:
    """Install what ``states`` lack. Returns True when Slicer must restart to use them.

    pip gets a constraints file (``-c FILE`` first in its arguments, which ``slicer.util.pip_install``
    of Slicer 5.8 and 5.10 and ``slicer.packaging.pip_install`` pass on as they are) that keeps the
    installed packages of :data:`KEPT` at their versions (:func:`keptConstraints`).

    Args:
        pipInstall: installs pip arguments (default: ``slicer.util.pip_install``).
        installTorch: installs torch for a specifier, returns None when the user declined
            (default: the PyTorch extension's ``installTorch``).
        versions: the installed versions of :data:`KEPT` (tests pretend).
    Raises:
        ConfigError: torch cannot be installed here (no PyTorch extension, or a version outside
            the range is installed); the message says what to do.
    """
    before = versions()
    torch = next((s for s in states if s.requirement.module == "torch"), None)
    if torch is not None:
        extension = installTorch is not None or pyTorchExtensionPresent()
        if not installable([torch], extension):
            raise ConfigError(_torchAdvice(torch, extension))
        if (installTorch or _extensionInstallTorch)(torch.specifier) is None:
            raise ConfigError("PyTorch was not installed (declined or failed): MAGMS cannot run without it")
    rest = [s.requirement.spec for s in states if s.requirement.module != "torch"]
    if rest:
        # after the PyTorch extension's step: the torch it has just installed is kept too
        constraints = keptConstraints([s for s in states if s.requirement.module != "torch"], versions())
        with tempfile.TemporaryDirectory(prefix="magms-pip-") as folder:
            path = os.path.join(folder, "constraints.txt")
            with open(path, "w", encoding="utf-8") as file:
                file.write("".join(f"{line}\n" for line in constraints))
            (pipInstall or _slicerPipInstall)((["-c", path] if constraints else []) + rest)
    importlib.invalidate_caches()
    # a package imported before cannot be replaced in a running Slicer
    return any(s.requirement.module in sys.modules for s in states) or bool(_changedImported(before, versions()))


def _extensionInstallTorch(specifier: str) -> object:
    module = importlib.import_module(PYTORCH_EXTENSION_MODULE)
    return module.PyTorchUtilsLogic().installTorch(askConfirmation=True, torchVersionRequirement=specifier)


def _slicerPipInstall(requirements: list[str]) -> None:
    import slicer  # the Slicer application only

    slicer.util.pip_install(requirements)


def unmetBrain() -> list[RequirementState]:
    """Brain extraction's package (deepbet) if it is missing or outside the tested range."""
    return unmet_requirements(BRAIN_REQUIREMENTS)


def _offerRestart() -> None:
    import slicer

    if slicer.app.testingEnabled():  # dialogs answer themselves there: a restart would run the tests again, unseen
        logging.getLogger(__name__).warning("the new packages need a restart of Slicer")
    elif slicer.util.confirmYesNoDisplay("Slicer must restart to use the new packages. Restart now?"):
        slicer.util.restart()


def ensureInSlicer(brain: bool = False) -> bool:
    """In Slicer: True when nothing is unmet; else ask, install, and offer a restart when needed.

    Never called at import time: the modules call it when the user starts work.

    Args:
        brain: the run will extract the brain: deepbet is needed too.
    """
    import slicer

    states = unmet() + (unmetBrain() if brain else [])
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
        _offerRestart()
        return False
    return not (unmet() + (unmetBrain() if brain else []))


# --- the fast CPU path's packages, offered ------------------------------------------------------

#: What the Segmenter's fast CPU path needs (``magms segment --engine auto``): OpenVINO runs the network,
#: onnx exports it once per model. ONNX Runtime is not offered: auto never picks it (slower here).
FAST_IN_SLICER = AUTO_ENGINE_REQUIREMENTS
#: Key in Slicer's user settings (``slicer.app.userSettings()``, a QSettings) set when the user declined them: not asked again.
FAST_DECLINED_KEY = "MAGMS/DeclinedFastCPUPackages"


def unmetFast() -> list[RequirementState]:
    """The fast CPU path's packages that are missing or outside the tested range."""
    return unmet_requirements(FAST_IN_SLICER)


def describeUnmetFast(states: Sequence[RequirementState]) -> str:
    """The question asked before installing the fast CPU path's packages."""
    return "\n".join(
        ["Segmentation on the CPU runs about three times faster with OpenVINO, which needs these Python packages:"]
        + [f"  {s.describe()}" for s in states]
        + ["Install them now (about 70 MB to download)? No: MAGMS segments with PyTorch and does not ask again "
           f"(to be asked again, run slicer.app.userSettings().remove({FAST_DECLINED_KEY!r}) in the Python console)."]
    )


def offerFast(
    states: Sequence[RequirementState],
    ask: Callable[[str], bool],
    settings: object,
    pipInstall: Callable[[list[str]], None] | None = None,
    versions: Callable[[], Mapping[str, str | None]] = installedVersions,
) -> bool:
    """Offer the fast CPU path's packages, unless the user declined them before. Returns True when
    Slicer must restart (pip changed a package it had loaded).

    Args:
        states: :func:`unmetFast`.
        ask: shows the question, True for yes (``slicer.util.confirmYesNoDisplay``).
        settings: where a no is remembered, with ``value(key)`` and ``setValue(key, value)`` (``slicer.app.userSettings()``).
        pipInstall, versions: as for :func:`installInSlicer`.
    Raises:
        Exception: pip failed (the caller says so, and segments with PyTorch).
    """
    if not states or str(settings.value(FAST_DECLINED_KEY)).lower() in ("true", "1"):  # QSettings gives "true" back
        return False
    if not ask(describeUnmetFast(states)):
        settings.setValue(FAST_DECLINED_KEY, True)
        return False
    return installInSlicer(states, pipInstall=pipInstall, versions=versions)


#: What an engine named in the panel needs beyond the core (:func:`magms.devices.engine_requirements`).
engineRequirements = engine_requirements


def describeUnmetEngine(engine: str, states: Sequence[RequirementState]) -> str:
    """The question asked before installing what the chosen engine needs."""
    return "\n".join([f"The engine you chose, {engine}, needs these Python packages:"] + [f"  {s.describe()}" for s in states]
                     + ["Install them now? No: nothing runs (choose the engine auto or PyTorch to segment without them)."])


def ensureForSegmentation(brain: bool = False, engine: str = "auto") -> bool:
    """In Slicer, before a segmentation: :func:`ensureInSlicer`; then an engine chosen by name gets its packages
    (asked; no: nothing runs), and ``auto`` (no CUDA GPU here) is offered the fast path (:func:`offerFast`).
    True when the segmentation can start; a failed fast install under ``auto`` is shown and PyTorch runs instead."""
    import slicer

    if not ensureInSlicer(brain):
        return False
    needed = unmet_requirements(engineRequirements(engine))
    # asked for by name: without them the child would refuse, saying so (as in testing mode, where a
    # question answers itself and nothing may be downloaded)
    if needed and not slicer.app.testingEnabled():
        if not slicer.util.confirmYesNoDisplay(describeUnmetEngine(engine, needed)):
            return False
        try:
            restart = installInSlicer(needed)
        except Exception as err:  # noqa: BLE001 - shown to the user; nothing runs
            slicer.util.errorDisplay(f"The packages for {engine} could not be installed: {err}")
            return False
        if restart:  # as ensureInSlicer: nothing starts in a Slicer that may be restarting; Apply again runs
            _offerRestart()
            return False
        return True
    if engine != "auto":
        return True
    global _fastFailed
    if cuda_may_be_present() or slicer.app.testingEnabled() or _fastFailed:  # no speed-up on a GPU; tests must not download 70 MB
        return True
    try:
        restart = offerFast(unmetFast(), slicer.util.confirmYesNoDisplay, slicer.app.userSettings())
    except Exception as err:  # noqa: BLE001 - shown to the user; the segmentation goes on with PyTorch
        _fastFailed = True  # offline, say: not again on every Apply of this session
        slicer.util.warningDisplay(f"OpenVINO was not installed ({err}): segmenting with PyTorch.")
        return True
    if restart:  # a package Slicer had loaded changed; the segmentation runs in a child process all the same
        _offerRestart()
    return True


#: A fast-path install failed in this Slicer session: not offered again until a restart.
_fastFailed = False


# --- the DICOM export's packages ----------------------------------------------------------------

ALL_KINDS = ("rtstruct", "seg")


def unmetDicom(kinds: Sequence[str] = ALL_KINDS) -> list[RequirementState]:
    """The packages that writing ``kinds`` (``rtstruct``, ``seg``) needs and that are missing or outside the tested range."""
    return unmet_requirements(dicom_requirements(kinds))


def describeUnmetDicom(states: Sequence[RequirementState], ask: bool = True, versions: Mapping[str, str | None] | None = None) -> str:
    """What the DICOM export lacks, the exact pip requirements that install it, and (``ask``) the question,
    saying which of Slicer's packages pip keeps as they are and whether Slicer must restart.

    Args:
        versions: the installed versions of :data:`KEPT` (default: :func:`installedVersions`).
    """
    lines = ["Export to DICOM needs these Python packages:"] + [f"  {s.describe()}" for s in states]
    lines.append("They are installed into Slicer's Python with pip: " + " ".join(repr(s.requirement.spec) for s in states)
                 + " (from the 'dicom' extra of magms-slicer).")
    if ask:
        kept = keptConstraints(states, installedVersions() if versions is None else versions)
        if kept:
            lines.append(f"pip is told to keep Slicer's own {', '.join(kept)} as they are, so it picks versions that work with them.")
        loaded = [s.requirement.project for s in states if s.installed is not None and s.requirement.module in sys.modules]
        if loaded:
            lines.append(f"Install them now? Slicer has loaded {', '.join(loaded)} already: it must restart afterwards.")
        else:
            lines.append("Install them now? No restart is needed: the export runs in a separate process.")
    return "\n".join(lines)


def ensureDicomInSlicer(kinds: Sequence[str] = ALL_KINDS) -> bool:
    """In Slicer: True when the packages for writing ``kinds`` are there; else ask and install them with pip,
    keeping Slicer's own packages (:func:`installInSlicer`), and offer a restart when one it had loaded changed.

    Called when the user exports, never at import time.
    """
    import slicer

    states = unmetDicom(kinds)
    if not states:
        return True
    if not slicer.util.confirmOkCancelDisplay(describeUnmetDicom(states)):
        return False
    try:
        restart = installInSlicer(states)
    except Exception as err:  # noqa: BLE001 - shown to the user
        slicer.util.errorDisplay(f"Installing the Python packages failed: {err}")
        return False
    if restart:
        _offerRestart()
        return False
    left = unmetDicom(kinds)
    if left:
        slicer.util.errorDisplay(describeUnmetDicom(left, ask=False))
    return not left
