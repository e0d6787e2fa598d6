"""Review aids: volumes, Dice to the fullest output, the disagreement map, the report, and
``magms segment --compare/--disagreement/--report`` on tiny and real cases."""

from __future__ import annotations

import contextlib
import csv
import io

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, needs_data, random_unet_bundle
from magms.cli import main
from magms.commands import SegmentOptions
from magms.inference import Segmenter
from magms.inference.postprocess import flip_name
from magms.labels import get_scheme
from magms.review import dice_to_fullest, disagreement_map, structure_volumes

SCHEME = get_scheme("brats2021")  # values 0, 1, 2, 4; regions WT {1, 2, 4}, TC {1, 4}, ET {4}


# --------------------------------------------------------------------------------------------
# constructed cases


def test_disagreement_map_is_zero_where_all_agree_and_counts_the_others():
    fullest = np.zeros((2, 3, 4), np.uint8)
    fullest[0, 0, :2] = 2
    a, b, c = fullest.copy(), fullest.copy(), fullest.copy()
    a[1, 2, 3] = 4  # only a differs here
    b[1, 2, 3] = 1  # ... and b, with another label: 2 outputs differ
    c[1, 2, 3] = 4  # ... and c: 3
    a[0, 0, 0] = 0  # a drops a voxel of the fullest
    b[0, 1, 1] = 2  # b adds one
    counts = disagreement_map([a, b, c], fullest)
    expected = np.zeros(fullest.shape, np.uint8)
    expected[1, 2, 3], expected[0, 0, 0], expected[0, 1, 1] = 3, 1, 1
    assert counts.dtype == np.uint8
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(disagreement_map([fullest, fullest], fullest), 0)
    with pytest.raises(ValueError, match=r"\(2, 3, 3\).*\(2, 3, 4\)"):
        disagreement_map([a[:, :, :3]], fullest)


def test_volumes_are_voxel_counts_times_voxel_volume_with_anisotropic_spacing():
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[0, :, :] = 2  # 56 voxels of oedema
    labels[1, :3, :5] = 1  # 15 of necrotic core
    labels[2, :2, :2] = 4  # 4 enhancing
    voxel_ml = 1.0 * 1.5 * 2.0 / 1000  # 3 mm³
    volumes = {(s.kind, s.key): ml for s, ml in structure_volumes(labels, SCHEME, (1.0, 1.5, 2.0)).items()}
    expected = {("label", "necrotic_core"): 15, ("label", "edema"): 56, ("label", "enhancing"): 4,
                ("region", "wt"): 75, ("region", "tc"): 19, ("region", "et"): 4}
    assert volumes == pytest.approx({k: n * voxel_ml for k, n in expected.items()})


def test_dice_to_fullest_is_one_for_identical_outputs_and_the_hand_count_otherwise():
    fullest = np.zeros((4, 4, 4), np.uint8)
    fullest[0, 0, :4] = 2  # 4 oedema voxels
    fullest[1, 0, :2] = 4  # 2 enhancing
    assert set(dice_to_fullest(fullest.copy(), fullest, SCHEME).values()) == {1.0}
    other = fullest.copy()
    other[0, 0, 3] = 0  # oedema 3 of the 4
    other[1, 0, 1] = 1  # one enhancing voxel now necrotic core
    dices = {(s.kind, s.key): d for s, d in dice_to_fullest(other, fullest, SCHEME).items()}
    assert dices[("label", "edema")] == pytest.approx(2 * 3 / (3 + 4))
    assert dices[("label", "enhancing")] == pytest.approx(2 * 1 / (1 + 2))
    assert dices[("label", "necrotic_core")] == 0.0  # only one of the two has it
    assert dices[("region", "wt")] == pytest.approx(2 * 5 / (5 + 6))
    assert dices[("region", "tc")] == 1.0  # {1, 4} covers the same two voxels
    assert dices[("region", "et")] == pytest.approx(2 / 3)


def test_flip_names_follow_the_working_orientation():
    assert flip_name(()) == "no flip"
    assert flip_name((0, 2)) == "flip LR+SI"
    assert flip_name((1,), "LPS") == "flip AP"


# --------------------------------------------------------------------------------------------
# the Segmenter and the CLI on a tiny random model


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return random_unet_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def _image(seed: int) -> sitk.Image:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((20, 24, 28))
    head = ((z - 10) ** 2 / 64 + (y - 12) ** 2 / 90 + (x - 14) ** 2 / 130) < 1
    img = sitk.GetImageFromArray((head * (100 + 40 * np.sin(x / 3.0) + rng.normal(0, 5, head.shape))).astype(np.float32))
    img.SetSpacing((1.0, 1.2, 1.5))
    img.SetOrigin((10.0, -5.0, 3.0))
    return img


