"""Shared test helpers: the real-data folder and tiny network configs that run in milliseconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def modules_imported(code: str, modules: tuple[str, ...], env: dict[str, str] | None = None) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported once ``code`` ran (in the repository);
    ``code`` must succeed."""
    import ast
    import subprocess

    probe = f"{code}\nimport sys\nprint([m for m in {modules!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])
# As in Slicer, where qt-scripted-modules (MAGMSCommonLib) and each module's folder are on sys.path.
SLICER_SIDE = ("MAGMSCommon", "MAGMSSegmenter", "MAGMSTraining")
for _folder in SLICER_SIDE:
    if str(REPO / _folder) not in sys.path:
        sys.path.insert(0, str(REPO / _folder))
DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"no real data in {DATA} (set MAGMS_TEST_DATA)")

SLOTS4 = ("flair", "t1", "t1c", "t2")


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory):
    """Graphs exported by the tests (``magms segment`` runs the fastest installed engine) go to a
    temporary folder, never beside the repository's built-in model; subprocesses inherit it."""
    before = os.environ.get("MAGMS_ENGINE_CACHE")
    os.environ["MAGMS_ENGINE_CACHE"] = str(tmp_path_factory.mktemp("engines"))
    yield Path(os.environ["MAGMS_ENGINE_CACHE"])
    if before is None:
        os.environ.pop("MAGMS_ENGINE_CACHE", None)
    else:
        os.environ["MAGMS_ENGINE_CACHE"] = before


def tiny_config(backbone: str, slots=SLOTS4, out_channels: int = 4, **overrides):
    """A network small enough for exhaustive CPU tests, same code paths as the full size."""
    from magms.config import NetConfig

    if backbone == "unetr":
        kw = dict(img_size=(32, 32, 32), feature_size=4, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=4, skip_layers=(0, 1, 2))
    else:
        kw = dict(img_size=(16, 16, 16), channels=(4, 8, 16))
    kw.update(overrides)
    return NetConfig(slots=tuple(slots), out_channels=out_channels, backbone=backbone, **kw)


def make_bundle(folder: Path, scheme: str = "brats2021", backbone: str = "unet", slots=SLOTS4, seed: int | None = 0,
                preprocessing=None, network: dict | None = None, **save) -> Path:
    """A tiny bundle with random weights (seeded unless ``seed`` is None) written to ``folder``, for tests: the
    one place the test suite builds a bundle it does not test the writing of.

    Args:
        scheme: the label scheme's key; the network gets its number of classes.
        backbone, slots, network: :func:`tiny_config` and its overrides.
        preprocessing: a :class:`~magms.config.PreprocessConfig` (default: the network's window, no resampling).
        save: further :func:`magms.bundle.save_bundle` arguments (``training``, ``postprocessing``...).
    """
    import torch

    from magms.bundle import save_bundle
    from magms.config import PreprocessConfig
    from magms.labels import get_scheme
    from magms.networks import build_network

    if seed is not None:
        torch.manual_seed(seed)
    labels = get_scheme(scheme)
    config = tiny_config(backbone, slots=slots, out_channels=labels.num_classes, **(network or {}))
    preprocessing = preprocessing or PreprocessConfig(spacing=None, patch_size=config.img_size)
    save_bundle(folder, build_network(config), config, labels, preprocessing, **save)
    return folder


def random_unet_bundle(folder: Path, scheme: str = "brats2023") -> Path:
    """A 4-slot light U-Net bundle with seeded random weights on a 3 mm grid, 32^3 windows: every
    inference code path in well under a second."""
    from magms.config import PreprocessConfig

    return make_bundle(folder, scheme, network={"img_size": (32, 32, 32)}, training={"data": "none: random weights for tests"},
                       preprocessing=PreprocessConfig(spacing=(3.0, 3.0, 3.0), patch_size=(32, 32, 32), overlap=0.25))


def click_bundle(folder: Path, seed: int = 0) -> Path:
    """The built-in model's weights with a click guidance of seeded random weights, written to ``folder``: every click
    changes the labels (what tests of the refinement path need; the trained guidance is benchmarked, not tested)."""
    import dataclasses

    import torch

    from magms.bundle import load_bundle, save_bundle
    from magms.networks import build_network

    source, info = load_bundle(REPO / "Resources" / "Models" / "brats-glioma-4seq")
    config = dataclasses.replace(info.network, click_regions=len(info.scheme.regions))
    torch.manual_seed(seed)
    net = build_network(config)
    net.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("guidance.")}, strict=False)
    for projection in net.guidance.projections:
        torch.nn.init.normal_(projection.weight, std=0.05)
    save_bundle(folder, net, config, info.scheme, info.preprocessing, postprocessing=info.postprocessing)
    return folder


@pytest.fixture
def builtin_models_folder(tmp_path, monkeypatch):
    """A models folder as Resources/Models: a tiny real bundle ``tiny-4seq`` and the index naming it
    (sha256 of its weights) as the default; ``$MAGMS_BUILTIN_MODELS`` points at it."""
    import json

    from magms.bundle import WEIGHTS_FILE, file_sha256
    from magms.config import PreprocessConfig

    folder = tmp_path / "Models"
    make_bundle(folder / "tiny-4seq", "brats2021", seed=None,
                preprocessing=PreprocessConfig(spacing=None, patch_size=(16, 16, 16), overlap=0.0))
    entry = {"name": "tiny-4seq", "version": "1", "folder": "tiny-4seq",
             "sha256": file_sha256(folder / "tiny-4seq" / WEIGHTS_FILE), "description": "a tiny test model"}
    (folder / "models.json").write_text(json.dumps({"default": "tiny-4seq", "models": [entry]}))
    monkeypatch.setenv("MAGMS_BUILTIN_MODELS", str(folder))
    return folder


def scene_volume(scene, name: str, array: np.ndarray, origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0)):
    """A NEW scalar volume node in ``scene`` holding ``array`` ((z, y, x) order, as float32): the one place the
    Slicer-side tests make a volume from an array."""
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.asarray(array, np.float32).ravel(), deep=True, array_type=vtk.VTK_FLOAT))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetAndObserveImageData(image)
    node.SetOrigin(*origin)
    node.SetSpacing(*spacing)
    return node


def load_scene_volume(scene, path: Path, name: str):
    """A NEW scalar volume node in ``scene`` read from ``path`` by Slicer's own storage node."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node), path
    return node
