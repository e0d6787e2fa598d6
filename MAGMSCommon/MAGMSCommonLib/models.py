"""Models from a registry file: download once, verify by sha256, keep in a per-user cache.

The registry (``Resources/Models.json`` of the extension) lists ``name``, ``version``, ``url`` (a
``.zip`` of one bundle folder), ``sha256`` of that zip and a ``description``. A download is
checked before anything is unpacked; a wrong checksum deletes it and nothing is cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from magms.builtin import builtin_model, read_model_list
from magms.bundle import METADATA_FILE, read_bundle_info
from magms.errors import BundleError, ConfigError
from magms.files import atomic_write_text

__all__ = [
    "ModelEntry", "readRegistry", "defaultCacheFolder", "cachedModel", "fetchModel",
    "localModelsFile", "registerLocalBundle", "localBundles", "BUILTIN_PREFIX", "chosenBundleFolder",
]

REGISTRY_KEYS = ("name", "version", "url", "sha256", "description")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    url: str
    sha256: str
    description: str

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"


def readRegistry(path: str | os.PathLike[str]) -> list[ModelEntry]:
    """Read a registry file: ``{"models": [{name, version, url, sha256, description}, ...]}``.

    Raises:
        ConfigError: unreadable, or an entry with a missing key or a malformed sha256 (named).
    """
    path = Path(path)
    _, items = read_model_list(path, REGISTRY_KEYS, "a model registry", ConfigError)
    entries = [ModelEntry(i["name"], i["version"], i["url"], i["sha256"], i["description"]) for i in items]
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: a name and version appear twice")
    return entries


def defaultCacheFolder() -> Path:
    """``$MAGMS_MODEL_CACHE``, else ``~/.cache/magms/models``."""
    return Path(os.environ.get("MAGMS_MODEL_CACHE") or Path.home() / ".cache" / "magms" / "models")


def cachedModel(entry: ModelEntry, cache: Path | None = None) -> Path | None:
    """The cached bundle folder of ``entry`` if it was downloaded and verified before."""
    folder = (cache or defaultCacheFolder()) / entry.id
    marker = folder / ".source-sha256"
    if (folder / METADATA_FILE).is_file() and marker.is_file() and marker.read_text().strip() == entry.sha256:
        return folder
    return None


def fetchModel(entry: ModelEntry, cache: Path | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """The bundle folder of ``entry``: from the cache, or downloaded, verified and unpacked.

    Raises:
        BundleError: the download fails, its sha256 differs from the registry's, the zip is unsafe
            or holds no bundle.
    """
    cache = cache or defaultCacheFolder()
    found = cachedModel(entry, cache)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{entry.id}-", dir=cache))
    try:
        archive = work / "bundle.zip"
        digest = _download(entry.url, archive, progress)
        if digest != entry.sha256:
            raise BundleError(
                f"{entry.url}: sha256 {digest[:12]}... differs from {entry.sha256[:12]}... in the registry: "
                "the download is damaged or was replaced; nothing was kept"
            )
        unpacked = work / "unpacked"
        _safe_extract(archive, unpacked, entry.url)
        bundles = [p.parent for p in unpacked.rglob(METADATA_FILE)]
        if len(bundles) != 1:
            raise BundleError(f"{entry.url}: the zip holds {len(bundles)} bundles ({METADATA_FILE} files), one is expected")
        read_bundle_info(bundles[0])
        (bundles[0] / ".source-sha256").write_text(entry.sha256 + "\n")
        final = cache / entry.id
        if final.exists():
            shutil.rmtree(final)
        os.replace(bundles[0], final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(url: str, target: Path, progress: Callable[[int, int], None] | None) -> str:
    sha = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except OSError as err:
        raise BundleError(f"{url}: download failed ({err})") from err
    return sha.hexdigest()


def _safe_extract(archive: Path, target: Path, source: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                resolved = (target / member).resolve()
                if not resolved.is_relative_to(target.resolve()):
                    raise BundleError(f"{source}: the zip holds a path outside its folder ({member})")
            zf.extractall(target)
    except zipfile.BadZipFile as err:
        raise BundleError(f"{source}: not a zip file") from err


# --- bundles trained here (MAGMS Training registers them; the Segmenter lists them) -------------


def localModelsFile() -> Path:
    """``local_models.json`` beside the download cache."""
    return defaultCacheFolder().parent / "local_models.json"


def localBundles(listFile: Path | None = None) -> list[Path]:
    """Registered local bundles that still exist, newest first."""
    path = listFile or localModelsFile()
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("bundles", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return []
    return [Path(p) for p in entries if (Path(p) / METADATA_FILE).is_file()]


def registerLocalBundle(bundle: str | os.PathLike[str], listFile: Path | None = None) -> None:
    """Add a bundle folder to the local list (checked first; listed once, newest first).

    Raises:
        BundleError: not a readable bundle.
    """
    folder = Path(bundle).resolve()
    read_bundle_info(folder)
    path = listFile or localModelsFile()
    bundles = [str(folder)] + [str(p) for p in localBundles(path) if p.resolve() != folder]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"bundles": bundles}, indent=1) + "\n")


# --- the built-in models (magms.builtin), as the modules' settings name them ---------------------

#: A setting that names a built-in model holds ``builtin:<name>``, not its folder: a saved scene then
#: finds the model again wherever the extension is installed.
BUILTIN_PREFIX = "builtin:"


def chosenBundleFolder(choice: str, builtinFolder: Callable[[str], Path] = builtin_model) -> Path:
    """The bundle folder a setting names: ``builtin:<name>`` is the built-in model's folder, its weights
    checked against the index's sha256 (``builtinFolder``); anything else is a folder path.

    Raises:
        BundleError, ConfigError: the built-in model is unknown, missing or damaged (named).
    """
    if choice.startswith(BUILTIN_PREFIX):
        return builtinFolder(choice[len(BUILTIN_PREFIX):])
    return Path(choice)