@pytest.fixture
def case(tmp_path):
    paths = {slot: tmp_path / f"{slot}.nii.gz" for slot in ("flair", "t1c")}
    for seed, path in enumerate(paths.values()):
        sitk.WriteImage(_image(seed), str(path))
    return paths


def _segment(bundle, *args) -> int:
    return main(["segment", "--model", str(bundle), "--device", "cpu", "--progress", "none", *map(str, args)])


def _recorder():
    calls: list[tuple[int, int]] = []
    return calls, lambda done, total: calls.append((done, total))


def test_segment_subsets_prepares_once_and_gives_what_segment_gives_per_subset(bundle, case):
    segmenter = Segmenter(bundle, device="cpu")
    calls, progress = _recorder()
    outputs = segmenter.segment_subsets(case, progress=progress)
    assert list(outputs) == [("flair",), ("t1c",), ("flair", "t1c")]
    totals = 0
    for subset, output in outputs.items():
        alone_calls, alone = _recorder()
        alone_output = segmenter.segment({s: case[s] for s in subset}, progress=alone)
        np.testing.assert_array_equal(output.labels, alone_output.labels)
        assert output.present == subset and output.reference_slot == "flair"
        totals += alone_calls[-1][1]
    # one progress over all the runs: the windows of each, in order, to the end
    assert {total for _, total in calls} == {totals}
    assert [done for done, _ in calls] == sorted(done for done, _ in calls) and calls[-1][0] == totals
    assert list(segmenter.segment_subsets(case, subsets=[("t1c", "flair")])) == [("flair", "t1c")]
    with pytest.raises(Exception, match="t2 not among the inputs"):
        segmenter.segment_subsets(case, subsets=[("t2",)])


def test_segment_flips_gives_the_segmentation_and_each_of_the_8_flips(bundle, case):
    segmenter = Segmenter(bundle, device="cpu")
    result, flips = segmenter.segment_flips({"flair": case["flair"]}, probabilities=True)
    assert list(flips) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert flips[()] is result  # the bundle has no flip averaging: its output is the no-flip one, run once
    np.testing.assert_array_equal(result.labels, segmenter.segment({"flair": case["flair"]}).labels)
    assert result.probabilities is not None and flips[(0,)].probabilities is None


def _geometry(img: sitk.Image):
    return img.GetSize(), tuple(np.round(img.GetSpacing(), 6)), tuple(np.round(img.GetOrigin(), 6)), tuple(np.round(img.GetDirection(), 6))


