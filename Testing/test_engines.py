"""The exported engines (:mod:`magms.inference.engine`, ``graphs``, ``predictors``): equal to eager on real windows for every subset, the
cache keyed by the weights' sha256, nothing pickled, clear messages; and a CLI that starts without torch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, REPO, modules_imported, needs_data, random_unet_bundle
from magms.builtin import builtin_model
from magms.bundle import load_bundle, open_model, save_bundle
from magms.errors import ConfigError
from magms.inference import Segmenter
from magms.inference.engine import FAST_EXTRA, resolve_engine
from magms.inference.graphs import CACHE_ENV, GRAPHS_RECORD, cached_graphs, engine_cache_folders
from magms.inference.predictors import EagerPredictor, GraphPredictor, make_predictor
from magms.modalities import subsets_of
from magms.networks import build_network

CPU = "cpu"
EXPORTED = [
    pytest.param(engine, marks=pytest.mark.skipif(
        importlib.util.find_spec(engine) is None or importlib.util.find_spec("onnx") is None,
        reason=f"{engine} or onnx is not installed ({FAST_EXTRA})",
    ))
    for engine in ("onnxruntime", "openvino")
]
CASE = "Brats18_CBICA_AQR_1"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return random_unet_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def _unused():
    raise AssertionError("the network was loaded although the graphs are cached")


# --------------------------------------------------------------------------------------------
# equal to eager: every subset of the built-in model on a window of a real case


@pytest.fixture(scope="module")
def real_window(tmp_path_factory):
    """The central window of the built-in model's working grid of a real BraTS 2018 case, normalised
    as inference does, with all four sequences; eager's probabilities for every subset of it; and a
    graph cache shared by the engines (one export)."""
    if not (DATA / "brats18" / CASE).is_dir():
        pytest.skip(f"no real data in {DATA / 'brats18' / CASE} (set MAGMS_TEST_DATA)")
    from magms.data.preprocessing import foreground_box, normalize

    segmenter = Segmenter(builtin_model(), device="cpu")
    files = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}
    prepared = segmenter._prepare({s: DATA / "brats18" / CASE / f"{CASE}_{f}.nii.gz" for s, f in files.items()})
    x, foreground = normalize(prepared.working, segmenter.info.preprocessing.normalization)
    patch = segmenter.info.preprocessing.patch_size
    box = foreground_box(foreground)
    corner = [max(0, min((b.start + b.stop - p) // 2, s - p)) for b, p, s in zip(box, patch, x.shape[1:])]
    window = np.ascontiguousarray(x[(slice(None), *(slice(c, c + p) for c, p in zip(corner, patch)))][None])
    assert tuple(window.shape) == (1, 4, *patch)
    subsets = subsets_of(segmenter.slots)
    assert len(subsets) == 15
    net = segmenter.predictor.net
    with torch.inference_mode():
        eager = {subset: torch.softmax(net(torch.from_numpy(window), present=list(subset)), dim=1).numpy() for subset in subsets}
    return segmenter, window, eager, tmp_path_factory.mktemp("real-graphs")


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("engine", EXPORTED)
def test_fp32_engine_equals_eager_for_every_subset_on_a_real_window(engine, real_window, monkeypatch):
    segmenter, window, eager, cache = real_window
    monkeypatch.setenv(CACHE_ENV, str(cache))
    predictor, notes = make_predictor(segmenter.model, CPU, engine, "fp32")
    assert isinstance(predictor, GraphPredictor) and predictor.engine == f"{engine} fp32"
    worst = {}
    for subset, expected in eager.items():
        worst["+".join(subset)] = float(np.abs(_softmax(predictor(window, subset)) - expected).max())
    assert len(worst) == 15 and max(worst.values()) < 1e-3, worst


# --------------------------------------------------------------------------------------------
# through the Segmenter: segment, segment_subsets and segment_flips


@pytest.mark.parametrize("engine", EXPORTED)
def test_segmenter_runs_every_entry_point_through_the_engine(engine, bundle, tmp_path, monkeypatch):
    import SimpleITK as sitk

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    z, y, x = np.indices((30, 34, 38))
    head = ((z - 15) ** 2 / 150 + (y - 17) ** 2 / 200 + (x - 19) ** 2 / 260) < 1
    inputs = {}
    for i, slot in enumerate(("flair", "t1c")):
        image = sitk.GetImageFromArray((head * (100 + 30 * np.sin(x / (3.0 + i)) + rng.normal(0, 5, head.shape))).astype(np.float32))
        inputs[slot] = image
    eager, fast = Segmenter(bundle, device="cpu"), Segmenter(bundle, device="cpu", engine=engine)
    assert isinstance(eager.predictor, EagerPredictor) and eager.predictor.engine == "eager"
    one, other = eager.segment(inputs, probabilities=True), fast.segment(inputs, probabilities=True)
    assert (one.engine, other.engine) == ("eager", f"{engine} fp32")
    np.testing.assert_allclose(one.probabilities, other.probabilities, atol=1e-3)
    for a, b in zip(eager.segment_subsets(inputs).values(), fast.segment_subsets(inputs).values()):
        assert a.present == b.present and b.engine == f"{engine} fp32"
        assert np.mean(a.labels == b.labels) > 0.999
    _, flips = fast.segment_flips(inputs)
    assert len(flips) == 8 and {r.engine for r in flips.values()} == {f"{engine} fp32"}


# --------------------------------------------------------------------------------------------
# the cache


@pytest.mark.parametrize("engine", EXPORTED[:1])
def test_cache_is_keyed_by_the_weights_sha256_and_reused(engine, tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    folder = random_unet_bundle(tmp_path / "model")
    net, info = load_bundle(folder)
    first, exported = cached_graphs(info, folder, lambda: net)
    assert exported and first == folder / ".engines" / info.weights_sha256[:16]
    record = json.loads((first / GRAPHS_RECORD).read_text())
    assert record["weights_sha256"] == info.weights_sha256 and record["window"] == [32, 32, 32]
    assert record["precision"] == "fp32" and set(record["versions"]) == {"magms", "torch", "onnx"}
    stamp = (first / "decoder.onnx").stat().st_mtime_ns
    assert cached_graphs(info, folder, _unused) == (first, False)  # reused, not exported again, the network not loaded
    assert (first / "decoder.onnx").stat().st_mtime_ns == stamp
    # a record that does not match (another torch wrote it) is exported again
    (first / GRAPHS_RECORD).write_text(json.dumps({**record, "versions": {**record["versions"], "torch": "0.0"}}))
    assert cached_graphs(info, folder, lambda: net) == (first, True)
    # a damaged graph too
    (first / "encoder-t1.onnx").write_bytes(b"not a graph")
    assert cached_graphs(info, folder, lambda: net) == (first, True)
    # changed weights: a new export under their own sha256; the stale one beside the bundle is removed
    torch.manual_seed(1)
    info2 = save_bundle(folder, build_network(info.network), info.network, info.scheme, info.preprocessing, overwrite=True)
    assert info2.weights_sha256 != info.weights_sha256
    net2, info2 = load_bundle(folder)
    second, exported = cached_graphs(info2, folder, lambda: net2)
    assert exported and second == folder / ".engines" / info2.weights_sha256[:16]
    assert _files(folder / ".engines") == [info2.weights_sha256[:16]]
    predictor, _ = make_predictor(open_model(folder), CPU, engine)
    window = torch.randn(2, 4, 32, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(predictor(window.numpy(), ("t1", "t2")), net2(window, present=["t1", "t2"]).numpy(), atol=1e-3)


def test_cache_goes_home_when_the_bundle_folder_is_read_only_and_env_overrides(bundle, tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    digest = "ab" * 32
    assert engine_cache_folders(bundle, digest) == [bundle / ".engines" / digest[:16],
                                                    tmp_path / "home-cache" / "magms" / "engines" / digest]
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert engine_cache_folders(bundle, digest) == [tmp_path / "mine" / digest]


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason=f"onnx is not installed ({FAST_EXTRA})")
def test_read_only_bundle_exports_into_the_home_cache(tmp_path, monkeypatch):
    import magms.inference.graphs

    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    folder = random_unet_bundle(tmp_path / "model")
    net, info = load_bundle(folder)
    export = magms.inference.graphs.export_graphs

    def read_only_bundle(net, info, where):  # as a folder the user cannot write (root could: chmod proves nothing)
        if folder in where.parents:
            raise PermissionError(13, "Permission denied", str(where))
        export(net, info, where)

    monkeypatch.setattr(magms.inference.graphs, "export_graphs", read_only_bundle)
    where, exported = cached_graphs(info, folder, lambda: net)
    assert exported and where == tmp_path / "home-cache" / "magms" / "engines" / info.weights_sha256
    assert not (folder / ".engines").exists()
    assert cached_graphs(info, folder, _unused) == (where, False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setattr(magms.inference.graphs, "export_graphs", lambda *a: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(ConfigError, match=f"set {CACHE_ENV} to a writable folder"):
        cached_graphs(info, folder, lambda: net)


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason=f"onnx is not installed ({FAST_EXTRA})")
def test_exported_graphs_are_onnx_and_json_never_pickles(bundle, tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    net, info = load_bundle(bundle)
    folder, _ = cached_graphs(info, bundle, lambda: net)
    names = [f"encoder-{slot}.onnx" for slot in info.slots] + ["decoder.onnx", GRAPHS_RECORD]
    assert _files(folder) == sorted(names)
    record = json.loads((folder / GRAPHS_RECORD).read_text(encoding="utf-8"))
    assert sorted(record["files"]) == sorted(names[:-1])
    for name in names[:-1]:
        data = (folder / name).read_bytes()
        # pickles start with the PROTO opcode (0x80), torch.save files are zip archives (PK)
        assert not data.startswith((b"\x80", b"PK")), name
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
        assert not [n for n in model.graph.node if n.domain not in ("", "ai.onnx")], name  # standard operators only


# --------------------------------------------------------------------------------------------
# choosing the engine, and what is said when it cannot run


def test_missing_package_says_what_to_install(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # an import of it now fails, as when not installed
    with pytest.raises(ConfigError, match=r"--engine openvino needs the optional package openvino.*magms-slicer\[fast\]"):
        resolve_engine("openvino", CPU)
    with pytest.raises(ConfigError, match=r"magms-slicer\[fast\]"):
        Segmenter(bundle, device="cpu", engine="openvino")
    engine, note = resolve_engine("auto", CPU)
    assert engine == "eager" and "openvino not installed" in note and FAST_EXTRA in note
    monkeypatch.setitem(sys.modules, "onnx", None)  # the export needs it, whichever engine runs
    with pytest.raises(ConfigError, match=r"--engine onnxruntime needs the optional package onnx,.*magms-slicer\[fast\]"):
        resolve_engine("onnxruntime", CPU)


def test_auto_on_cuda_is_eager_and_exported_engines_refuse_cuda():
    cuda = "cuda:0"  # only a name: nothing runs on it
    assert resolve_engine("auto", cuda) == ("eager", None)
    assert resolve_engine("eager", cuda) == ("eager", None)
    with pytest.raises(ConfigError, match="runs on the CPU"):
        resolve_engine("onnxruntime", cuda)
    with pytest.raises(ConfigError, match="expected one of"):
        resolve_engine("tensorrt", CPU)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None,
                    reason=f"openvino or onnx is not installed ({FAST_EXTRA})")
def test_auto_picks_openvino_on_the_cpu_and_says_so(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    segmenter = Segmenter(bundle, device="cpu", engine="auto")
    assert segmenter.predictor.engine == "openvino fp32"
    assert segmenter.notes[0] == "engine auto: openvino fp32 (--engine eager --precision fp32 for the reference)"
    ran = Segmenter(bundle, device="cpu", engine="auto", precision="auto").predictor.engine
    assert ran in ("openvino bf16", "openvino fp32", "openvino fp16")  # bf16 on CPUs with bf16 instructions
    with pytest.raises(ConfigError, match="precision 'int8'"):
        Segmenter(bundle, device="cpu", engine="openvino", precision="int8")


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None,
                    reason=f"openvino or onnx is not installed ({FAST_EXTRA})")
def test_auto_falls_back_to_eager_when_no_cache_can_be_written(bundle, tmp_path, monkeypatch):
    import magms.inference.graphs

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(magms.inference.graphs, "export_graphs", lambda *a: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    segmenter = Segmenter(bundle, device="cpu", engine="auto")
    assert segmenter.predictor.engine == "eager"
    assert "engine auto: eager (exporting the graphs for openvino failed" in segmenter.notes[0]
    with pytest.raises(ConfigError, match="cannot write the exported graphs"):
        Segmenter(bundle, device="cpu", engine="openvino")


@pytest.mark.parametrize("engine", EXPORTED)
def test_unetr_graphs_equal_eager(engine, tmp_path, monkeypatch):
    from conftest import tiny_config
    from magms.config import PreprocessConfig
    from magms.labels import get_scheme

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    torch.manual_seed(0)
    config = tiny_config("unetr")
    save_bundle(tmp_path / "unetr", build_network(config), config, get_scheme("brats2021"),
                PreprocessConfig(spacing=None, patch_size=(32, 32, 32), overlap=0.25))
    net, info = load_bundle(tmp_path / "unetr")
    predictor, _ = make_predictor(open_model(tmp_path / "unetr"), CPU, engine)
    x = torch.randn(2, 4, 32, 32, 32)
    with torch.inference_mode():
        for present in (("flair",), ("t1", "t2"), ("flair", "t1", "t1c", "t2")):
            expected = torch.softmax(net(x, present=list(present)), dim=1).numpy()
            assert float(np.abs(_softmax(predictor(x.numpy(), present)) - expected).max()) < 1e-3


def test_cli_takes_engine_and_precision_and_refuses_a_missing_package(bundle, tmp_path, monkeypatch, capsys):
    import SimpleITK as sitk

    from magms.cli import main

    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 10, (20, 20, 20)).astype(np.float32))
    sitk.WriteImage(image, str(tmp_path / "flair.nii.gz"))
    args = ["segment", "--model", str(bundle), "--input", f"flair={tmp_path / 'flair.nii.gz'}", "--output", str(tmp_path / "o.nii.gz"),
            "--progress", "none", "--device", "cpu"]
    assert main([*args, "--engine", "eager", "--precision", "fp32"]) == 0
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main([*args, "--engine", "onnxruntime", "--overwrite"]) == 2
    assert "magms-slicer[fast]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--engine", "tensorrt"])


# --------------------------------------------------------------------------------------------
# start-up: the CLI reads its options without torch


def test_import_of_the_cli_pulls_in_no_torch_monai_or_engine():
    heavy = ("torch", "monai", "SimpleITK", "openvino", "onnxruntime", "onnx")
    assert modules_imported("import magms.cli; magms.cli.build_parser()", heavy) == []


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None,
                    reason=f"openvino or onnx is not installed ({FAST_EXTRA})")
def test_a_run_on_cached_graphs_imports_neither_torch_nor_monai(bundle, tmp_path):
    """The start-up share of magms segment: torch and MONAI took 5 s to import before any work."""
    import SimpleITK as sitk

    # a skull-stripped head stored as integers, as scanners write MRI (a float file's NaN check reads it with nibabel)
    z, y, x = np.indices((24, 26, 28))
    head = ((z - 12) ** 2 / 100 + (y - 13) ** 2 / 120 + (x - 14) ** 2 / 140) < 1
    values = head * (300 + 40 * np.sin(x / 3.0) + np.random.default_rng(0).normal(0, 5, head.shape))
    sitk.WriteImage(sitk.GetImageFromArray(values.astype(np.int16)), str(tmp_path / "flair.nii.gz"))
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache")}
    args = [sys.executable, "-m", "magms", "segment", "--model", str(bundle), "--input", f"flair={tmp_path / 'flair.nii.gz'}",
            "--output", str(tmp_path / "o.nii.gz"), "--progress", "none", "--device", "auto", "--engine", "openvino", "--overwrite"]
    first = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env)  # exports: torch is needed once
    assert first.returncode == 0 and "exported the network's graphs" in first.stderr, first.stderr
    code = ("import runpy, sys; sys.argv = " + repr(["magms", *args[3:]]) + "\n"
            "try:\n    runpy.run_module('magms', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code")
    assert modules_imported(code, ("torch", "monai", "scipy", "nibabel"), env) == []


def test_fast_requirements_match_the_fast_extra_and_are_in_the_test_extra():
    import tomllib

    from magms.devices import FAST_REQUIREMENTS, installed_versions

    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert [r.spec for r in FAST_REQUIREMENTS] == extras["fast"]
    assert set(extras["fast"]) <= set(extras["test"])
    assert {"openvino", "onnxruntime", "onnx"} <= set(installed_versions())  # magms devices reports them
    assert FAST_EXTRA == "pip install 'magms-slicer[fast]'"


def test_precision_fp32_is_float32_on_every_engine_eager_on_cuda_included(monkeypatch, tmp_path):
    """One concept, one flag: --precision fp32 turns off the eager engine's autocast as --no-amp does; the ran line
    says what ran (eager under autocast is 'amp', not plain 'eager')."""
    import magms.inference

    made = []

    class Recording:
        def __init__(self, model, device="auto", sw_batch_size=2, amp=True, **kwargs):
            made.append(amp)
            raise SystemExit(0)

    monkeypatch.setattr(magms.inference, "Segmenter", Recording)
    from magms.cli import _segmenter
    from magms.commands import SegmentOptions

    for precision, no_amp, expected in (("auto", False, True), ("fp32", False, False), ("auto", True, False)):
        options = SegmentOptions(precision=precision, amp=not no_amp, device="cuda")
        with pytest.raises(SystemExit):
            _segmenter(options, open_model(random_unet_bundle(tmp_path / f"b{len(made)}")))
        assert made[-1] is expected, (precision, no_amp)
