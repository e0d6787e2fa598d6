"""Finding cases in the layouts users already have.

* A Medical Segmentation Decathlon task folder: ``dataset.json`` (``modality``, ``training``) and
  4-D images in ``imagesTr/``, one volume per modality, labels in ``labelsTr/``.
* An nnU-Net v2 raw data set: ``dataset.json`` (``channel_names``, ``file_ending``),
  ``imagesTr/<case>_0000<ending>``..., ``labelsTr/<case><ending>``. A missing channel file means
  that modality is missing for that case.
* A folder of case folders (or one case folder), each file's slot guessed from its name by
  :mod:`magms.modalities`, the label file found by name.
* A CSV manifest whose header is ``case,<slot>,...[,label][,scheme]``; paths are relative to the CSV,
  an empty cell means that modality is missing for that case, and ``scheme`` names the label scheme
  of that case's label file when it is not the run's (its labels are mapped through the registry).

Modality names in ``dataset.json`` files go through the same alias registry as file names.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from magms.data.io import is_image_path, volume_ref
from magms.errors import ConfigError, ImageError
from magms.labels import get_scheme
from magms.modalities import SlotGuess, canonical_slot, default_slots, guess_slot, guess_slots, is_label_map_name

__all__ = ["Case", "case_from_folder", "read_manifest", "read_msd", "read_nnunet", "find_cases", "slots_of", "DATASET_JSON"]

DATASET_JSON = "dataset.json"
_NON_SLOT_COLUMNS = ("label", "scheme")

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Case:
    """One case: slot -> image path, the label file if one was found, and its label scheme when it
    is not the run's (a registry key; None: the run's ``labels``)."""

    name: str
    images: dict[str, Path]
    label: Path | None = None
    guesses: tuple[SlotGuess, ...] = ()
    scheme: str | None = None


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
    """Read a CSV manifest ``case,<slot>,...[,label][,scheme]``.

    Raises:
        ConfigError: missing file, bad header (unknown column, no slot column, duplicate slot),
            duplicate case names, a case without any image, or an unknown label scheme.
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
        if name.lower() in ("label", "scheme"):
            columns.append(name.lower())
            continue
        try:
            slot = canonical_slot(name)
        except ConfigError as err:
            raise ConfigError(f"{csv_path}: column {name!r}: {err}") from err
        if slot in columns:
            raise ConfigError(f"{csv_path}: two columns name the modality {slot!r}")
        columns.append(slot)
    if not [c for c in columns if c not in _NON_SLOT_COLUMNS]:
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
        images = {s: csv_path.parent / p for s, p in cells.items() if s not in _NON_SLOT_COLUMNS and p}
        if not images:
            raise ConfigError(f"{csv_path}, line {line}: case {name!r} has no image")
        label, scheme = cells.get("label"), cells.get("scheme") or None
        if scheme is not None:
            try:
                get_scheme(scheme)
            except ConfigError as err:
                raise ConfigError(f"{csv_path}, line {line}: case {name!r}: {err}") from err
        cases.append(Case(name, images, csv_path.parent / label if label else None, scheme=scheme))
    return cases


def _read_dataset_json(root: Path) -> dict:
    path = root / DATASET_JSON
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: a JSON object is expected")
    return meta


def _channel_slots(path: Path, key: str, channels: object, slots: Sequence[str] | None) -> dict[int, str]:
    """``{"0": "FLAIR", ...}`` -> {0: "flair", ...}; channels of no wanted slot are left out."""
    if not isinstance(channels, dict) or not channels:
        raise ConfigError(f"{path}: {key!r} must map channel numbers to modality names")
    mapping: dict[int, str] = {}
    for index, name in sorted(channels.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else -1):
        if not str(index).isdigit():
            raise ConfigError(f"{path}: {key!r} key {index!r} is not a channel number")
        guess = guess_slot(str(name), slots)
        if guess.slot is None:
            logger.warning("%s: channel %s (%r) left out: %s", path, index, name, guess.reason)
            continue
        if guess.slot in mapping.values():
            raise ConfigError(f"{path}: two channels are modality {guess.slot!r} ({name!r} and another)")
        mapping[int(index)] = guess.slot
    if not mapping:
        wanted = f" among {', '.join(slots)}" if slots else ""
        raise ConfigError(f"{path}: no channel of {key!r} names a known modality{wanted} ({dict(channels)})")
    return mapping


