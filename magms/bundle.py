"""The model bundle: the one place that defines how a trained model is stored and checked.

A bundle is a folder holding

* ``model.safetensors``: the weights (safetensors: plain tensors, nothing is ever unpickled);
* ``magms.json``: everything needed to use them: schema version, slots in input order, the label
  scheme (names, colours, terminology codes), the network config, the preprocessing, the
  post-processing (size rules, flip test-time augmentation), training provenance, per-subset
  validation metrics, and the sha256 of the weights file.

Loading checks the schema version, the required keys and the weights' sha256 before building the
network, and loads the tensors with ``strict=True``; each fault is a :class:`~magms.errors.BundleError`
naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import magms
from magms.config import NetConfig, PostprocessConfig, PreprocessConfig
from magms.errors import BundleError, ConfigError
from magms.files import atomic_write, atomic_write_text
from magms.labels import LabelScheme

if TYPE_CHECKING:  # torch, MONAI and safetensors are imported where tensors are handled, so that
    # the metadata can be read (e.g. by the Slicer module before its dependencies are installed).
    import torch
    from torch import nn

    from magms.networks import MAGMSNet

__all__ = [
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "METADATA_FILE",
    "BundleInfo",
    "OpenedModel",
    "save_bundle",
    "read_bundle_info",
    "open_model",
    "load_network",
    "load_bundle",
    "verified_weights",
    "file_sha256",
    "WEIGHTS_DTYPES",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
#: How the floating-point weights may be stored; the network always computes in float32.
WEIGHTS_DTYPES = ("float32", "float16")
METADATA_FILE = "magms.json"
_REQUIRED_KEYS = ("format_version", "modalities", "labels", "network", "preprocessing", "weights_sha256")


@dataclasses.dataclass(frozen=True)
class BundleInfo:
    """The content of ``magms.json``.

    Attributes:
        network: architecture; ``network.slots`` are the modalities in input order.
        scheme: label scheme of the output (class ``i`` of the network is ``scheme.labels[i]``),
            stored under the JSON key ``labels``.
        preprocessing: how inputs were prepared in training, to repeat at inference.
        postprocessing: what inference does after the network (none for bundles without the key).
        training: provenance: data, epochs, seed, options, code version (free-form JSON object).
        validation: validation metrics per modality subset, e.g. ``{"flair+t1c": {"wt_dice": 0.9}}``.
        weights_sha256: hex digest of ``model.safetensors``.
        versions: ``magms``, ``torch`` and ``monai`` versions that wrote the bundle.
        created: ISO-8601 UTC time of writing.
        format_version: bundle schema version.
    """

    network: NetConfig
    scheme: LabelScheme
    preprocessing: PreprocessConfig
    training: dict[str, Any]
    validation: dict[str, Any]
    weights_sha256: str
    versions: dict[str, str]
    created: str
    format_version: int = FORMAT_VERSION
    postprocessing: PostprocessConfig = PostprocessConfig()

    @property
    def slots(self) -> tuple[str, ...]:
        return self.network.slots

    @property
    def labels(self) -> LabelScheme:
        """The label scheme, :attr:`scheme`, by the name of its JSON key, kept for callers."""
        return self.scheme

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "magms_version": self.versions.get("magms"),
            "torch_version": self.versions.get("torch"),
            "monai_version": self.versions.get("monai"),
            "created": self.created,
            "modalities": list(self.slots),
            "labels": self.scheme.to_dict(),
            "network": self.network.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "postprocessing": self.postprocessing.to_dict(),
            "training": self.training,
            "validation": self.validation,
            "weights_sha256": self.weights_sha256,
        }


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_bundle(
    path: str | os.PathLike[str],
    model: MAGMSNet,
    network: NetConfig,
    labels: LabelScheme,
    preprocessing: PreprocessConfig,
    training: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    postprocessing: PostprocessConfig = PostprocessConfig(),
    weights_dtype: str = "float32",
) -> BundleInfo:
    """Write ``model`` and its description as a bundle folder.

    The weights are written first and ``magms.json`` last, each atomically, so an interrupted save
    never leaves a bundle whose JSON describes other weights.

    Args:
        path: bundle folder (created if missing).
        model: the network; its state dict must match ``network``.
        network, labels, preprocessing: what ``magms.json`` records.
        training, validation: provenance and per-subset metrics (JSON-serialisable).
        overwrite: replace an existing bundle in ``path``.
        postprocessing: what inference does after the network.
        weights_dtype: ``"float32"``, or ``"float16"`` to store the floating-point tensors in half the
            space (loading casts them back to the network's float32).
    Raises:
        BundleError: ``path`` already holds a bundle and ``overwrite`` is False, or the network
            config does not fit the label scheme.
    """
    folder = Path(path)
    if (folder / METADATA_FILE).exists() and not overwrite:
        raise BundleError(f"{folder}: a bundle already exists here (use overwrite to replace it)")
    _check_channels(network, labels, folder)
    try:
        postprocessing.check_against(labels)
    except ConfigError as err:
        raise BundleError(f"{folder}: {err}") from err
    import monai
    import torch

    if weights_dtype not in WEIGHTS_DTYPES:
        raise BundleError(f"{folder}: weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
    folder.mkdir(parents=True, exist_ok=True)
    _write_weights(model, folder / WEIGHTS_FILE, getattr(torch, weights_dtype))
    info = BundleInfo(
        network=network,
        scheme=labels,
        preprocessing=preprocessing,
        training=json.loads(json.dumps(dict(training or {}))),
        validation=json.loads(json.dumps(dict(validation or {}))),
        weights_sha256=file_sha256(folder / WEIGHTS_FILE),
        versions={"magms": magms.__version__, "torch": torch.__version__, "monai": monai.__version__},
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        postprocessing=postprocessing,
    )
    text = json.dumps(info.to_dict(), indent=2) + "\n"
    atomic_write_text(folder / METADATA_FILE, text)
    logger.info("wrote bundle %s (%s, slots %s)", folder, network.backbone, ", ".join(network.slots))
    return info


def _write_weights(model: MAGMSNet, path: Path, stored: torch.dtype) -> None:
    """The network's state as safetensors, floating-point tensors in ``stored``, written atomically."""
    import safetensors.torch

    state = {
        k: (v.detach().to("cpu", stored) if v.is_floating_point() else v.detach().to("cpu")).contiguous()
        for k, v in model.state_dict().items()
    }
    atomic_write(path, lambda p: safetensors.torch.save_file(state, str(p), metadata={"format": "pt"}))


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read and check ``magms.json`` of a bundle folder, without touching the weights.

    Raises:
        BundleError: missing folder or file, invalid JSON, unknown format version, a missing or
            unknown key, or inconsistent slots.
    """
    folder = Path(path)
    meta_path, meta = _read_metadata(folder)
    try:
        network = NetConfig.from_dict(meta["network"])
        scheme = LabelScheme.from_dict(meta["labels"])
        preprocessing = PreprocessConfig.from_dict(meta["preprocessing"])
        postprocessing = PostprocessConfig.from_dict(meta.get("postprocessing") or {})
        postprocessing.check_against(scheme)
    except ConfigError as err:
        raise BundleError(f"{meta_path}: {err}") from err
    if list(network.slots) != list(meta["modalities"]):
        raise BundleError(f"{meta_path}: 'modalities' {meta['modalities']} differ from the network's slots {list(network.slots)}")
    _check_channels(network, scheme, meta_path)
    _warn_if_newer_monai(folder, meta.get("monai_version") or "0")
    return BundleInfo(
        network=network,
        scheme=scheme,
        preprocessing=preprocessing,
        training=dict(meta.get("training") or {}),
        validation=dict(meta.get("validation") or {}),
        weights_sha256=str(meta["weights_sha256"]),
        versions={k: str(meta.get(f"{k}_version")) for k in ("magms", "torch", "monai")},
        created=str(meta.get("created", "")),
        format_version=meta["format_version"],
        postprocessing=postprocessing,
    )


def _read_metadata(folder: Path) -> tuple[Path, dict[str, Any]]:
    """``magms.json`` of ``folder`` as a JSON object of a supported format with the required keys.

    Returns:
        the file's path (for messages) and its content.

    Raises:
        BundleError: missing folder or file, invalid JSON, unknown format version, a missing key.
    """
    meta_path = folder / METADATA_FILE
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    if not meta_path.is_file():
        raise BundleError(f"{folder}: not a MAGMS bundle ({METADATA_FILE} is missing)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{meta_path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{meta_path}: format_version {version!r} is not supported; this MAGMS "
            f"{magms.__version__} reads format_version {FORMAT_VERSION}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{meta_path}: missing key(s) {', '.join(map(repr, missing))}")
    return meta_path, meta


def _check_channels(network: NetConfig, scheme: LabelScheme, where: Path) -> None:
    # class i of the network is label i of the scheme: the counts must agree
    if network.out_channels != scheme.num_classes:
        raise BundleError(
            f"{where}: network has {network.out_channels} output channels but label scheme "
            f"{scheme.key!r} has {scheme.num_classes} labels"
        )


def _warn_if_newer_monai(folder: Path, written: str) -> None:
    try:
        from importlib.metadata import version

        installed = version("monai")
    except Exception:  # MONAI not installed (yet): nothing to compare with
        return
    if _version_tuple(written) > _version_tuple(installed):
        logger.warning("%s was written with MONAI %s, newer than the installed %s", folder, written, installed)


def verified_weights(path: str | os.PathLike[str], info: BundleInfo, also: tuple[str, Path] | None = None) -> Path:
    """The bundle's weights file, after checking that its sha256 is the one ``magms.json`` records
    (what the exported graphs are keyed by, so they too run only for the weights they came from).

    Args:
        also: another record the same digest must match, as (sha256, the file that records it): the
            built-in models' index. The file is hashed once for both.
    Raises:
        BundleError: the file is missing, or its sha256 differs (naming the record it differs from).
    """
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{weights}: weights file is missing")
    digest = file_sha256(weights)
    if also is not None and digest != also[0]:
        raise BundleError(f"{weights}: sha256 {digest[:12]}... differs from {also[0][:12]}... in {also[1]}: "
                          "the weights are damaged or were replaced")
    if digest != info.weights_sha256:
        raise BundleError(
            f"{weights}: sha256 {digest[:12]}... does not match {info.weights_sha256[:12]}... recorded in "
            f"{METADATA_FILE}: the weights are damaged or were replaced"
        )
    return weights


@dataclasses.dataclass(frozen=True)
class OpenedModel:
    """A model bundle opened once, at the edge (the CLI, the demo, a script): its folder, its checked
    ``magms.json`` and its weights file, verified by sha256. What runs it takes this object, so nothing
    below reads ``magms.json`` again or hashes the weights again (:func:`open_model`).

    Attributes:
        folder: the bundle folder.
        info: its :class:`BundleInfo`.
        weights: its ``model.safetensors``, whose sha256 is the recorded one.
    """

    folder: Path
    info: BundleInfo
    weights: Path

    @property
    def name(self) -> str:
        return self.folder.name


def open_model(path: str | os.PathLike[str], also: tuple[str, Path] | None = None) -> OpenedModel:
    """Open a bundle: read and check ``magms.json`` once, hash the weights once.

    Args:
        path: bundle folder.
        also: see :func:`verified_weights` (the built-in index's sha256).
    Raises:
        BundleError: see :func:`read_bundle_info` and :func:`verified_weights`.
    """
    info = read_bundle_info(path)
    return OpenedModel(Path(path), info, verified_weights(path, info, also))


def load_network(model: OpenedModel, device: str | torch.device = "cpu") -> MAGMSNet:
    """The network of an opened bundle, its weights loaded strictly, in eval mode on ``device``.

    Raises:
        BundleError: the weights cannot be read, or do not fit the network in ``magms.json``.
    """
    import safetensors
    import safetensors.torch

    from magms.networks import build_network

    try:
        state = safetensors.torch.load_file(str(model.weights))
    except (safetensors.SafetensorError, OSError) as err:
        raise BundleError(f"{model.weights}: cannot read safetensors data ({err})") from err
    net = build_network(model.info.network)
    _load_strict(net, state, model.weights)
    return net.to(device).eval()


def load_bundle(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[MAGMSNet, BundleInfo]:
    """Load a bundle: check ``magms.json`` and the weights' sha256, build the network, load strictly
    (:func:`open_model` then :func:`load_network`).

    Args:
        path: bundle folder.
        device: where to put the network.
    Returns:
        The network in eval mode and its :class:`BundleInfo`.
    Raises:
        BundleError: see :func:`read_bundle_info`; also a missing or damaged weights file, a sha256
            mismatch, or weights that do not fit the network.
    """
    model = open_model(path)
    return load_network(model, device), model.info


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})")
        raise BundleError(f"{source}: weights do not fit the network in {METADATA_FILE}; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