def test_compare_flips_writes_the_map_and_a_report_on_one_input(bundle, case, tmp_path, capsys):
    out, counts, report = tmp_path / "seg.nii.gz", tmp_path / "doubt.nrrd", tmp_path / "review"
    assert _segment(bundle, "--input", f"flair={case['flair']}", "--output", out, "--compare", "flips",
                    "--disagreement", counts, "--report", report) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{out}\tflair\treference=flair")
    assert printed[1:] == [str(counts), *(str(report / n) for n in ("report.md", "report.png", "volumes.csv"))]
    doubt = sitk.ReadImage(str(counts))
    assert _geometry(doubt) == _geometry(sitk.ReadImage(str(case["flair"])))
    assert sitk.GetArrayViewFromImage(doubt).max() <= 8
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "validation: none recorded" in text and "| structure | no flip | flip LR |" in text and "flip LR+AP+SI" in text
    assert (report / "report.png").read_bytes()[:4] == b"\x89PNG"
    with open(report / "volumes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 * 6 and rows[0]["subset"] == "flair" and rows[0]["dice_to_fullest"] == "1"


def test_compare_none_report_has_the_volumes_only(bundle, case, tmp_path):
    report = tmp_path / "review"
    assert _segment(bundle, "--input", f"flair={case['flair']}", "--output", tmp_path / "seg.nii.gz", "--report", report) == 0
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "## Volumes (ml)" in text and "No comparison ran" in text and "## Dice to the fullest" not in text


def test_disagreement_without_compare_is_refused_with_nothing_written(bundle, case, tmp_path, capsys):
    out, counts = tmp_path / "seg.nii.gz", tmp_path / "doubt.nii.gz"
    assert _segment(bundle, "--input", f"flair={case['flair']}", "--output", out, "--disagreement", counts) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--disagreement needs --compare" in err and "Traceback" not in err
    assert not out.exists() and not counts.exists()


def test_report_over_an_existing_report_is_refused_without_overwrite(bundle, case, tmp_path, capsys):
    report = tmp_path / "review"
    report.mkdir()
    (report / "report.md").write_text("the reviewer's notes")
    out = tmp_path / "seg.nii.gz"
    args = ["--input", f"flair={case['flair']}", "--input", f"t1c={case['t1c']}", "--output", out, "--compare", "subsets",
            "--report", report]
    assert _segment(bundle, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report.md exist already (use --overwrite" in err
    assert (report / "report.md").read_text(encoding="utf-8") == "the reviewer's notes" and not out.exists()
    assert not (report / "volumes.csv").exists()


def test_review_options_are_refused_with_batch_and_subsets_need_two_inputs(bundle, case, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert _segment(bundle, "--batch", tmp_path, "--output-dir", tmp_path / "out", "--compare", "subsets", "--report", tmp_path / "r") == 2
    assert "--compare, --report: review aids for one case, not with --batch" in capsys.readouterr().err
    assert _segment(bundle, "--input", f"flair={case['flair']}", "--output", tmp_path / "s.nii.gz", "--compare", "subsets",
                    "--report", tmp_path / "r") == 2
    assert "no smaller subset; use --compare flips" in capsys.readouterr().err
    assert _segment(bundle, "--input", f"flair={case['flair']}", "--output", tmp_path / "s.nii.gz", "--compare", "flips") == 2
    assert "give --disagreement FILE, --report DIR or --compared-outputs DIR" in capsys.readouterr().err
    assert not (tmp_path / "s.nii.gz").exists() and not (tmp_path / "r").exists()


def test_compared_outputs_are_written_one_file_each_equal_to_the_subsets_segmentation(bundle, case, tmp_path, capsys):
    from magms.data.io import read_labelmap

    out, compared = tmp_path / "seg.nii.gz", tmp_path / "compared"
    assert _segment(bundle, "--input", f"flair={case['flair']}", "--input", f"t1c={case['t1c']}", "--output", out,
                    "--compare", "subsets", "--compared-outputs", compared) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:] == [str(compared / "flair.seg.nrrd"), str(compared / "t1c.seg.nrrd")]
    assert sorted(p.name for p in compared.iterdir()) == ["flair.seg.nrrd", "t1c.seg.nrrd"]  # the fullest is --output
    # the engine magms segment runs by default (the API's default is eager, the reference)
    engine = {k: SegmentOptions.defaults()[k] for k in ("engine", "precision")}
    outputs = Segmenter(bundle, device="cpu", **engine).segment_subsets(case)
    reference = sitk.ReadImage(str(case["flair"]))
    for subset in (("flair",), ("t1c",)):
        written = read_labelmap(compared / f"{subset[0]}.seg.nrrd")
        assert _geometry(written) == _geometry(reference)  # every output on the reference input's grid
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written), outputs[subset].labels)
    # the segments carry the scheme's names, as Slicer imports them
    assert "Segment0_Name:=" in (compared / "t1c.seg.nrrd").read_bytes()[:4000].decode("latin-1")


def test_compared_outputs_need_compare_and_existing_files_are_kept_without_overwrite(bundle, case, tmp_path, capsys):
    out, compared = tmp_path / "seg.nii.gz", tmp_path / "compared"
    assert _segment(bundle, "--input", f"flair={case['flair']}", "--output", out, "--compared-outputs", compared) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--compared-outputs needs --compare" in err
    assert not out.exists() and not compared.exists()
    compared.mkdir()
    (compared / "t1c.seg.nrrd").write_text("the reviewer's edit")
    args = ["--input", f"flair={case['flair']}", "--input", f"t1c={case['t1c']}", "--output", out, "--compare", "subsets",
            "--compared-outputs", compared]
    assert _segment(bundle, *args) == 2
    assert "t1c.seg.nrrd exist already (use --overwrite" in capsys.readouterr().err
    assert (compared / "t1c.seg.nrrd").read_text() == "the reviewer's edit" and not out.exists()
    (tmp_path / "out").mkdir()
    assert _segment(bundle, "--batch", tmp_path, "--output-dir", tmp_path / "out", "--compare", "subsets",
                    "--compared-outputs", compared) == 2
    assert "--compare, --compared-outputs: review aids for one case" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# a real BraTS 2018 case with the built-in model: one CLI run, FLAIR + T1c, three subsets

REAL_CASE = DATA / "brats18" / "Brats18_CBICA_AMH_1"  # one of the built-in model's validation cases


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """``magms segment --compare subsets --disagreement --report`` once, with the outputs that
    ``segment_subsets`` computed in it recorded."""
    from magms.builtin import builtin_model

    folder = tmp_path_factory.mktemp("real")
    paths = {"flair": REAL_CASE / f"{REAL_CASE.name}_flair.nii.gz", "t1c": REAL_CASE / f"{REAL_CASE.name}_t1ce.nii.gz"}
    run = {"paths": paths, "output": folder / "seg.nii.gz", "map": folder / "disagreement.nii.gz", "report": folder / "report",
           "model": builtin_model(), "outputs": {}}
    original = Segmenter.segment_subsets

    def recording(self, *args, **kwargs):
        outputs = original(self, *args, **kwargs)
        run["outputs"].update(outputs)
        return outputs

    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setattr(Segmenter, "segment_subsets", recording)
        run["status"] = main(["segment", "--model", str(run["model"]), "--device", "cpu", "--progress", "none",
                              "--input", f"flair={paths['flair']}", "--input", f"t1c={paths['t1c']}", "--output", str(run["output"]),
                              "--compare", "subsets", "--disagreement", str(run["map"]), "--report", str(run["report"])])
    run["stdout"] = stdout.getvalue()
    return run


@needs_data
@pytest.mark.slow
def test_real_case_disagreement_map_is_on_the_reference_grid_and_counts_the_subsets(real_run):
    assert real_run["status"] == 0
    assert list(real_run["outputs"]) == [("flair",), ("t1c",), ("flair", "t1c")]
    doubt = sitk.ReadImage(str(real_run["map"]))
    assert _geometry(doubt) == _geometry(sitk.ReadImage(str(real_run["paths"]["flair"])))  # flair: the reference
    counts = sitk.GetArrayFromImage(doubt)
    assert counts.min() == 0 and counts.max() <= 2
    full = real_run["outputs"][("flair", "t1c")].labels
    flair, t1c = (real_run["outputs"][(s,)].labels for s in ("flair", "t1c"))
    assert not counts[(flair == full) & (t1c == full)].any()
    np.testing.assert_array_equal(counts, (flair != full).astype(np.uint8) + (t1c != full))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(real_run["output"]))), full)