def _dataset(folder: str | os.PathLike[str], key: str, slots: Sequence[str] | None) -> tuple[Path, Path, dict, dict[int, str]]:
    """(folder, its dataset.json, the JSON, channel -> slot from ``key``)."""
    root = Path(folder)
    meta = _read_dataset_json(root)
    return root, root / DATASET_JSON, meta, _channel_slots(root / DATASET_JSON, key, meta.get(key), slots)


def read_msd(folder: str | os.PathLike[str], slots: Sequence[str] | None = None) -> list[Case]:
    """Cases of a Medical Segmentation Decathlon task folder (``training`` list of ``dataset.json``).

    Each modality is one volume of the case's 4-D image, addressed as ``image.nii.gz#k``
    (:func:`magms.data.io.volume_ref`); a single-modality task has 3-D images.

    Raises:
        ConfigError: unreadable ``dataset.json``, no usable ``modality``, no ``training`` list.
    """
    root, path, meta, channels = _dataset(folder, "modality", slots)
    four_d = len(meta["modality"]) > 1
    entries = meta.get("training")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no 'training' list of {{'image': ..., 'label': ...}}")
    cases = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry:
            raise ConfigError(f"{path}: training entry {n} has no 'image'")
        image = root / entry["image"]
        name = image.name.split(".")[0]
        images = {slot: volume_ref(image, k) if four_d else image for k, slot in channels.items()}
        cases.append(Case(name, images, root / entry["label"] if entry.get("label") else None))
    return cases


def read_nnunet(folder: str | os.PathLike[str], slots: Sequence[str] | None = None) -> list[Case]:
    """Cases of an nnU-Net v2 raw data set: ``imagesTr/<case>_<XXXX><ending>``, ``labelsTr/<case><ending>``.

    Raises:
        ConfigError: unreadable ``dataset.json``, no usable ``channel_names``, no ``imagesTr`` files.
    """
    root, path, meta, channels = _dataset(folder, "channel_names", slots)
    ending = str(meta.get("file_ending", ".nii.gz"))
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}$")
    found: dict[str, dict[str, Path]] = {}
    for file in sorted((root / "imagesTr").glob(f"*{ending}")):
        match = pattern.match(file.name)
        if match is None or file.name.startswith("."):
            continue
        slot = channels.get(int(match["channel"]))
        if slot is not None:
            found.setdefault(match["case"], {})[slot] = file
    if not found:
        raise ConfigError(f"{root / 'imagesTr'}: no '<case>_0000{ending}' image file")
    order = [channels[k] for k in sorted(channels)]
    cases = []
    for name, images in found.items():
        label = root / "labelsTr" / f"{name}{ending}"
        cases.append(Case(name, {s: images[s] for s in order if s in images}, label if label.is_file() else None))
    return cases


def find_cases(path: str | os.PathLike[str], slots: Sequence[str] | None = None) -> list[Case]:
    """Cases of any layout in the module docstring (a folder that holds images itself is one case).

    Raises:
        ConfigError: see :func:`read_manifest`, :func:`read_msd`, :func:`read_nnunet`; also a path
            that is none of the layouts.
        ImageError: a folder without any case.
    """
    root = Path(path)
    if root.is_file() and root.suffix.lower() == ".csv":
        return read_manifest(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: neither a CSV manifest nor a folder")
    if (root / DATASET_JSON).is_file():
        meta = _read_dataset_json(root)
        if "channel_names" in meta:
            return read_nnunet(root, slots)
        if "modality" in meta:
            return read_msd(root, slots)
        raise ConfigError(f"{root / DATASET_JSON}: neither an MSD ('modality') nor an nnU-Net v2 ('channel_names') dataset.json")
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


def slots_of(cases: Sequence[Case]) -> tuple[str, ...]:
    """The slots a model trained on ``cases`` gets when none are given: every slot any case has."""
    return default_slots(slot for case in cases for slot in case.images)
