"""Model bundle: round trip, integrity checks, and no pickle anywhere."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import REPO, tiny_config
from magms.bundle import METADATA_FILE, WEIGHTS_FILE, load_bundle, read_bundle_info, save_bundle
from magms.config import PreprocessConfig
from magms.errors import BundleError
from magms.labels import get_scheme
from magms.networks import build_network


@pytest.fixture(params=["unet", "unetr"])
def saved(request, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(request.param, slots=("flair", "t1c"))
    net = build_network(cfg)
    folder = tmp_path / "bundle"
    info = save_bundle(
        folder, net, cfg, get_scheme("msd_task01"), PreprocessConfig(patch_size=cfg.img_size),
        training={"data": "toy", "epochs": 0, "seed": 0},
        validation={"flair+t1c": {"wt_dice": 0.5}},
    )
    return net, cfg, folder, info


def test_round_trip_gives_identical_outputs(saved):
    net, cfg, folder, info = saved
    loaded, info2 = load_bundle(folder)
    x = torch.randn(1, 2, *cfg.img_size)
    with torch.no_grad():
        for subset in (["flair"], ["t1c"], ["flair", "t1c"]):
            assert torch.equal(net.eval()(x, subset), loaded(x, subset))
    assert info2.network == cfg and info2.slots == ("flair", "t1c")
    assert info2.labels == get_scheme("msd_task01")
    assert info2.validation == {"flair+t1c": {"wt_dice": 0.5}}
    assert info2.training["epochs"] == 0
    assert info2.weights_sha256 == info.weights_sha256


def test_json_records_what_the_issue_lists(saved):
    _, _, folder, _ = saved
    meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    for key in ("format_version", "magms_version", "torch_version", "monai_version", "modalities", "labels",
                "network", "preprocessing", "training", "validation", "weights_sha256"):
        assert key in meta, key
    assert meta["modalities"] == ["flair", "t1c"]
    assert re.fullmatch(r"[0-9a-f]{64}", meta["weights_sha256"])
    assert {"spacing", "orientation", "normalization", "patch_size", "overlap"} <= set(meta["preprocessing"])
    label_names = [label["name"] for label in meta["labels"]["labels"]]
    assert len(label_names) == 4


def test_changed_byte_in_weights_is_detected(saved):
    _, _, folder, _ = saved
    weights = folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.safetensors: sha256 .* does not match"):
        load_bundle(folder)


def test_wrong_format_version(saved):
    _, _, folder, _ = saved
    meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    meta["format_version"] = 99
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format_version 99 is not supported"):
        load_bundle(folder)


@pytest.mark.parametrize("key", ["labels", "network", "weights_sha256", "modalities"])
def test_missing_key(saved, key):
    _, _, folder, _ = saved
    meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    del meta[key]
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=f"missing key.*'{key}'"):
        load_bundle(folder)


def test_unknown_network_key_is_named(saved):
    _, _, folder, _ = saved
    meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    meta["network"]["wings"] = 2
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="unknown key.*'wings'"):
        read_bundle_info(folder)


def test_weights_of_another_network_are_refused(saved, tmp_path):
    _, cfg, folder, _ = saved
    other = tiny_config(cfg.backbone, slots=("flair", "t2"))
    save_bundle(tmp_path / "other", build_network(other), other, get_scheme("msd_task01"), PreprocessConfig())
    (folder / WEIGHTS_FILE).write_bytes((tmp_path / "other" / WEIGHTS_FILE).read_bytes())
    meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    meta["weights_sha256"] = json.loads((tmp_path / "other" / METADATA_FILE).read_text(encoding="utf-8"))["weights_sha256"]
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="weights do not fit the network.*missing: encoders.t1c"):
        load_bundle(folder)


def test_missing_files_and_folder(tmp_path, saved):
    _, _, folder, _ = saved
    with pytest.raises(BundleError, match="no such bundle folder"):
        load_bundle(tmp_path / "nowhere")
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(BundleError, match="weights file is missing"):
        load_bundle(folder)
    (folder / METADATA_FILE).unlink()
    with pytest.raises(BundleError, match="magms.json is missing"):
        load_bundle(folder)


def test_existing_bundle_not_overwritten(saved):
    net, cfg, folder, info = saved
    before = (folder / WEIGHTS_FILE).read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(folder, build_network(cfg), cfg, get_scheme("msd_task01"), PreprocessConfig())
    assert (folder / WEIGHTS_FILE).read_bytes() == before
    save_bundle(folder, build_network(cfg), cfg, get_scheme("msd_task01"), PreprocessConfig(), overwrite=True)
    assert read_bundle_info(folder).weights_sha256 != info.weights_sha256
    assert not list(folder.glob(".*.tmp")), "temporary files left behind"


def test_label_count_must_match_network(tmp_path):
    cfg = tiny_config("unet", out_channels=3)
    with pytest.raises(BundleError, match="3 output channels but label scheme 'msd_task01' has 4"):
        save_bundle(tmp_path / "b", build_network(cfg), cfg, get_scheme("msd_task01"), PreprocessConfig())


def test_nothing_is_ever_unpickled():
    sources = [p for p in (REPO / "magms").rglob("*.py")]
    assert sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "torch.load(" not in text, path
        assert not re.search(r"^\s*(import|from)\s+(pickle|cPickle|dill)\b", text, re.M), path


def test_half_precision_weights_take_half_the_space_and_load_as_float32(saved, tmp_path):
    net, cfg, folder, _ = saved
    half = tmp_path / "half"
    save_bundle(half, net, cfg, get_scheme("msd_task01"), PreprocessConfig(patch_size=cfg.img_size), weights_dtype="float16")
    ratio = (half / WEIGHTS_FILE).stat().st_size / (folder / WEIGHTS_FILE).stat().st_size
    assert 0.45 < ratio < 0.6
    loaded, _ = load_bundle(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 2, *cfg.img_size)
    with torch.no_grad():
        reference, rounded = net.eval()(x, ["flair", "t1c"]), loaded(x, ["flair", "t1c"])
    assert not torch.equal(reference, rounded)  # the weights were rounded ...
    torch.testing.assert_close(rounded, reference, atol=2e-2, rtol=1e-2)  # ... to half precision only
    with pytest.raises(BundleError, match="weights_dtype must be one of float32, float16"):
        save_bundle(tmp_path / "x", net, cfg, get_scheme("msd_task01"), PreprocessConfig(patch_size=cfg.img_size), weights_dtype="int8")