@needs_data
@pytest.mark.slow
def test_real_case_report_names_inputs_and_model_and_tables_the_volumes(real_run):
    lines = real_run["stdout"].splitlines()
    assert lines[0].startswith(f"{real_run['output']}\tflair+t1c\treference=flair")
    report = real_run["report"]
    assert lines[1:] == [str(real_run["map"]), *(str(report / n) for n in ("report.md", "report.png", "volumes.csv"))]
    text = (report / "report.md").read_text(encoding="utf-8")
    for slot, path in real_run["paths"].items():
        assert f"| {slot} | `{path}`" in text
    assert "brats-glioma-4seq" in text and "validation/summary.md" in text and "### Recorded validation" in text
    assert "## Volumes (ml)" in text and "| WT (whole tumour) |" in text and "| structure | flair+t1c (fullest) | flair | t1c |" in text
    assert "## Dice to the fullest output (flair+t1c)" in text and "## Disagreement" in text
    assert (report / "report.png").stat().st_size > 10_000


@needs_data
@pytest.mark.slow
def test_real_case_volumes_csv_is_counts_times_voxel_volume_of_the_written_labelmap(real_run):
    seg = sitk.ReadImage(str(real_run["output"]))
    labels, voxel_ml = sitk.GetArrayFromImage(seg), float(np.prod(seg.GetSpacing())) / 1000
    with open(real_run["report"] / "volumes.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f)]
    assert {r["subset"] for r in rows} == {"flair+t1c", "flair", "t1c"}
    full = {(r["kind"], r["structure"]): r for r in rows if r["subset"] == "flair+t1c"}
    scheme = get_scheme("brats2021")
    for label in scheme.labels[1:]:
        assert float(full[("label", label.key)]["ml"]) == pytest.approx(np.count_nonzero(labels == label.value) * voxel_ml, rel=1e-5)
    for region in scheme.regions:
        assert float(full[("region", region.key)]["ml"]) == pytest.approx(
            np.count_nonzero(scheme.region_mask(labels, region.key)) * voxel_ml, rel=1e-5)
    assert float(full[("region", "wt")]["ml"]) > 1  # a real tumour was found
    assert all(float(r["dice_to_fullest"]) == 1 for r in full.values())
