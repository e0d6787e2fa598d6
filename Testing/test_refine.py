"""Interactive refinement on a real case: the Refiner, ``magms segment --clicks``, and ``magms serve`` as a real process.

The model is the built-in one with a click guidance of seeded random weights: every click then changes the
labels, which is what these tests need (the trained guidance is scored by Testing/benchmarks/bench_clicks.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, REPO, click_bundle, needs_data
from magms.errors import ConfigError
from magms.protocol import LabelPatch, decode_patch, encode_patch, read_message, worker_request

CASE = DATA / "brats18" / "Brats18_CBICA_AMH_1"  # one of the built-in model's validation cases
FLAIR = CASE / "Brats18_CBICA_AMH_1_flair.nii.gz"
pytestmark = needs_data


@pytest.fixture(scope="module")
def guided_bundle(tmp_path_factory) -> Path:
    return click_bundle(tmp_path_factory.mktemp("guided") / "bundle")


@pytest.fixture(scope="module")
def tumour_centre() -> tuple[float, float, float]:
    """The LPS point of the labelled tumour's centre."""
    label = sitk.ReadImage(str(CASE / "Brats18_CBICA_AMH_1_seg.nii.gz"))
    k, j, i = (int(v.mean()) for v in np.nonzero(sitk.GetArrayViewFromImage(label) > 0))
    return label.TransformIndexToPhysicalPoint([i, j, k])


@pytest.fixture
def refiner(guided_bundle):
    from magms.inference.refine import Refiner

    refiner = Refiner(guided_bundle, engine="eager")
    refiner.open({"flair": FLAIR})
    return refiner


def test_opening_gives_the_automatic_result_and_a_click_changes_labels_inside_its_box_only(guided_bundle, refiner, tumour_centre):
    from magms.inference import Segmenter

    automatic = Segmenter(guided_bundle, device="cpu", engine="eager").segment({"flair": FLAIR}).labels
    assert np.array_equal(refiner.labels, automatic)
    patch = refiner.click(tumour_centre, "tc", positive=True)
    after = refiner.labels
    inside = np.zeros(after.shape, bool)
    inside[patch.region] = True
    assert np.array_equal(after[~inside], automatic[~inside]) and not np.array_equal(after[inside], automatic[inside])
    assert np.array_equal(patch.labels, after[patch.region])
    assert all(n <= 48 * 2 + 5 for n in patch.labels.shape)  # the 48-voxel window at 2 mm on this 1 mm grid, and a margin
    assert len(refiner.clicks) == 1 and refiner.clicks[0].region == 1 and refiner.clicks[0].positive


def test_undo_and_clear_give_back_exactly_what_was_there(refiner, tumour_centre):
    automatic = refiner.labels.copy()
    assert refiner.undo() is None and refiner.clear() is None
    refiner.click(tumour_centre, "wt", positive=False)
    one = refiner.labels.copy()
    shifted = (tumour_centre[0] + 30.0, *tumour_centre[1:])
    refiner.click(shifted, "wt", positive=True)
    undone = refiner.undo()
    assert np.array_equal(refiner.labels, one) and np.array_equal(undone.labels, one[undone.region])
    refiner.click(shifted, "et", positive=True)
    cleared = refiner.clear()
    assert np.array_equal(refiner.labels, automatic) and refiner.clicks == []
    assert np.array_equal(cleared.labels, automatic[cleared.region])


def test_a_point_in_ras_is_the_same_click_as_its_mirror_in_lps(guided_bundle, tumour_centre):
    from magms.inference.refine import Refiner

    patches = []
    for frame, point in (("LPS", tumour_centre), ("RAS", (-tumour_centre[0], -tumour_centre[1], tumour_centre[2]))):
        refiner = Refiner(guided_bundle, engine="eager")
        refiner.open({"flair": FLAIR})
        patches.append(refiner.click(point, "wt", positive=True, frame=frame))
    assert patches[0].start == patches[1].start and np.array_equal(patches[0].labels, patches[1].labels)


def test_a_window_fades_only_towards_sides_inside_the_box():
    from magms.inference.refine import blend_weight

    inside = blend_weight((slice(10, 58), slice(10, 58), slice(10, 58)), (100, 100, 100), fade=8)
    assert inside.shape == (48, 48, 48) and inside[24, 24, 24] == 1.0 and inside[0, 24, 24] < 0.1 and inside[47, 24, 24] < 0.1
    # a window on the box's low x border and high z border: no fade there, a fade towards the other sides
    edge = blend_weight((slice(0, 48), slice(10, 58), slice(52, 100)), (100, 100, 100), fade=8)
    assert edge[0, 24, 24] == 1.0 and edge[24, 24, 47] == 1.0
    assert edge[47, 24, 24] < 0.1 and edge[24, 0, 24] < 0.1 and edge[24, 24, 0] < 0.1


