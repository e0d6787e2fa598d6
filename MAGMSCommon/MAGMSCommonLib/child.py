"""How the modules start ``magms`` as a child process: which Python, with which environment.

The core package is installed beside the scripted modules (``qt-scripted-modules``). Slicer puts
that folder on ``sys.path`` of its own Python only (qSlicerScriptedLoadableModuleFactory appends
each module's folder when it loads the module), and the launcher passes it on to a ``PythonSlicer``
child only for extensions installed through the Extensions Manager (their paths are written to the
launcher's user settings). For a build tree or an "additional module path" the child would not
find ``magms``, so the folder is put on the child's ``PYTHONPATH``: the one path edit that stays.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import magms
from magms.options import Options

__all__ = ["childEnvironment", "childPython", "configCommand"]


def childEnvironment() -> dict[str, str]:
    """This process's environment with the folder holding ``magms`` first on ``PYTHONPATH``."""
    env = dict(os.environ)
    packageParent = str(Path(magms.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([packageParent, *filter(None, [env.get("PYTHONPATH")])])
    return env


def childPython() -> str:
    """The Python that runs ``magms``: Slicer's ``PythonSlicer`` launcher when found."""
    return shutil.which("PythonSlicer") or sys.executable


def configCommand(python: str, options: Options, configFile: Path) -> list[str]:
    """Write ``options`` to ``configFile`` and return the command line that runs them:
    ``python -m magms <command> --config configFile``."""
    options.save(configFile)
    return [python, "-m", "magms", options.command, "--config", str(configFile)]
