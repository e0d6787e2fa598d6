"""Atomic file and folder writes: a reader (another process, a crash) never sees half a result.

Everything MAGMS writes that another process may read while it is written, or that a crash must
not leave half-done (bundles, checkpoints, label maps, the model lists), goes through here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "replace_folder"]


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it onto ``path``.

    Args:
        path: the final file.
        write: writes the content to the path it is given.
        suffix: ending of the temporary file; writers that pick the format by the file's ending
            (SimpleITK) need the final one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; this is an ordinary output file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def replace_folder(folder: Path, fill: Callable[[Path], None]) -> None:
    """Build a folder's new content beside it with ``fill``, then swap it in.

    The old folder is renamed away before the new one takes its name, so at any moment ``folder``
    is either the complete old content or the complete new one.
    """
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    tmp.chmod(0o755)  # mkdtemp makes it private; this is an ordinary output folder
    try:
        fill(tmp)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
