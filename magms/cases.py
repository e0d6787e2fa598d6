"""Finding cases: a folder of one case, a folder of case folders, or a CSV manifest.

A manifest's header is ``case,<slot>,...[,label]``; paths are relative to the CSV and an empty cell
means that modality is missing for that case. In case folders, each file's slot is guessed from its
name by :mod:`magms.modalities`.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from magms.errors import ConfigError, ImageError
from magms.io import is_image_path
from magms.modalities import SlotGuess, canonical_slot, guess_slots, is_label_map_name

__all__ = ["Case", "case_from_folder", "read_manifest", "find_cases"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Case:
    """One case: slot -> image path, and the label file if one was found."""

    name: str
    images: dict[str, Path]
    label: Path | None = None
    guesses: tuple[SlotGuess, ...] = ()


def case_from_folder(folder: str | os.PathLike[str], slots: Sequence[str] | None = None) -> Case:
    """The images of one case folder, slots guessed from the file names.

    Files whose slot cannot be told (ambiguous, unknown, another slot than ``slots``) are left out;
    the guesses, with their reasons, are in ``Case.guesses``.

    Raises:
        ImageError: no such folder, or no file maps to a slot.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"{root}: no such folder")
    files = sorted(p for p in root.iterdir() if is_image_path(p) and not p.name.startswith("."))
    guesses = guess_slots([p.name for p in files], slots)
    images = {g.slot: p for p, g in zip(files, guesses.values()) if g.slot is not None}
    labels = [p for p in files if is_label_map_name(p.name)]
    if not images:
        wanted = f" among {', '.join(slots)}" if slots else ""
        raise ImageError(f"{root}: no image file whose name tells its modality{wanted}")
    order = list(slots) if slots else sorted(images)
    return Case(root.name, {s: images[s] for s in order if s in images}, labels[0] if len(labels) == 1 else None, tuple(guesses.values()))


def read_manifest(path: str | os.PathLike[str]) -> list[Case]:
    """Read a CSV manifest ``case,<slot>,...[,label]``.

    Raises:
        ConfigError: missing file, bad header (unknown column, no slot column, duplicate slot),
            duplicate case names, or a case without any image.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise ConfigError(f"{csv_path}: no such manifest file")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0] or rows[0][0].strip().lower() != "case":
        raise ConfigError(f"{csv_path}: the header must start with 'case', then one column per modality (and 'label')")
    columns: list[str] = []
    for name in (c.strip() for c in rows[0][1:]):
        if name.lower() == "label":
            columns.append("label")
            continue
        try:
            slot = canonical_slot(name)
        except ConfigError as err:
            raise ConfigError(f"{csv_path}: column {name!r}: {err}") from err
        if slot in columns:
            raise ConfigError(f"{csv_path}: two columns name the modality {slot!r}")
        columns.append(slot)
    if not [c for c in columns if c != "label"]:
        raise ConfigError(f"{csv_path}: no modality column in the header")
    cases, seen = [], set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        name = row[0].strip()
        if name in seen:
            raise ConfigError(f"{csv_path}, line {line}: case {name!r} appears twice")
        seen.add(name)
        cells = dict(zip(columns, (c.strip() for c in row[1:])))
        images = {s: csv_path.parent / p for s, p in cells.items() if s != "label" and p}
        if not images:
            raise ConfigError(f"{csv_path}, line {line}: case {name!r} has no image")
        label = cells.get("label")
        cases.append(Case(name, images, csv_path.parent / label if label else None))
    return cases


def find_cases(path: str | os.PathLike[str], slots: Sequence[str] | None = None) -> list[Case]:
    """Cases of a CSV manifest or a folder of case folders (a folder that holds images itself is one case).

    Raises:
        ConfigError: see :func:`read_manifest`; also a path that is neither.
        ImageError: a folder without any case.
    """
    root = Path(path)
    if root.is_file() and root.suffix.lower() == ".csv":
        return read_manifest(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: neither a CSV manifest nor a folder")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(is_image_path(p) and p.is_file() for p in root.iterdir()):
        return [case_from_folder(root, slots)]
    cases = []
    for folder in subfolders:
        try:
            cases.append(case_from_folder(folder, slots))
        except ImageError as err:
            logger.warning("skipped %s", err)
    if not cases:
        raise ImageError(f"{root}: no case folder with images")
    return cases
