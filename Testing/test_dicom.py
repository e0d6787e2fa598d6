"""DICOM RT Structure Set and Segmentation export (magms.dicom, magms segment --rtstruct/--dicom-seg,
magms export) on DICOM series made at run time from a real BraTS 2018 case.

The RTSTRUCT is read back with pydicom and rasterised here, independently of rt-utils (PIL polygons,
holes by nesting depth), onto the series' grid; the SEG is read back with highdicom. Both are
checked by Debian's DICOM validator ``dciodvfy`` where it is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, needs_data

pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (pip install 'magms-slicer[dicom]')")
hd = pytest.importorskip("highdicom", reason="highdicom is not installed (pip install 'magms-slicer[dicom]')")
pytest.importorskip("rt_utils", reason="rt-utils is not installed (pip install 'magms-slicer[dicom]')")

from dicom_series import write_mr_series  # noqa: E402

from magms.cli import main  # noqa: E402
from magms.data.io import read_image  # noqa: E402
from magms.dicom import read_series, write_dicom_seg, write_rtstruct  # noqa: E402
from magms.errors import ConfigError, ImageError  # noqa: E402
from magms.labels import get_scheme, structures  # noqa: E402

CASE = "Brats18_CBICA_AQR_1"  # a validation case of the built-in model, not trained on
SCHEME = get_scheme("brats2021")
needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not found (Debian package dicom3tools)")


def _case_file(kind: str) -> Path:
    return DATA / "brats18" / CASE / f"{CASE}_{kind}.nii.gz"


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory):
    """FLAIR and T1c of a real case as two DICOM MR series of one study, and its label map."""
    if not _case_file("flair").exists():
        pytest.skip(f"no real data: {_case_file('flair')} (set MAGMS_TEST_DATA)")
    root = tmp_path_factory.mktemp("dicom")
    study, frame = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    folders = {}
    for number, (slot, kind) in enumerate((("flair", "flair"), ("t1c", "t1ce")), start=1):
        folders[slot] = root / slot
        write_mr_series(sitk.ReadImage(str(_case_file(kind))), folders[slot], slot.upper(), study, frame, series_number=number)
    grid = read_image(folders["flair"])
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(_case_file("seg")))).astype(np.uint8)
    return {"folders": folders, "grid": grid, "truth": truth, "root": root}


def _sop_uids(folder: Path) -> list[str]:
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sorted(folder.glob("*.dcm"))]


def _polygon_depths(polygons: list[np.ndarray]) -> list[int]:
    from matplotlib.path import Path as Polygon

    return [sum(Polygon(other).contains_point(p[0]) for j, other in enumerate(polygons) if j != i and len(other) >= 3)
            for i, p in enumerate(polygons)]


def rasterise_roi(ds, roi_number: int, grid: sitk.Image, slice_of_uid: dict[str, int]) -> np.ndarray:
    """An RTSTRUCT ROI as a (z, y, x) mask on ``grid``: every contour's points mapped to voxel
    indices, filled with PIL (boundary pixels included); a contour inside an odd number of others
    is a hole (its interior cleared, its boundary kept)."""
    from PIL import Image, ImageDraw

    size = grid.GetSize()
    contours = next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == roi_number)
    by_slice: dict[int, list[np.ndarray]] = {}
    for contour in contours.get("ContourSequence", []):
        assert contour.ContourGeometricType == "CLOSED_PLANAR"
        k = slice_of_uid[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
        points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
        index = np.array([grid.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points])
        assert np.abs(index[:, 2] - k).max() < 0.01, "a contour does not lie on its referenced slice"
        by_slice.setdefault(k, []).append(index[:, :2])
    mask = np.zeros(size[::-1], dtype=bool)
    for k, polygons in by_slice.items():
        page = Image.new("1", size[:2], 0)
        draw = ImageDraw.Draw(page)
        for depth, polygon in sorted(zip(_polygon_depths(polygons), polygons), key=lambda item: item[0]):
            xy = [tuple(p) for p in polygon]
            if len(xy) < 3:
                draw.line(xy + xy[:1], fill=1)
            else:
                draw.polygon(xy, fill=0 if depth % 2 else 1, outline=1)
        mask[k] = np.array(page, dtype=bool)
    return mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def _check_rtstruct(path: Path, folder: Path, grid: sitk.Image, labels: np.ndarray, minimum_dice: float = 0.95) -> dict[str, float]:
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.RTStructureSetStorage
    series = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0], stop_before_pixels=True)
    assert ds.StudyInstanceUID == series.StudyInstanceUID and ds.PatientID == series.PatientID
    assert ds.FrameOfReferenceUID == series.FrameOfReferenceUID
    referenced = ds.ReferencedFrameOfReferenceSequence[0]
    assert referenced.FrameOfReferenceUID == series.FrameOfReferenceUID
    ref_series = referenced.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == series.SeriesInstanceUID
    uids = _sop_uids(folder)
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in ref_series.ContourImageSequence) == sorted(uids)
    slice_of_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): read_series(folder, grid).files.index(p)
                    for p in sorted(folder.glob("*.dcm"))}
    expected = structures(SCHEME)
    assert [r.ROIName for r in ds.StructureSetROISequence] == [s.name for s in expected]
    dices = {}
    for roi, contour, observation, structure in zip(ds.StructureSetROISequence, ds.ROIContourSequence,
                                                     ds.RTROIObservationsSequence, expected):
        assert [int(c) for c in contour.ROIDisplayColor] == list(structure.color)
        assert int(observation.ReferencedROINumber) == int(roi.ROINumber)
        code = observation.RTROIIdentificationCodeSequence[0]
        assert (code.CodingSchemeDesignator, code.CodeValue, code.CodeMeaning) == (
            structure.type.scheme, structure.type.value, structure.type.meaning)
        assert roi.ROIGenerationAlgorithm == "AUTOMATIC"
        mask = rasterise_roi(ds, int(roi.ROINumber), grid, slice_of_uid)
        dices[structure.key] = _dice(mask, structure.mask(labels))
    assert min(dices.values()) >= minimum_dice, dices
    return dices


def _check_seg(path: Path, folder: Path, labels: np.ndarray) -> None:
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    expected = structures(SCHEME)
    assert [d.SegmentLabel for d in seg.SegmentSequence] == [s.name for s in expected]
    for item, structure in zip(seg.SegmentSequence, expected):
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (kind.CodingSchemeDesignator, kind.CodeValue) == (structure.type.scheme, structure.type.value)
        assert (category.CodingSchemeDesignator, category.CodeValue) == (structure.category.scheme, structure.category.value)
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert np.allclose(hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb(), structure.color, atol=1)
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in read_series(folder, read_image(folder)).files]
    referenced = seg.ReferencedSeriesSequence[0]
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence) == sorted(uids)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=list(range(1, len(expected) + 1)))
    for i, structure in enumerate(expected):
        assert np.array_equal(pixels[..., i].astype(bool), structure.mask(labels)), structure.key


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


# ---------------------------------------------------------------------------------------------


def test_structures_are_the_schemes_labels_then_regions():
    found = structures(SCHEME)
    assert [s.key for s in found] == ["necrotic_core", "edema", "enhancing", "wt", "tc", "et"]
    by_key = {s.key: s for s in found}
    assert by_key["wt"].values == (1, 2, 4) and by_key["tc"].values == (1, 4) and by_key["et"].values == (4,)
    # a region has the colour of its outermost label, and its codes when it is one label
    assert by_key["wt"].color == by_key["edema"].color and by_key["tc"].color == by_key["necrotic_core"].color
    assert by_key["et"].type == by_key["enhancing"].type and by_key["wt"].type.value == "108369006"
    assert all(s.name == SCHEME.label(s.values[0]).name for s in found[:3])


@needs_data
def test_rtstruct_round_trip_on_a_real_case(dicom_case, tmp_path):
    out = write_rtstruct(dicom_case["truth"], dicom_case["grid"], read_series(dicom_case["folders"]["flair"], dicom_case["grid"]),
                         SCHEME, tmp_path / "rt.dcm", model="test-model")
    dices = _check_rtstruct(out, dicom_case["folders"]["flair"], dicom_case["grid"], dicom_case["truth"])
    print("RTSTRUCT round-trip Dice:", {k: round(v, 4) for k, v in dices.items()})


@needs_data
def test_dicom_seg_round_trip_on_a_real_case(dicom_case, tmp_path):
    out = write_dicom_seg(dicom_case["truth"], dicom_case["grid"], read_series(dicom_case["folders"]["flair"], dicom_case["grid"]),
                          SCHEME, tmp_path / "seg.dcm", model="test-model")
    _check_seg(out, dicom_case["folders"]["flair"], dicom_case["truth"])


@needs_data
@needs_dciodvfy
@pytest.mark.parametrize("kind", ["rtstruct", "seg"])
def test_dciodvfy_finds_no_errors(dicom_case, tmp_path, kind):
    writer = write_rtstruct if kind == "rtstruct" else write_dicom_seg
    labels = dicom_case["truth"].copy()
    labels[labels == 1] = 2  # an empty structure (no necrotic core) is kept, and valid
    out = writer(labels, dicom_case["grid"], read_series(dicom_case["folders"]["flair"], dicom_case["grid"]), SCHEME,
                 tmp_path / f"{kind}.dcm", model="test-model")
    assert _dciodvfy_errors(out) == []
    if kind == "rtstruct":
        ds = pydicom.dcmread(out)
        assert [r.ROIName for r in ds.StructureSetROISequence][0] == SCHEME.label(1).name
        assert len(ds.ROIContourSequence[0].get("ContourSequence", [])) == 0


@needs_data
def test_non_square_pixels_refuse_rtstruct_but_not_seg(dicom_case, tmp_path):
    image = sitk.ReadImage(str(_case_file("flair")))
    grid = sitk.Image([int(image.GetSize()[0] / 0.8), image.GetSize()[1], image.GetSize()[2]], sitk.sitkUInt8)
    grid.SetSpacing((0.8, 1.0, 1.0))
    grid.SetOrigin(image.GetOrigin())
    grid.SetDirection(image.GetDirection())
    resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, image.GetPixelID())
    write_mr_series(resampled, tmp_path / "series")
    truth = sitk.Resample(sitk.ReadImage(str(_case_file("seg"))), grid, sitk.Transform(), sitk.sitkNearestNeighbor)
    labels = sitk.GetArrayFromImage(truth).astype(np.uint8)
    series_grid = read_image(tmp_path / "series")
    series = read_series(tmp_path / "series", series_grid)
    with pytest.raises(ImageError, match="square pixels"):
        write_rtstruct(labels, series_grid, series, SCHEME, tmp_path / "rt.dcm")
    assert not (tmp_path / "rt.dcm").exists()
    _check_seg(write_dicom_seg(labels, series_grid, series, SCHEME, tmp_path / "seg.dcm"), tmp_path / "series", labels)


@needs_data
def test_a_series_on_another_grid_is_refused_naming_the_file(dicom_case):
    image = sitk.ReadImage(str(_case_file("flair")))
    moved = sitk.Image(image)
    moved.SetOrigin([o + 0.5 for o in image.GetOrigin()])  # half a voxel off
    with pytest.raises(ImageError, match=r"0001\.dcm: slice position .* not on the label map's grid"):
        read_series(dicom_case["folders"]["flair"], moved)


def test_missing_library_says_how_to_install(monkeypatch):
    import importlib

    from magms import dicom

    real = importlib.import_module

    def refuse(name, *args):
        if name == "rt_utils":
            raise ImportError("No module named 'rt_utils'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", refuse)
    with pytest.raises(ConfigError, match=r"rt-utils .*pip install 'magms-slicer\[dicom\]'"):
        dicom._require("rt_utils")


@needs_data
def test_segment_refuses_rtstruct_for_a_nifti_reference(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code = main(["segment", "--input", f"flair={_case_file('flair')}", "--output", str(out / "x.seg.nrrd"),
                 "--rtstruct", str(out / "rt.dcm"), "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if line.startswith("magms segment: error")]) == 1
    assert str(_case_file("flair")) in err[-1] and "not a DICOM series" in err[-1]
    assert list(out.iterdir()) == []


@needs_data
@pytest.mark.slow
def test_segment_writes_rtstruct_and_seg_from_dicom_series(dicom_case, tmp_path, capsys):
    """The RT workflow end to end: DICOM series in, built-in model, RTSTRUCT and SEG out."""
    folders = dicom_case["folders"]
    labelmap, rt, seg = tmp_path / "case.seg.nrrd", tmp_path / "case-rtstruct.dcm", tmp_path / "case-seg.dcm"
    code = main(["segment", "--input", f"flair={folders['flair']}", "--input", f"t1c={folders['t1c']}", "--output", str(labelmap),
                 "--rtstruct", str(rt), "--dicom-seg", str(seg), "--progress", "none"])
    assert code == 0
    assert capsys.readouterr().out.splitlines()[1:] == [str(rt), str(seg)]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(labelmap)))
    assert (labels > 0).sum() > 10000  # the built-in model finds the tumour
    dices = _check_rtstruct(rt, folders["flair"], dicom_case["grid"], labels)
    print("RTSTRUCT of the model's labels, round-trip Dice:", {k: round(v, 4) for k, v in dices.items()})
    _check_seg(seg, folders["flair"], labels)
    assert _dice(labels > 0, dicom_case["truth"] > 0) > 0.8  # and the contours are the tumour's


@needs_data
def test_export_command_writes_both_from_a_label_file(dicom_case, tmp_path, capsys):
    folder = dicom_case["folders"]["flair"]
    labels = sitk.GetImageFromArray(dicom_case["truth"])
    labels.CopyInformation(dicom_case["grid"])
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    files = [str(p) for p in sorted(folder.glob("*.dcm"))]
    argv = ["export", "--labels", str(tmp_path / "labels.nii.gz"), "--rtstruct", str(tmp_path / "rt.dcm"),
            "--dicom-seg", str(tmp_path / "seg.dcm")]
    assert main(argv + [arg for f in files for arg in ("--series", f)]) == 0  # the files, as Slicer's database gives them
    _check_seg(tmp_path / "seg.dcm", folder, dicom_case["truth"])
    _check_rtstruct(tmp_path / "rt.dcm", folder, dicom_case["grid"], dicom_case["truth"])
    assert (tmp_path / "rt.dcm").stat().st_mode & 0o777 == 0o644  # readable by the planning system's importer
    # existing files are kept without --overwrite; unknown label values are named
    assert main(argv + ["--series", str(folder)]) == 2
    assert "exists already" in capsys.readouterr().err
    bad = sitk.GetImageFromArray(np.full(dicom_case["truth"].shape, 3, np.uint8))
    bad.CopyInformation(dicom_case["grid"])
    sitk.WriteImage(bad, str(tmp_path / "bad.nii.gz"))
    assert main(["export", "--labels", str(tmp_path / "bad.nii.gz"), "--series", str(folder), "--rtstruct", str(tmp_path / "rt2.dcm")]) == 2
    assert "values [3]" in capsys.readouterr().err and not (tmp_path / "rt2.dcm").exists()


@needs_data
@pytest.mark.slow
def test_batch_writes_one_rtstruct_per_dicom_case_and_names_the_others(dicom_case, tmp_path, capsys):
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,flair\ndicom_case,{dicom_case['folders']['flair']}\nnifti_case,{_case_file('flair')}\n", encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "rt").mkdir()
    code = main(["segment", "--batch", str(manifest), "--output-dir", str(tmp_path / "out"), "--rtstruct", str(tmp_path / "rt"),
                 "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 1 and "1 of 2 case(s) failed" in err
    assert "nifti_case: --rtstruct: the reference input flair" in err and "not a DICOM series folder" in err
    assert sorted(p.name for p in (tmp_path / "rt").iterdir()) == ["dicom_case.rtstruct.dcm"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dicom_case.seg.nrrd"]  # nothing for the refused case
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "dicom_case.seg.nrrd")))
    _check_rtstruct(tmp_path / "rt" / "dicom_case.rtstruct.dcm", dicom_case["folders"]["flair"], dicom_case["grid"], labels)


def test_highdicom_022_gets_the_numpy_alias_it_names_under_numpy_2():
    """3D Slicer 5.8 and 5.10 ship pydicom 2.4.4, which the Slicer module keeps, so pip gives them highdicom 0.22
    (0.23 needs pydicom 3); on Slicer 5.10's numpy 2 its SEG constructor failed on ``np.float_``. Checked by hand
    with pydicom 2.4.4, numpy 2.0.2, highdicom 0.22.0 and rt-utils 1.2.7: both objects written from a real case,
    the SEG voxel for voxel, no dciodvfy errors."""
    import types

    from magms.dicom import _numpy_aliases_for_highdicom

    numpy2 = types.SimpleNamespace(float64=np.float64)
    _numpy_aliases_for_highdicom("0.28.2", numpy2)
    assert not hasattr(numpy2, "float_")  # a highdicom that needs no alias gets none
    _numpy_aliases_for_highdicom("0.22.0", numpy2)
    assert numpy2.float_ is np.float64
    numpy1 = types.SimpleNamespace(float64=np.float64, float_="numpy 1's own")
    _numpy_aliases_for_highdicom("0.22.0", numpy1)
    assert numpy1.float_ == "numpy 1's own"


@needs_data
@pytest.mark.parametrize("kind", ["rtstruct", "seg"])
def test_targets_are_named_typed_and_coded_for_planning(dicom_case, tmp_path, kind):
    """GTV, CTV, PTV (ESTRO-EANO 2023) and the brain after the labels and regions: TG-263 names, RT ROI
    Interpreted Type, generation algorithm with the margin in the description, CID 9534 codes, the voxels
    as grown; the structure set UNAPPROVED; no dciodvfy errors."""
    from magms.targets import PROTOCOLS, brain_mask, grow_targets, target_structures

    grid, labels = dicom_case["grid"], dicom_case["truth"]
    brain = brain_mask([grid])
    found = target_structures(grow_targets(labels, grid, SCHEME, PROTOCOLS["estro-eano-2023"], brain), brain)
    series = read_series(dicom_case["folders"]["flair"], grid)
    writer = write_rtstruct if kind == "rtstruct" else write_dicom_seg
    out = writer(labels, grid, series, SCHEME, tmp_path / f"{kind}.dcm", model="test-model", targets=found)
    n = len(structures(SCHEME))
    if kind == "rtstruct":
        ds = pydicom.dcmread(out)
        assert ds.ApprovalStatus == "UNAPPROVED"
        rois = list(ds.StructureSetROISequence)[n:]
        observations = list(ds.RTROIObservationsSequence)[n:]
        assert [r.ROIName for r in rois] == ["GTV", "CTV", "PTV", "Brain"]
        assert [o.RTROIInterpretedType for o in observations] == ["GTV", "CTV", "PTV", "ORGAN"]
        assert [r.ROIGenerationAlgorithm for r in rois] == ["AUTOMATIC", "SEMIAUTOMATIC", "SEMIAUTOMATIC", "AUTOMATIC"]
        assert rois[1].ROIDescription == "CTV = GTV + 15 mm, within the brain" and rois[2].ROIDescription == "PTV = CTV + 3 mm"
        assert [o.RTROIIdentificationCodeSequence[0].CodeValue for o in observations] == ["228791009", "228792002", "228793007", "12738006"]
        assert {o.RTROIInterpretedType for o in list(ds.RTROIObservationsSequence)[:n]} == {""}  # the labels: for review
        slice_of_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): series.files.index(p) for p in series.files}
        for roi, structure in zip(rois, found):
            dice = _dice(rasterise_roi(ds, int(roi.ROINumber), grid, slice_of_uid), structure.voxels)
            assert dice > 0.97, (structure.name, dice)
    else:
        seg = hd.seg.segread(out)
        items = list(seg.SegmentSequence)[n:]
        assert [d.SegmentLabel for d in items] == ["GTV", "CTV", "PTV", "Brain"]
        assert [d.SegmentAlgorithmType for d in items] == ["AUTOMATIC", "SEMIAUTOMATIC", "SEMIAUTOMATIC", "AUTOMATIC"]
        assert [d.SegmentedPropertyTypeCodeSequence[0].CodeValue for d in items] == ["228791009", "228792002", "228793007", "12738006"]
        assert items[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "309825002"
        uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in series.files]
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=list(range(n + 1, n + 5)))
        for i, structure in enumerate(found):
            assert np.array_equal(pixels[..., i].astype(bool), structure.voxels), structure.name
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(out) == []


@needs_data
def test_export_grows_targets_into_dicom_and_the_targets_folder(dicom_case, tmp_path, capsys):
    """magms export --targets: the label map's targets by a protocol, a margin changed by name, into the RT Structure
    Set, the SEG and --targets-dir (masks on the series' grid, targets.json); the series' own brain (skull-stripped)."""
    import json

    folder = dicom_case["folders"]["flair"]
    labels = sitk.GetImageFromArray(dicom_case["truth"])
    labels.CopyInformation(dicom_case["grid"])
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    argv = ["export", "--labels", str(tmp_path / "labels.nii.gz"), "--series", str(folder), "--rtstruct", str(tmp_path / "rt.dcm"),
            "--dicom-seg", str(tmp_path / "seg.dcm"), "--targets", "rtog-nrg", "--margin", "PTV1=5", "--targets-dir", str(tmp_path / "t")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    names = ["GTV1", "CTV1", "PTV1", "GTV2", "CTV2", "PTV2", "Brain"]
    assert captured.out.splitlines() == [str(tmp_path / "t" / f"{n}.nii.gz") for n in names] + [
        str(tmp_path / "t" / "targets.json"), str(tmp_path / "rt.dcm"), str(tmp_path / "seg.dcm")]
    assert "note: CTV1 = GTV1 + 20 mm, within the brain:" in captured.err
    summary = json.loads((tmp_path / "t" / "targets.json").read_text(encoding="utf-8"))
    assert summary["protocol"] == "rtog-nrg" and [s["name"] for s in summary["structures"]] == names
    assert summary["structures"][2]["description"] == "PTV1 = CTV1 + 5 mm"
    ptv1 = sitk.ReadImage(str(tmp_path / "t" / "PTV1.nii.gz"))
    assert ptv1.GetSize() == dicom_case["grid"].GetSize() and np.allclose(ptv1.GetOrigin(), dicom_case["grid"].GetOrigin())
    gtv1 = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "t" / "GTV1.nii.gz"))).astype(bool)
    assert np.array_equal(gtv1, dicom_case["truth"] > 0)  # GTV1: the whole tumour
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    assert [r.ROIName for r in ds.StructureSetROISequence][-7:] == names
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence][-7:] == ["GTV", "CTV", "PTV", "GTV", "CTV", "PTV", "ORGAN"]
    assert [d.SegmentLabel for d in hd.seg.segread(tmp_path / "seg.dcm").SegmentSequence][-7:] == names
    # existing target files are kept without --overwrite, and the refusal names them
    assert main(argv[:5] + ["--targets", "rtog-nrg", "--targets-dir", str(tmp_path / "t")]) == 2
    assert "GTV1.nii.gz, CTV1.nii.gz" in capsys.readouterr().err
    # --targets-from: the folder's structures (as drawn, e.g. edited in Slicer) exported as they are
    assert main(argv[:5] + ["--rtstruct", str(tmp_path / "rt2.dcm"), "--targets-from", str(tmp_path / "t" / "targets.json")]) == 0
    again = pydicom.dcmread(tmp_path / "rt2.dcm")
    assert [r.ROIName for r in again.StructureSetROISequence] == [r.ROIName for r in ds.StructureSetROISequence]
    assert [r.ROIDescription for r in again.StructureSetROISequence] == [r.ROIDescription for r in ds.StructureSetROISequence]
    assert [o.RTROIInterpretedType for o in again.RTROIObservationsSequence][-7:] == ["GTV", "CTV", "PTV", "GTV", "CTV", "PTV", "ORGAN"]
    assert main(argv[:5] + ["--rtstruct", str(tmp_path / "rt3.dcm"), "--targets-from", str(tmp_path / "t" / "targets.json"),
                            "--targets", "lgg"]) == 2
    assert "--targets-from exports targets drawn already: not with --targets" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--margin", "CTV=10"], "--margin without --targets: name a protocol (estro-eano-2023, rtog-nrg, lgg)"),
    (["--targets", "lgg"], "nothing to write: give --rtstruct FILE and/or --dicom-seg FILE (or --targets-dir)"),
    (["--targets", "lgg", "--targets-dir", "t", "--margin", "CTV2=3"], "protocol 'lgg' grows CTV, PTV, not 'CTV2'"),
    (["--targets", "lgg", "--targets-dir", "t", "--brain-mask", "missing.nii.gz"], "--brain-mask missing.nii.gz: no such file"),
])
def test_export_refuses_target_options_that_cannot_be_honoured(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--labels", "l.nii.gz", "--series", "s", *argv]) == 2
    assert message in capsys.readouterr().err


@needs_data
def test_an_unstripped_image_asks_for_a_brain_mask():
    from magms.targets import case_brain

    head = sitk.ReadImage(str(DATA / "mni_avg152" / "canonical_avg152T1.nii.gz"), sitk.sitkFloat32)
    with pytest.raises(ImageError, match=r"t1 \(avg152T1.nii.gz\) looks not skull-stripped .*give the brain with --brain-mask FILE, or"):
        case_brain({"t1": head}, {"t1": "avg152T1.nii.gz"}, hint=", or extract it with --preprocess strip")
    mask = DATA / "mni_avg152" / "toolbox_FieldMap_brainmask.nii.gz"
    brain, source = case_brain({"t1": head}, {"t1": "avg152T1.nii.gz"}, mask)
    assert source == f"--brain-mask {mask.name}" and 800 < brain.sum() * 8 / 1000 < 2200  # 2 mm voxels, ml


@needs_data
@pytest.mark.slow
def test_segment_grows_targets_from_the_models_labels(dicom_case, tmp_path, capsys):
    """The RT workflow with targets: DICOM series in, the built-in model, targets by ESTRO-EANO 2023 in the RTSTRUCT."""
    folders = dicom_case["folders"]
    rt = tmp_path / "rt.dcm"
    code = main(["segment", "--input", f"flair={folders['flair']}", "--input", f"t1c={folders['t1c']}", "--output",
                 str(tmp_path / "case.seg.nrrd"), "--rtstruct", str(rt), "--targets", "estro-eano-2023", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    ds = pydicom.dcmread(rt)
    rois = {r.ROIName: r for r in ds.StructureSetROISequence}
    assert rois["CTV"].ROIDescription == "CTV = GTV + 15 mm, within the brain" and rois["PTV"].ROIGenerationAlgorithm == "SEMIAUTOMATIC"
    assert rois["Brain"].ROIDescription == "Brain (the skull-stripped inputs)"
    assert ds.ApprovalStatus == "UNAPPROVED"