def test_the_clicked_spot_is_what_the_click_says():
    from magms.inference.refine import settle_clicked_spot

    rng = np.random.default_rng(0)
    probabilities = rng.random((4, 20, 20, 20)).astype(np.float32)
    probabilities[0] += 3.0  # background everywhere
    settle_clicked_spot(probabilities, (10.0, 10.0, 10.0), (1, 3), positive=True, radius=2.0)
    best = probabilities.argmax(axis=0)
    assert np.isin(best[9:12, 9:12, 9:12], (1, 3)).all() and best[10, 10, 13] == 0  # the spot only, 2 voxels round
    assert (probabilities[2, 10, 10, 10] == 0) and probabilities[1, 10, 10, 10] > 0
    settle_clicked_spot(probabilities, (10.0, 10.0, 10.0), (1, 2, 3), positive=False, radius=2.0)
    assert (probabilities.argmax(axis=0)[9:12, 9:12, 9:12] == 0).all()
    settle_clicked_spot(probabilities, (-10.0, 10.0, 10.0), (1,), positive=True)  # outside the window: nothing
    assert (probabilities.argmax(axis=0)[9:12, 9:12, 9:12] == 0).all()


def test_a_click_keeps_its_spot_and_relabels_only_the_voxels_whose_class_it_changed(refiner, tumour_centre):
    from scipy import ndimage

    # a point off the tumour and 6 mm or more inside the brain: a click at the brain's edge lies half outside
    flair = sitk.ReadImage(str(FLAIR))
    deep = ndimage.binary_erosion(sitk.GetArrayFromImage(flair) > 0, iterations=6) & (refiner.labels == 0)
    healthy = next(p for dx in (-40.0, 40.0, -30.0, 30.0, -50.0, 50.0) for p in [(tumour_centre[0] + dx, *tumour_centre[1:])]
                   if deep[flair.TransformPhysicalPointToIndex(p)[::-1]])
    index = flair.TransformPhysicalPointToIndex(healthy)[::-1]
    region = refiner.click(healthy, "wt", positive=True).region
    assert refiner.labels[index] != 0  # a positive click's spot is in the region
    refiner.click(healthy, "wt", positive=False)
    assert refiner.labels[index] == 0  # and a negative one's never
    refiner.clear()
    # a label the network's argmax would not give (as a size rule or an earlier decision leaves one), far from
    # the click in the window's corner, is kept: the click did not change that voxel's class
    corner = tuple(r.start + 2 for r in region)
    refiner.labels[corner] = 2 if refiner.labels[corner] != 2 else 1
    marked = refiner.labels[corner]
    refiner.click(healthy, "wt", positive=True)
    assert refiner.labels[corner] == marked


def test_bad_clicks_are_refused_by_name_and_change_nothing(guided_bundle, refiner, tumour_centre, tmp_path):
    from magms.inference.refine import Refiner

    before = refiner.labels.copy()
    with pytest.raises(ConfigError, match=r"click at \[1000.0, 0.0, 0.0\] \(LPS\) lies outside"):
        refiner.click((1000.0, 0.0, 0.0), "wt", True)
    with pytest.raises(ConfigError, match="regions are wt, tc, et"):
        refiner.click(tumour_centre, "edema", True)
    with pytest.raises(ConfigError, match="frame 'XYZ'"):
        refiner.click(tumour_centre, "wt", True, frame="XYZ")
    assert np.array_equal(refiner.labels, before) and refiner.clicks == []
    with pytest.raises(ConfigError, match="no case is open"):
        Refiner(guided_bundle, engine="eager").click(tumour_centre, "wt", True)
    from conftest import make_bundle

    with pytest.raises(ConfigError, match="takes no clicks"):
        Refiner(make_bundle(tmp_path / "plain"))


# ------------------------------------------------------------------------------------------------
# magms segment --clicks


def _clicks_file(path: Path, clicks, frame="LPS") -> Path:
    path.write_text(json.dumps({"frame": frame, "clicks": clicks}), encoding="utf-8")
    return path


