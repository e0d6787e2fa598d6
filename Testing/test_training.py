"""``magms train``: checks, bundle, exact resume, clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from magms.bundle import load_bundle
from magms.cli import main
from magms.config import PreprocessConfig
from magms.data.cases import Case
from magms.training import TrainConfig, train


def _write(path: Path, array, origin=(0.0, 0.0, 0.0)) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture
def data(tmp_path):
    """Four tiny BraTS-2013-labelled cases with FLAIR and T1c; case c3 lacks its T1c."""
    rng = np.random.default_rng(0)
    cases = []
    for k in range(4):
        folder = tmp_path / "data" / f"c{k}"
        folder.mkdir(parents=True)
        label = np.zeros((20, 22, 24), np.uint8)
        label[5:12, 6:14, 7:15] = 2
        label[7:10, 8:11, 9:12] = 4
        images = {"flair": _write(folder / "Flair.nii.gz", (label + rng.normal(5, 1, label.shape)).astype(np.float32))}
        if k != 3:
            images["t1c"] = _write(folder / "T1c.nii.gz", (2 * label + rng.normal(5, 1, label.shape)).astype(np.float32))
        cases.append(Case(f"c{k}", images, _write(folder / "OTMultiClass.nii.gz", label)))
    return tmp_path / "data", cases


KW = dict(
    labels="brats2013", slots=("flair", "t1c"), net_overrides={"channels": (4, 8, 16)},
    preprocessing=PreprocessConfig(spacing=None, patch_size=(16, 16, 16), overlap=0.25), device="cpu",
)


def test_two_epoch_cli_run_writes_a_bundle_that_loads(data, tmp_path, capsys):
    folder, _ = data
    out = tmp_path / "model"
    argv = ["train", "--data", str(folder), "--labels", "brats2013", "--out", str(out), "--epochs", "2", "--patch", "16",
            "--spacing", "0", "--channels", "4,8,16", "--val-fraction", "0.25", "--device", "cpu", "--progress", "none"]
    assert main(argv) == 0
    net, info = load_bundle(out)
    assert info.slots == ("flair", "t1c") and info.labels.key == "brats2013"
    assert info.training["epochs_done"] == 2 and len(info.training["validation_cases"]) == 1
    # provenance enough to reproduce the run: the command, the code, when, on what
    assert info.training["options"]["out"] == str(out) and info.training["options"]["epochs"] == 2
    assert info.training["started_utc"] <= info.training["finished_utc"]
    assert info.training["hardware"]["device"] == "cpu" and info.training["hardware"]["cpu_count"] >= 1
    assert "commit" in info.training and info.training["versions"]["torch"] == torch.__version__
    assert set(info.validation) <= {"flair", "t1c", "flair+t1c"} and info.validation
    rows = (out / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,step,lr,loss")
    assert json.loads((out / "train_options.json").read_text(encoding="utf-8")) == info.training["options"]
    # the components removed: the size its validation scored best (the run's own cases, not a guess)
    from magms.training.postprocessing import COMPONENT_SIZES_ML, chosen_postprocessing

    by_size = {float(k): v for k, v in info.training["lesion_dice_by_min_component_ml"].items()}
    assert sorted(by_size) == list(COMPONENT_SIZES_ML)
    assert info.postprocessing == chosen_postprocessing(by_size, info.scheme)
    state = json.loads((out / "checkpoint" / "state.json").read_text(encoding="utf-8"))  # kept for a later resume
    assert state["lesion_dice_by_min_component_ml"] == info.training["lesion_dice_by_min_component_ml"] and state["last_validation"]
    assert main(argv) == 2  # an existing run is never overwritten
    assert "holds a run already" in capsys.readouterr().err


@pytest.mark.parametrize("policy", ["paper", "random_subset"])
def test_resume_mid_epoch_ends_with_identical_weights(data, tmp_path, policy):
    _, cases = data
    # no time limit: with one, the learning rate follows the clock, which no two runs share
    config = TrainConfig(epochs=2, batch_size=1, samples_per_case=2, val_fraction=0.25, policy=policy, max_minutes=None)
    train(cases, tmp_path / "full", config=config, **KW)
    assert train(cases, tmp_path / "split", config=config, stop=lambda step: step == 4, **KW) is None  # epoch 2, step 1 of 3
    state = json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    train(cases, tmp_path / "split", config=config, resume=True, **KW)
    full, _ = load_bundle(tmp_path / "full")
    split, _ = load_bundle(tmp_path / "split")
    for (name, a), b in zip(full.state_dict().items(), split.state_dict().values()):
        assert torch.equal(a, b), name


def test_all_bad_cases_reported_at_once(data, tmp_path, capsys):
    folder, _ = data
    _write(folder / "c0" / "OTMultiClass.nii.gz", np.full((20, 22, 24), 7, np.uint8))                 # value outside the scheme
    _write(folder / "c1" / "T1c.nii.gz", np.zeros((20, 22, 24), np.float32))                          # constant
    _write(folder / "c2" / "T1c.nii.gz", np.ones((20, 22, 24), np.float32) * np.arange(24), origin=(900.0, 0, 0))  # elsewhere
    (folder / "c3" / "OTMultiClass.nii.gz").unlink()                                                 # no label
    assert main(["train", "--data", str(folder), "--labels", "brats2013", "--out", str(tmp_path / "m"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s) in the data" in err
    assert "c0: OTMultiClass.nii.gz: label values [7] are not in scheme 'brats2013'" in err
    assert "c1: t1c: T1c.nii.gz: constant image" in err
    assert "c2: t1c: T1c.nii.gz covers only 0% of the space" in err
    assert "c3: no label file" in err
    assert not (tmp_path / "m").exists()


def test_sigterm_saves_a_loadable_checkpoint_and_exits_cleanly(data, tmp_path):
    folder, _ = data
    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "magms", "train", "--data", str(folder), "--labels", "brats2013", "--out", str(out),
           "--epochs", "500", "--patch", "16", "--spacing", "0", "--channels", "4,8,16", "--val-fraction", "0",
           "--device", "cpu", "--progress", "lines"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("progress 3/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, rest
    assert "continue with: magms train" in rest
    state = json.loads((out / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["step"] >= 3
    from safetensors.torch import load_file

    assert load_file(str(out / "checkpoint" / "model.safetensors"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "partial files left behind"
    assert not (out / "magms.json").exists()
    # another sitting: --out and --resume are enough, the run's own options continue it (a new flag wins)
    assert main(["train", "--out", str(out), "--resume", "--epochs", str(state["epoch"] + 1)]) == 0
    options = load_bundle(out)[1].training["options"]
    assert (options["patch"], options["channels"], options["val_fraction"]) == ([16], [4, 8, 16], 0.0)
    assert (options["epochs"], options["device"], options["progress"], options["resume"]) == (state["epoch"] + 1, "auto", "bar", True)
    assert json.loads((out / "train_options.json").read_text(encoding="utf-8"))["epochs"] == state["epoch"] + 1  # the last sitting's


def test_the_record_holds_absolute_data_and_a_resume_does_not_need_the_starting_bundle(data, tmp_path, monkeypatch):
    folder, cases = data
    monkeypatch.chdir(folder.parent)
    config = TrainConfig(epochs=2, batch_size=1, samples_per_case=1, val_fraction=0.25, max_minutes=None)
    train(cases, tmp_path / "start", config=config, **KW)
    run = tmp_path / "run"
    options = {"data": folder.name, "init": "start", "out": str(run)}
    assert train(cases, run, config=config, init=tmp_path / "start", stop=lambda step: step == 2, options=options, **KW) is None
    recorded = json.loads((run / "train_options.json").read_text(encoding="utf-8"))
    assert (recorded["data"], recorded["init"]) == (str(folder), str(tmp_path / "start"))
    (tmp_path / "start" / "model.safetensors").unlink()  # moved away after the start: the checkpoint has the weights
    assert train(cases, run, config=config, init=tmp_path / "start", resume=True, **KW) == run


def test_resume_starts_from_the_options_the_run_started_with(tmp_path):
    """Recorded options under the config file under the flags; this sitting's device and progress are not taken."""
    from magms.cli import build_parser
    from magms.commands import TrainOptions
    from magms.errors import ConfigError
    from magms.options import from_command_line
    from magms.protocol import RUN_OPTIONS_FILE

    out = tmp_path / "run"
    out.mkdir()
    started = TrainOptions.from_dict({"data": "d", "labels": "brats2013", "out": str(out), "epochs": 50, "lr": 0.002,
                                      "device": "cuda", "progress": "lines"})
    started.save(out / RUN_OPTIONS_FILE)

    def parse(*flags: str) -> TrainOptions:
        return from_command_line(TrainOptions, build_parser().parse_args(["train", *flags]))

    resumed = parse("--out", str(out), "--resume", "--lr", "0.0005")
    assert (str(resumed.data), resumed.labels, resumed.epochs, resumed.lr) == ("d", "brats2013", 50, 0.0005)
    assert (resumed.device, resumed.progress, resumed.resume) == ("auto", "bar", True)
    config = tmp_path / "more.json"
    config.write_text(json.dumps({"out": str(out), "max_minutes": 30}), encoding="utf-8")
    assert parse("--config", str(config), "--resume").max_minutes == 30 and parse("--config", str(config), "--resume").epochs == 50
    with pytest.raises(ConfigError, match="--data, --labels are required"):  # a new run: no record is read
        parse("--config", str(config))
    (out / RUN_OPTIONS_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match=RUN_OPTIONS_FILE):
        parse("--out", str(out), "--resume")


