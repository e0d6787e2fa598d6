"""The network's exported graphs: one ONNX graph per slot's encoder and one for the decoder, made once per
model and cached.

Graphs are data, not code: ONNX files and a JSON record (``graphs.json``), never pickles. They are
cached by the sha256 of the weights file, in this order:

* ``$MAGMS_ENGINE_CACHE/<sha256>/`` when that variable is set;
* ``<bundle>/.engines/<sha256[:16]>/`` beside the bundle when its folder is writable (older
  exports of replaced weights there are removed);
* ``$XDG_CACHE_HOME`` (default ``~/.cache``) ``/magms/engines/<sha256>/``.

The folder is written at once (:func:`magms.files.replace_folder`). A later run uses it when its
record matches (weights' sha256, slots, window shape, precision, format and the magms, torch and
ONNX versions that wrote it) and every graph's sha256 is the recorded one; otherwise it is exported
again. Exporting imports torch; reading the cache does not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import magms
from magms.errors import ConfigError
from magms.files import replace_folder

if TYPE_CHECKING:
    from magms.bundle import BundleInfo
    from magms.networks import MAGMSNet

__all__ = ["CACHE_ENV", "GRAPHS_RECORD", "engine_cache_folders", "cached_graphs", "export_graphs"]

logger = logging.getLogger(__name__)

#: Where exported graphs go instead of beside the bundle or in the home cache.
CACHE_ENV = "MAGMS_ENGINE_CACHE"
#: The record of an export, in its folder.
GRAPHS_RECORD = "graphs.json"
#: Version of the layout of an export folder.
GRAPHS_FORMAT = 1
#: ONNX opset of the exported graphs.
OPSET = 17


def engine_cache_folders(bundle: Path, weights_sha256: str) -> list[Path]:
    """Where the graphs of a bundle may be, in the order they are looked for and written."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return [Path(configured) / weights_sha256]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [bundle / ".engines" / weights_sha256[:16], home / "magms" / "engines" / weights_sha256]


def _versions() -> dict[str, str]:
    from importlib.metadata import version  # read, not imported: a cached run never imports torch (seconds)

    return {"magms": magms.__version__, "torch": version("torch"), "onnx": version("onnx")}


def _expected_record(info: BundleInfo) -> dict[str, Any]:
    """The record of an export of this bundle by this installation, without the files' digests."""
    return {
        "format_version": GRAPHS_FORMAT,
        "graphs": f"onnx opset {OPSET}",
        "weights_sha256": info.weights_sha256,
        "slots": list(info.slots),
        "window": list(info.preprocessing.patch_size),
        "precision": "fp32",
        "versions": _versions(),
    }


def _read_valid_record(folder: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The folder's record if it matches ``expected`` and its graphs are intact, else None (why is logged)."""
    from magms.bundle import file_sha256

    path = folder / GRAPHS_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.info("%s: unreadable (%s): exporting again", path, err)
        return None
    if not isinstance(record, dict) or {k: record.get(k) for k in expected} != expected:
        logger.info("%s: made for other weights, window or versions: exporting again", path)
        return None
    files = record.get("files")
    wanted = [f"encoder-{slot}.onnx" for slot in expected["slots"]] + ["decoder.onnx"]
    if not isinstance(files, dict) or sorted(files) != sorted(wanted):
        return None
    for name, digest in files.items():
        if not (folder / name).is_file() or file_sha256(folder / name) != digest:
            logger.info("%s: missing or changed: exporting again", folder / name)
            return None
    return record


def cached_graphs(info: BundleInfo, bundle: str | os.PathLike[str], load_net: Callable[[], MAGMSNet]) -> tuple[Path, bool]:
    """The folder of the bundle's exported graphs, exporting them first when no valid export exists.

    Args:
        info: the bundle's :class:`~magms.bundle.BundleInfo` (weights' sha256 checked on reading).
        bundle: the bundle folder.
        load_net: gives the bundle's network, called only to export (it imports torch).
    Returns:
        (the folder, whether it was exported now).
    Raises:
        ConfigError: no cache folder can be written (each tried is named).
    """
    folders = engine_cache_folders(Path(bundle), info.weights_sha256)
    expected = _expected_record(info)
    for folder in folders:
        if _read_valid_record(folder, expected) is not None:
            return folder, False
    net = load_net()
    failures = []
    for folder in folders:
        try:
            export_graphs(net, info, folder)
        except OSError as err:  # a read-only bundle folder: the next place
            failures.append(f"{folder} ({err})")
            continue
        if folder.parent.name == ".engines":  # beside the bundle: exports of replaced weights are stale
            for other in folder.parent.iterdir():
                if other != folder and not other.name.startswith("."):
                    shutil.rmtree(other, ignore_errors=True)
        return folder, True
    raise ConfigError(f"cannot write the exported graphs to {'; '.join(failures)}: set {CACHE_ENV} to a writable folder")


def export_graphs(net: MAGMSNet, info: BundleInfo, folder: Path) -> None:
    """Export each slot's encoder and the decoder as ONNX graphs, with their record, into ``folder``
    (replaced at once). The batch axis is dynamic; the window is the bundle's patch size.

    Raises:
        OSError: the folder cannot be written.
    """
    import copy

    import torch

    from magms.bundle import file_sha256

    model = copy.deepcopy(net).to("cpu").eval()
    window = tuple(info.preprocessing.patch_size)
    example = torch.zeros(2, 1, *window)
    with torch.inference_mode():
        levels = len(model.encoders[info.slots[0]](example))
    names = [f"f{i}" for i in range(levels)]
    batch = {0: "batch"}

    def fill(tmp: Path) -> None:
        files = {}
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of the dynamo one (which needs onnxscript),
            # and notes that instance norm uses the window's statistics, which is what eval does too
            warnings.simplefilter("ignore")
            for slot in info.slots:
                name = f"encoder-{slot}.onnx"
                torch.onnx.export(
                    model.encoders[slot], (example,), str(tmp / name), input_names=["image"], output_names=names,
                    dynamic_axes={"image": batch, **{n: batch for n in names}}, opset_version=OPSET, dynamo=False,
                )
                files[name] = file_sha256(tmp / name)
            with torch.no_grad():
                features = model.encoders[info.slots[0]](example)
            torch.onnx.export(
                model.decoder, (tuple(features),), str(tmp / "decoder.onnx"), input_names=names, output_names=["logits"],
                dynamic_axes={"logits": batch, **{n: batch for n in names}}, opset_version=OPSET, dynamo=False,
            )
            files["decoder.onnx"] = file_sha256(tmp / "decoder.onnx")
        record = {**_expected_record(info), "files": files}
        (tmp / GRAPHS_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    folder.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(folder, fill)
    logger.info("exported %d graphs of %s to %s", len(info.slots) + 1, ", ".join(info.slots), folder)