def test_segment_with_clicks_writes_the_refined_labels(guided_bundle, tumour_centre, tmp_path, capsys):
    from magms.cli import main
    from magms.inference.refine import Refiner

    clicks = _clicks_file(tmp_path / "clicks.json", [{"point": list(tumour_centre), "region": "tc", "positive": True}])
    out = tmp_path / "refined.nii.gz"
    argv = ["segment", "--model", str(guided_bundle), "--input", f"flair={FLAIR}", "--output", str(out), "--clicks", str(clicks),
            "--engine", "eager", "--device", "cpu", "--progress", "none"]
    assert main(argv) == 0
    assert "click 1: +tc at LPS" in capsys.readouterr().err
    refiner = Refiner(guided_bundle, engine="eager")
    refiner.open({"flair": FLAIR})
    refiner.click(tumour_centre, "tc", True)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), refiner.labels)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read it as JSON"),
        ('{"frame": "RAS"}', 'expected {"frame"'),
        ('{"frame": "RAS", "clicks": [{"point": [1, 2], "region": "wt", "positive": true}]}', "click 1: a click needs three"),
        ('{"frame": "RAS", "clicks": [{"point": [1, 2, 3], "region": "wt", "positive": "yes"}]}', "click 1 must be"),
        ('{"frame": "IJK", "clicks": [{"point": [1, 2, 3], "region": "wt", "positive": true}]}', "frame 'IJK'"),
    ],
)
def test_a_bad_clicks_file_is_refused_before_anything_runs(content, message, tmp_path, capsys):
    from magms.cli import main

    clicks = tmp_path / "clicks.json"
    clicks.write_text(content, encoding="utf-8")
    out = tmp_path / "out.nii.gz"
    assert main(["segment", "--input", f"flair={FLAIR}", "--output", str(out), "--clicks", str(clicks), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert str(clicks) in err and message in err and not out.exists()


def test_clicks_outside_the_image_or_with_compare_are_refused_and_nothing_is_written(guided_bundle, tmp_path, capsys):
    from magms.cli import main

    out = tmp_path / "out.nii.gz"
    far = _clicks_file(tmp_path / "far.json", [{"point": [5000, 0, 0], "region": "wt", "positive": True}], "RAS")
    base = ["segment", "--model", str(guided_bundle), "--input", f"flair={FLAIR}", "--output", str(out), "--engine", "eager",
            "--progress", "none", "--clicks", str(far)]
    assert main(base) == 2 and "--clicks: click 1: click at" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--compare", "flips"]) == 2 and "not with --compare" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the worker, as the Slicer module runs it: a real process on pipes


def test_label_patches_survive_the_protocol_and_malformed_ones_are_refused():
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    patch = decode_patch(json.loads(json.dumps(encode_patch(LabelPatch((5, 6, 7), labels)))))
    assert patch.start == (5, 6, 7) and np.array_equal(patch.labels, labels)
    assert patch.region == (slice(7, 9), slice(6, 9), slice(5, 9)) and patch.changed is None
    before = labels.copy()
    before[1, 2, ::2] = 0
    whole = np.pad(labels, ((7, 0), (6, 0), (5, 0)))  # the patch's box in a larger image
    changed = decode_patch(json.loads(json.dumps(encode_patch(LabelPatch.of(whole, patch.region, before)))))
    assert np.array_equal(changed.labels, labels) and np.array_equal(changed.changed, labels != before)
    with pytest.raises(ValueError, match="malformed label patch"):
        decode_patch({**encode_patch(patch), "size": [9, 9, 9]})
    with pytest.raises(ValueError, match="'changed' holds 1 bytes, the size needs 3"):
        decode_patch({**encode_patch(changed), "changed": "AA=="})
    with pytest.raises(ValueError, match="not a JSON object"):
        read_message("[1, 2]")


def test_the_worker_opens_refines_survives_bad_requests_and_stops(guided_bundle, tumour_centre):
    worker = subprocess.Popen(
        [sys.executable, "-m", "magms", "serve", "--model", str(guided_bundle), "--engine", "eager"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )

    def ask(line: str) -> dict:
        worker.stdin.write(line)
        worker.stdin.flush()
        return read_message(worker.stdout.readline(), "reply")

    try:
        ready = read_message(worker.stdout.readline(), "ready line")
        assert ready["ok"] and ready["ready"] and ready["regions"] == ["wt", "tc", "et"]
        opened = ask(worker_request("open", 1, inputs={"flair": str(FLAIR)}))
        assert opened["ok"] and opened["id"] == 1 and opened["present"] == ["flair"], opened
        ras = [-tumour_centre[0], -tumour_centre[1], tumour_centre[2]]
        clicked = ask(worker_request("click", 2, point=ras, frame="RAS", region="wt", positive=False))
        assert clicked["ok"] and decode_patch(clicked["patch"]).labels.ndim == 3
        assert ask("this is not json\n")["error"].startswith("request is not JSON")
        assert "unknown op 'paint'" in ask('{"id": 4, "op": "paint"}\n')["error"]
        missing = ask(worker_request("open", 5, inputs={"flair": "/no/such/flair.nii.gz"}))
        assert not missing["ok"] and "/no/such/flair.nii.gz" in missing["error"]
        assert "needs the field 'region'" in ask('{"id": 6, "op": "click", "point": [0, 0, 0], "frame": "RAS"}\n')["error"]
        undone = ask(worker_request("undo", 7))  # still alive, and the case of request 1 still open
        assert undone["ok"] and undone["patch"] is not None
        assert ask(worker_request("stop", 8)) == {"id": 8, "ok": True, "seconds": pytest.approx(0, abs=1)}
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate()
