"""The model that ships with MAGMS: ``Resources/Models``, its index and its verified bundle folders.

The models folder holds ``models.json``, the index::

    {"default": "brats-glioma-4seq",
     "models": [{"name": ..., "version": ..., "folder": ..., "sha256": ..., "description": ...}]}

and one bundle folder per entry (``model.safetensors`` + ``magms.json``, see :mod:`magms.bundle`).
The index records the sha256 of each ``model.safetensors``: a built-in model is used only when its
weights are there and are the ones the index names. The folder is ``$MAGMS_BUILTIN_MODELS`` if set,
else ``Resources/Models`` beside the folder of the ``magms`` package: the repository (and an
editable ``pip install -e .``), or ``qt-scripted-modules`` of the installed Slicer extension, where
``MAGMSCommon/CMakeLists.txt`` puts both.

Model files are data: JSON and safetensors, nothing is unpickled. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import magms
from magms.bundle import METADATA_FILE, WEIGHTS_FILE, OpenedModel, open_model
from magms.errors import BundleError, ConfigError, MAGMSError

__all__ = [
    "MODELS_ENV", "INDEX_FILE", "BuiltinModel", "models_folder", "read_model_list", "builtin_models", "default_model_name", "builtin_model",
    "open_builtin_model",
]

MODELS_ENV = "MAGMS_BUILTIN_MODELS"
INDEX_FILE = "models.json"
_ENTRY_KEYS = ("name", "version", "folder", "sha256", "description")
# what to do when the files are not there, said once for every message
_REMEDY = (
    f"give a bundle folder (--model), or set {MODELS_ENV} to a Resources/Models folder that has the weights "
    "(a checkout of MAGMS with them; a non-editable 'pip install .' does not carry Resources/, 'pip install -e .' does)"
)


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    """One entry of the index.

    Attributes:
        name: the model's name, also the id the CLI and the modules use.
        version: the entry's version.
        folder: its bundle folder, relative to the models folder.
        sha256: hex digest of its ``model.safetensors``.
        description: one line for lists and ``--help``.
    """

    name: str
    version: str
    folder: str
    sha256: str
    description: str


def models_folder() -> Path:
    """``$MAGMS_BUILTIN_MODELS``, else ``Resources/Models`` beside the ``magms`` package's folder."""
    configured = os.environ.get(MODELS_ENV)
    if configured:
        return Path(configured)
    return Path(magms.__file__).resolve().parent.parent / "Resources" / "Models"


def _read_index(folder: Path) -> tuple[str, list[BuiltinModel]]:
    """The default's name and the entries of ``folder/models.json``, checked.

    Raises:
        BundleError: no index, not JSON, a malformed entry (named), a default that is not listed.
    """
    index = folder / INDEX_FILE
    if not index.is_file():
        raise BundleError(f"{index}: no index of built-in models here; {_REMEDY}")
    data, items = read_model_list(index, _ENTRY_KEYS, "the index of built-in models", BundleError)
    found = [BuiltinModel(i["name"], i["version"], i["folder"], i["sha256"], i["description"]) for i in items]
    names = [m.name for m in found]
    if len(set(names)) != len(names):
        raise BundleError(f"{index}: a model name appears twice")
    default = data.get("default")
    if default not in names:
        raise BundleError(f"{index}: the default {default!r} is not one of its models ({', '.join(names) or 'none'})")
    return default, found


def read_model_list(path: Path, keys: tuple[str, ...], what: str,
                    error: type[MAGMSError] = BundleError) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A JSON file ``{"models": [{...}, ...], ...}`` whose entries each hold the string ``keys``,
    one of them a ``sha256`` of 64 hex digits (returned in lower case): the built-in index here,
    the download registry of the Slicer modules.

    Returns:
        the whole JSON object and its entries.
    Raises:
        ``error``: unreadable, no ``models`` list, an entry lacking a key or with a malformed sha256 (named).
    """
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: cannot be read as {what} ({err})") from err
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise error(f"{path}: a 'models' list is expected")
    items = []
    for n, item in enumerate(entries):
        missing = [k for k in keys if not isinstance(item, dict) or not isinstance(item.get(k), str)]
        if missing:
            raise error(f"{path}: model {n} lacks {', '.join(missing)}")
        digest = item["sha256"].lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise error(f"{path}: model {item['name']!r}: sha256 must be 64 hex digits")
        items.append({**{k: item[k] for k in keys}, "sha256": digest})
    return data, items


def builtin_models(folder: Path | None = None) -> list[BuiltinModel]:
    """The entries of the index, the default first; their files are not checked (see :func:`builtin_model`).

    Raises:
        BundleError: the index is missing or malformed.
    """
    default, found = _read_index(folder or models_folder())
    return sorted(found, key=lambda m: m.name != default)


def default_model_name(folder: Path | None = None) -> str:
    """The name of the default built-in model."""
    return _read_index(folder or models_folder())[0]


def builtin_model(name: str | None = None, folder: Path | None = None) -> Path:
    """The bundle folder of a built-in model, its weights checked against the index's sha256 and
    ``magms.json`` (:func:`open_builtin_model`).

    Args:
        name: the model's name (default: the index's default).
        folder: the models folder (default: :func:`models_folder`).
    Raises:
        see :func:`open_builtin_model`.
    """
    return open_builtin_model(name, folder).folder


def open_builtin_model(name: str | None = None, folder: Path | None = None) -> OpenedModel:
    """A built-in model, opened (:func:`magms.bundle.open_model`): ``magms.json`` read once, the weights
    hashed once and checked against both the index's sha256 and the recorded one.

    Args:
        name: the model's name (default: the index's default).
        folder: the models folder (default: :func:`models_folder`).
    Raises:
        ConfigError: no built-in model has this name.
        BundleError: the index is missing or malformed; the bundle folder, its ``magms.json`` or its
            weights are missing; the weights' sha256 differs from the index's or from ``magms.json``'s.
            The message names the file and says what to do.
    """
    root = folder or models_folder()
    default, found = _read_index(root)
    wanted = name or default
    entry = next((m for m in found if m.name == wanted), None)
    if entry is None:
        raise ConfigError(f"no built-in model {wanted!r}; there are: {', '.join(m.name for m in found)}")
    bundle = root / entry.folder
    for path in (bundle, bundle / WEIGHTS_FILE, bundle / METADATA_FILE):
        if not path.exists():
            raise BundleError(f"{path}: missing, so the built-in model {entry.name!r} cannot be used; {_REMEDY}")
    return open_model(bundle, also=(entry.sha256, root / INDEX_FILE))