def test_two_process_gloo_torchrun_writes_exactly_one_bundle(data, tmp_path):
    folder, _ = data
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "magms",
           "train", "--data", str(folder), "--labels", "brats2013", "--out", str(out), "--epochs", "2", "--patch", "16",
           "--spacing", "0", "--channels", "4,8,16", "--val-fraction", "0", "--device", "cpu", "--progress", "none"]
    # one thread per rank: two ranks with default threads on two cores slow each other many times over
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed training: 2 ranks (gloo)" in proc.stderr
    assert proc.stdout.strip().splitlines() == [str(out)]  # only rank 0 reports and writes
    net, info = load_bundle(out)
    assert info.training["steps"] == 2  # 4 cases over 2 ranks: 2 per rank, one step of 2 cases per epoch
    assert len((out / "metrics.csv").read_text(encoding="utf-8").splitlines()) == 1 + 2
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "magms.json", "metrics.csv", "model.safetensors", "train_options.json"]


def test_cases_of_different_sizes_with_air_train_in_batches(tmp_path):
    """Each case is cropped to its own head: a batch of two cases holds crops of different sizes,
    of which only the equal-size patches may reach the batch."""
    rng = np.random.default_rng(1)
    cases = []
    for k, (shape, pad) in enumerate((((20, 22, 24), 2), ((24, 27, 30), 6))):
        folder = tmp_path / f"c{k}"
        folder.mkdir()
        label = np.zeros(shape, np.uint8)
        label[5:12, 6:14, 7:15] = 2
        head = np.pad(label + rng.normal(5, 1, label.shape), pad).astype(np.float32)  # zero air around the head
        images = {"flair": _write(folder / "Flair.nii.gz", head)}
        cases.append(Case(f"c{k}", images, _write(folder / "OTMultiClass.nii.gz", np.pad(label, pad))))
    config = TrainConfig(epochs=1, batch_size=2, samples_per_case=2, val_fraction=0.0)
    assert train(cases, tmp_path / "model", config=config, **{**KW, "slots": ("flair",)}) is not None


