"""The built-in model: the index, the sha256 check, the CLI default, and the repository's own model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from magms.builtin import INDEX_FILE, MODELS_ENV, builtin_model, builtin_models, default_model_name, models_folder
from magms.bundle import METADATA_FILE, WEIGHTS_FILE
from magms.cli import main
from magms.errors import BundleError, ConfigError

REPO_MODELS = REPO / "Resources" / "Models"


def _head(seed: int, shape=(20, 24, 28)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    inside = ((z - 10) ** 2 / 64 + (y - 12) ** 2 / 90 + (x - 14) ** 2 / 130) < 1
    return (inside * (100 + 40 * np.sin(x / 3.0) + rng.normal(0, 5, shape))).astype(np.float32)


@pytest.fixture
def flair(tmp_path):
    path = tmp_path / "case" / "flair.nii.gz"
    path.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(_head(0)), str(path))
    return path


def _index(folder) -> dict:
    return json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))


def _write_index(folder, **changes) -> None:
    data = _index(folder)
    data["models"][0].update(changes)
    (folder / INDEX_FILE).write_text(json.dumps(data))


# --- magms.builtin -------------------------------------------------------------------------------


def test_the_models_folder_is_the_variable_else_resources_models_beside_the_package(builtin_models_folder, monkeypatch):
    assert models_folder() == builtin_models_folder
    monkeypatch.delenv(MODELS_ENV)
    assert models_folder() == REPO_MODELS  # the repository layout (and an editable install)


def test_the_default_is_listed_first_and_its_verified_folder_returned(builtin_models_folder):
    assert [m.name for m in builtin_models()] == ["tiny-4seq"] and default_model_name() == "tiny-4seq"
    assert builtin_model() == builtin_model("tiny-4seq") == builtin_models_folder / "tiny-4seq"
    with pytest.raises(ConfigError, match="no built-in model 'other'; there are: tiny-4seq"):
        builtin_model("other")


def test_weights_that_differ_from_the_index_are_refused_naming_the_file(builtin_models_folder):
    _write_index(builtin_models_folder, sha256="1" * 64)
    weights = builtin_models_folder / "tiny-4seq" / WEIGHTS_FILE
    with pytest.raises(BundleError, match="differs from 111111111111... in .*models.json: the weights are damaged") as err:
        builtin_model()
    assert str(err.value).startswith(f"{weights}: sha256 ")


@pytest.mark.parametrize("gone", [WEIGHTS_FILE, METADATA_FILE, ""])
def test_missing_files_are_named_with_what_to_do(builtin_models_folder, gone):
    missing = builtin_models_folder / "tiny-4seq" / gone
    if gone:
        missing.unlink()
    else:
        import shutil

        shutil.rmtree(missing)
    with pytest.raises(BundleError) as err:
        builtin_model()
    text = str(err.value)
    assert text.startswith(f"{missing}: missing, so the built-in model 'tiny-4seq' cannot be used")
    assert "--model" in text and MODELS_ENV in text and "pip install -e ." in text


def test_a_bad_index_is_named(builtin_models_folder, tmp_path, monkeypatch):
    data = _index(builtin_models_folder)
    (builtin_models_folder / INDEX_FILE).write_text(json.dumps({**data, "default": "gone"}))
    with pytest.raises(BundleError, match=r"models.json: the default 'gone' is not one of its models \(tiny-4seq\)"):
        builtin_models()
    _write_index(builtin_models_folder, sha256="abc")
    with pytest.raises(BundleError, match="'tiny-4seq': sha256 must be 64 hex digits"):
        builtin_models()
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(BundleError, match=f"nowhere/{INDEX_FILE}: no index of built-in models here; give a bundle folder"):
        builtin_model()


# --- the CLI -------------------------------------------------------------------------------------


def test_segment_without_model_uses_the_default_builtin_model(builtin_models_folder, flair, tmp_path, capsys):
    out = tmp_path / "default.nii.gz"
    assert main(["segment", "--input", f"flair={flair}", "--output", str(out), "--device", "cpu", "--progress", "none"]) == 0
    captured = capsys.readouterr()
    assert f"note: no --model: using the built-in model tiny-4seq ({builtin_models_folder / 'tiny-4seq'})" in captured.err
    assert captured.out.startswith(f"{out}\tflair\t")
    explicit = tmp_path / "explicit.nii.gz"
    argv = ["segment", "--model", str(builtin_models_folder / "tiny-4seq"), "--input", f"flair={flair}", "--output", str(explicit),
            "--device", "cpu", "--progress", "none"]
    assert main(argv) == 0
    assert "built-in" not in capsys.readouterr().err
    same = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (out, explicit)]
    assert np.array_equal(*same)


def test_segment_with_damaged_builtin_weights_is_a_one_line_error_and_writes_nothing(builtin_models_folder, flair, tmp_path, capsys):
    _write_index(builtin_models_folder, sha256="2" * 64)
    out = tmp_path / "never.nii.gz"
    assert main(["segment", "--input", f"flair={flair}", "--output", str(out), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{WEIGHTS_FILE}: sha256" in err and "Traceback" not in err
    assert not out.exists()


def test_evaluate_without_model_uses_the_default_builtin_model(builtin_models_folder, tmp_path, capsys):
    case = tmp_path / "cases" / "c1"
    case.mkdir(parents=True)
    label = np.zeros((20, 24, 28), np.uint8)
    label[7:13, 9:15, 10:18] = 2
    sitk.WriteImage(sitk.GetImageFromArray(_head(1)), str(case / "c1_flair.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(label), str(case / "c1_seg.nii.gz"))
    argv = ["evaluate", "--data", str(tmp_path / "cases"), "--out", str(tmp_path / "report"), "--device", "cpu", "--progress", "none"]
    assert main(argv) == 0
    assert "using the built-in model tiny-4seq" in capsys.readouterr().err
    assert (tmp_path / "report" / "metrics.csv").is_file()


def test_the_help_names_the_default_of_the_repository_index():
    from magms.commands import BUILTIN_DEFAULT_HELP, EvaluateOptions, SegmentOptions

    assert default_model_name(REPO_MODELS) in BUILTIN_DEFAULT_HELP
    for options in (SegmentOptions, EvaluateOptions):
        assert BUILTIN_DEFAULT_HELP in options.spec("model").help and not options.spec("model").required


# --- the repository's own index and model --------------------------------------------------------


def test_the_repository_index_reads_and_its_default_has_a_bundle_folder():
    models = builtin_models(REPO_MODELS)
    default = default_model_name(REPO_MODELS)
    assert models[0].name == default == "brats-glioma-4seq"
    for model in models:
        assert (REPO_MODELS / model.folder).is_dir() and model.description and model.version


REAL_WEIGHTS = REPO_MODELS / "brats-glioma-4seq" / WEIGHTS_FILE


@pytest.mark.skipif(not REAL_WEIGHTS.is_file(), reason=f"{REAL_WEIGHTS.relative_to(REPO)} is not there yet (being trained)")
def test_the_real_builtin_model_matches_its_index_and_loads(monkeypatch):
    from magms.bundle import load_bundle

    monkeypatch.delenv(MODELS_ENV, raising=False)
    folder = builtin_model()  # sha256 of the weights = the index's
    model, info = load_bundle(folder)  # sha256 of the weights = magms.json's; strict load
    assert folder == REPO_MODELS / "brats-glioma-4seq"
    assert info.slots == ("flair", "t1", "t1c", "t2") and info.network.backbone == "unet"
    assert not model.training


class _Reads:
    """Counts the reads of ``magms.json`` and the passes of Python over a weights file (each sha256 reads it
    whole; safetensors maps it from Rust, unseen here) while a command runs."""

    def __init__(self, monkeypatch) -> None:
        import builtins
        import pathlib

        self.metadata, self.hashed = 0, 0
        read_text, open_ = pathlib.Path.read_text, builtins.open

        def counted_read_text(path, *args, **kwargs):
            self.metadata += path.name == METADATA_FILE
            return read_text(path, *args, **kwargs)

        def counted_open(file, *args, **kwargs):
            self.hashed += isinstance(file, (str, pathlib.Path)) and pathlib.Path(file).name == WEIGHTS_FILE
            return open_(file, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "read_text", counted_read_text)
        monkeypatch.setattr(builtins, "open", counted_open)


@pytest.mark.parametrize("engine", ["eager", "openvino"])
@pytest.mark.parametrize("given", [True, False])
def test_one_segment_reads_magms_json_once_and_hashes_the_weights_once(builtin_models_folder, flair, tmp_path, monkeypatch,
                                                                       engine, given):
    """The bundle is opened once at the edge (magms.bundle.OpenedModel) and passed down: before, one magms segment
    parsed magms.json four times and hashed the weights two or three times."""
    if engine == "openvino":
        pytest.importorskip("openvino")
        monkeypatch.setenv("MAGMS_ENGINE_CACHE", str(tmp_path / "graphs"))
        assert main(["segment", "--model", str(builtin_models_folder / "tiny-4seq"), "--input", f"flair={flair}", "--output",
                     str(tmp_path / "warm.nii.gz"), "--engine", engine, "--progress", "none"]) == 0  # the graphs exported once
    reads = _Reads(monkeypatch)
    model = ["--model", str(builtin_models_folder / "tiny-4seq")] if given else []
    out = tmp_path / "out.nii.gz"
    assert main(["segment", *model, "--input", f"flair={flair}", "--output", str(out), "--engine", engine, "--progress", "none"]) == 0
    assert out.is_file()
    assert (reads.metadata, reads.hashed) == (1, 1)