def _metrics(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("share", [0.15, 1.0])
def test_validation_keeps_to_its_time_budget_when_every_epoch_is_short(data, tmp_path, share):
    """With one step per epoch, validating every epoch took most of a run (15 s of every 19 on
    real data). The budget skips due validations while their share of the time is above it."""
    _, cases = data
    out = tmp_path / "m"
    config = TrainConfig(epochs=24, batch_size=4, samples_per_case=1, val_fraction=0.25, val_share=share)
    train(cases, out, config=config, **KW)
    rows = _metrics(out / "metrics.csv")
    validated = [i for i, r in enumerate(rows) if r.get("val_dice:flair:wt")]
    assert validated[0] == 0 and validated[-1] == len(rows) - 1  # the first and the last always
    if share == 1.0:
        assert len(validated) == len(rows)  # the old behaviour: every epoch
        return
    assert len(validated) < len(rows) / 2
    for i in validated[1:-1]:  # each one started within the budget (the decision came before rows[i]'s seconds)
        before = float(rows[i - 1]["val_seconds"])
        assert before <= share * float(rows[i]["seconds"]) + 0.2  # seconds are rounded to 0.1 in the file
    final = rows[-1]
    one_validation = float(rows[0]["val_seconds"])
    assert float(final["val_seconds"]) <= share * float(final["seconds"]) + 2 * one_validation + 0.2


def test_the_progress_total_follows_the_time_limit(data, tmp_path):
    from magms.cli import expected_steps

    _, cases = data
    seen = []
    config = TrainConfig(epochs=10_000, batch_size=4, samples_per_case=1, val_fraction=0.25, max_minutes=0.1)
    train(cases, tmp_path / "m", config=config, progress=seen.append, **KW)
    totals = [expected_steps(info) for info in seen]
    assert seen[-1]["total_steps"] == 10_000 * 1
    done = seen[-1]["step"]
    assert totals[-1] < 10_000 and 0.5 * done <= totals[-1] <= 2 * done  # the limit's steps, not the epochs'
    assert expected_steps({**seen[-1], "max_seconds": None}) == 10_000


def test_by_default_the_clock_ends_a_run_and_zero_minutes_is_no_limit():
    """An hour and 1000 epochs at most: on a few cases the old 50 epochs ended long before any time limit."""
    from magms.cli import build_parser
    from magms.commands import TrainOptions
    from magms.options import from_command_line

    assert (TrainConfig().max_minutes, TrainConfig().epochs) == (60.0, 1000)
    assert TrainConfig(max_minutes=0).max_minutes is None and TrainConfig(max_minutes=None).max_minutes is None
    base = ["train", "--data", "d", "--labels", "brats2013", "--out", "o"]
    assert from_command_line(TrainOptions, build_parser().parse_args(base)).train_config().max_minutes == 60.0
    no_limit = from_command_line(TrainOptions, build_parser().parse_args([*base, "--max-minutes", "0"])).train_config()
    assert no_limit.max_minutes is None and TrainConfig.from_dict(no_limit.to_dict()) == no_limit


def test_metrics_columns_that_come_later_extend_the_header(tmp_path):
    from magms.training.metrics_log import append_metrics

    path = tmp_path / "metrics.csv"
    append_metrics(path, {"epoch": 1, "loss": 0.5})
    append_metrics(path, {"epoch": 2, "loss": 0.25, "val_dice:flair:wt": 0.75})
    append_metrics(path, {"epoch": 3, "loss": 0.125})
    assert path.read_text(encoding="utf-8").splitlines() == ["epoch,loss,val_dice:flair:wt", "1,0.5,", "2,0.25,0.75", "3,0.125,"]


def test_lr_schedules():
    from magms.training.step import lr_factor

    assert lr_factor(0, 1000) == pytest.approx(1 / 50)  # warm-up: 5 %, at most 50 steps
    assert lr_factor(500, 1000, schedule="constant") == 1.0 == lr_factor(999, 1000, 0.99, "constant")
    assert lr_factor(999, 1000) < 0.01 and lr_factor(100, 1000, time_fraction=0.999) < 0.01
    with pytest.raises(ValueError, match="schedule must be one of cosine, constant"):
        lr_factor(10, 100, schedule="linear")


def test_recipe_options_train_and_are_recorded(data, tmp_path):
    """--singles-per-step, --lr-schedule and --channels-last run end to end and land in the bundle's provenance."""
    folder, _ = data
    out = tmp_path / "model"
    argv = ["train", "--data", str(folder), "--labels", "brats2013", "--out", str(out), "--epochs", "1", "--patch", "16",
            "--spacing", "0", "--channels", "4,8,16", "--val-fraction", "0.25", "--device", "cpu", "--progress", "none",
            "--singles-per-step", "1", "--lr-schedule", "constant", "--channels-last", "--seg-loss", "regions"]
    assert main(argv) == 0
    net, info = load_bundle(out)
    options = info.training["options"]
    assert (options["singles_per_step"], options["lr_schedule"], options["channels_last"]) == (1, "constant", True)
    assert options["seg_loss"] == "regions" and info.training["config"]["seg_loss"] == "regions"
    header = (out / "metrics.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "feature_flair" in header and "feature_t1c" in header
    bad = ["train", "--data", str(folder), "--labels", "brats2013", "--out", str(tmp_path / "other"), "--singles-per-step", "-1",
           "--device", "cpu", "--progress", "none"]
    try:
        code = main(bad)
    except SystemExit as err:
        code = err.code
    assert code == 2 and not (tmp_path / "other").exists()


def test_region_loss_needs_a_scheme_with_regions():
    """The regions are the scheme's (BraTS 2021: WT, TC, ET as class indices); a scheme without any is refused by name."""
    from types import SimpleNamespace

    from magms.errors import ConfigError
    from magms.labels import get_scheme
    from magms.training.trainer import Trainer

    def loss(scheme: str, seg_loss: str = "regions"):
        return Trainer._segmentation_loss(SimpleNamespace(config=TrainConfig(seg_loss=seg_loss), scheme=get_scheme(scheme)))

    assert loss("brats2021").regions == ((1, 2, 3), (1, 3), (3,))
    assert loss("brats2021", "labels") is None
    with pytest.raises(ConfigError, match="label scheme 'brain_tissue' has no regions"):
        loss("brain_tissue")


def test_click_training_trains_the_guidance_alone_and_its_bundle_is_the_automatic_model_without_clicks(data, tmp_path):
    """--max-clicks: the --init model's weights come out unchanged, a click guidance beside them has learnt; without
    --init it is refused by name."""
    from magms.errors import ConfigError

    _, cases = data
    config = TrainConfig(epochs=1, batch_size=2, val_fraction=0.25, max_minutes=None)
    train(cases, tmp_path / "auto", config=config, **KW)
    clicked = TrainConfig(epochs=2, batch_size=2, val_fraction=0.25, max_minutes=None, max_clicks=2, lr=1e-2)
    train(cases, tmp_path / "clicks", config=clicked, init=tmp_path / "auto", **KW)
    auto, auto_info = load_bundle(tmp_path / "auto")
    guided, info = load_bundle(tmp_path / "clicks")
    assert info.network.click_regions == len(info.scheme.regions) == 3 and auto_info.network.click_regions == 0
    weights = guided.state_dict()
    for name, value in auto.state_dict().items():
        assert torch.equal(weights[name], value), name
    assert any(weights[f"guidance.projections.{i}.weight"].abs().sum() > 0 for i in range(3))  # zero at the start
    assert info.training["config"]["max_clicks"] == 2
    with pytest.raises(ConfigError, match="--init"):
        train(cases, tmp_path / "none", config=clicked, **KW)


def test_a_click_step_sends_gradient_to_the_guidance_only():
    from magms.config import NetConfig
    from magms.losses import RegionDiceCELoss
    from magms.networks import build_network
    from magms.training.step import ClickTrainStep

    torch.manual_seed(0)
    net = build_network(NetConfig(slots=("flair", "t1c"), out_channels=4, img_size=(16, 16, 16), channels=(4, 8, 16),
                                  click_regions=3))
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(name.startswith("guidance."))
    regions = ((1, 2, 3), (1, 3), (3,))
    y = torch.zeros(2, 1, 16, 16, 16, dtype=torch.long)
    y[:, :, 4:12, 4:12, 4:12] = 2
    y[:, :, 6:9, 6:9, 6:9] = 3
    loss, terms = ClickTrainStep(net, RegionDiceCELoss(regions), regions, max_clicks=3)(
        torch.randn(2, 2, 16, 16, 16), torch.tensor([[True, False], [True, True]]), y)
    loss.backward()
    assert set(terms) == {"seg_clicks"} and torch.isfinite(loss)
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert all(g is None for n, g in grads.items() if not n.startswith("guidance."))
    assert grads["guidance.projections.0.weight"].abs().sum() > 0  # zero weights, yet a gradient: the clicks reach them


def test_click_training_fuses_random_subsets_of_each_samples_sequences():
    """Clicks are trained on one sequence as on four: the step fuses a random non-empty subset of what is present."""
    from magms.config import NetConfig
    from magms.losses import RegionDiceCELoss
    from magms.networks import build_network
    from magms.training.step import ClickTrainStep, random_subsets

    torch.manual_seed(0)
    present = torch.tensor([[True, True, True, True], [True, False, True, False]])
    drawn = torch.stack([random_subsets(present) for _ in range(2000)])
    assert not (drawn & ~present).any() and drawn.any(dim=2).all()
    full = drawn[:, 0].all(dim=1).float().mean().item()
    single = (drawn[:, 0].sum(dim=1) == 1).float().mean().item()
    assert abs(full - 2 / 16) < 0.03 and abs(single - 4 / 16) < 0.03

    net = build_network(NetConfig(slots=("flair", "t1c"), out_channels=4, img_size=(16, 16, 16), channels=(4, 8, 16),
                                  click_regions=3))
    fused_with = []
    fuse = net.fuse
    net.fuse = lambda x, subset: fused_with.append(subset.clone()) or fuse(x, subset)
    regions = ((1, 2, 3), (1, 3), (3,))
    y = torch.zeros(1, 1, 16, 16, 16, dtype=torch.long)
    y[:, :, 4:12, 4:12, 4:12] = 2
    step = ClickTrainStep(net, RegionDiceCELoss(regions), regions, max_clicks=1)
    for _ in range(12):
        step(torch.randn(1, 2, 16, 16, 16), torch.tensor([[True, True]]), y)
    assert {tuple(s[0].tolist()) for s in fused_with} == {(True, True), (True, False), (False, True)}
