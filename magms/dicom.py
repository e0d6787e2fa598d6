"""DICOM out for radiotherapy planning and archives: RT Structure Set and Segmentation objects.

A treatment-planning system takes an RT Structure Set (RTSTRUCT), an archive a DICOM Segmentation
(SEG). Both reference the DICOM series the label map was made on, slice by slice, so they can only
be made when the reference input is a DICOM series. Each object holds one structure per label
(necrotic core, oedema, enhancing tumour) and one per region (whole tumour, tumour core, enhancing
tumour), named and coloured as in the label scheme, with the scheme's SNOMED CT codes.

The objects are built by maintained libraries: ``rt-utils`` turns masks into RTSTRUCT contours,
``highdicom`` writes the SEG. MAGMS only checks that the label map lies on the series' grid, orders
the slices, fills the attributes ``rt-utils`` leaves empty (equipment, frame of reference, codes)
and writes atomically. Both libraries are optional: ``pip install 'magms-slicer[dicom]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

import magms
from magms.errors import ConfigError, ImageError
from magms.files import atomic_write
from magms.labels import Code, LabelScheme, Structure, structures

__all__ = [
    "DICOM_EXTRA",
    "DICOM_SUFFIXES",
    "DicomSeries",
    "check_dicom_output",
    "is_dicom_series",
    "read_series",
    "write_rtstruct",
    "write_dicom_seg",
]

DICOM_EXTRA = "pip install 'magms-slicer[dicom]'"
DICOM_SUFFIXES = (".dcm",)
MANUFACTURER = "MAGMS"
# pixels may differ in size by this much (mm) and still be square, slices lie this close (voxels) to the grid
_SQUARE_TOLERANCE_MM = 1e-4
_GRID_TOLERANCE = 1e-2


def _require(module: str) -> Any:
    """Import an optional DICOM library, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"DICOM export needs the package {module.replace('_', '-')} ({err}): {DICOM_EXTRA}") from None


def _numpy_aliases_for_highdicom(version: str, numpy: Any) -> None:
    """Give ``numpy`` 2 the alias ``float_`` (= ``float64``) that highdicom before 0.23 names.

    highdicom 0.22 is the newest release for pydicom 2 (0.23 needs pydicom 3), and 3D Slicer 5.8 and
    5.10 ship pydicom 2.4.4, which the Slicer module keeps installed: so Slicer 5.10 (numpy 2.0)
    gets highdicom 0.22, whose SEG constructor checks ``dtype in (np.float_, ...)``, a name numpy 2
    removed (its only use of one). Only this child process's numpy module gets the alias.
    """
    release = tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:2])
    if release < (0, 23) and not hasattr(numpy, "float_"):
        numpy.float_ = numpy.float64


@dataclasses.dataclass(frozen=True)
class DicomSeries:
    """The headers of one DICOM image series, ordered as the slices of a grid.

    Attributes:
        source: the folder (or first file) it was read from, for messages.
        files: one file per slice, ``files[k]`` is slice ``k`` of the grid.
        datasets: their headers (no pixel data), in the same order.
    """

    source: Path
    files: tuple[Path, ...]
    datasets: tuple[Any, ...]

    @property
    def first(self) -> Any:
        return self.datasets[0]


def _series_files(source: Path | Sequence[Path]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise ImageError(f"{folder}: not a DICOM series folder")
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return [Path(p) for p in source]


def is_dicom_series(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding DICOM files (checked by their header, not their names)."""
    folder = Path(path)
    if not folder.is_dir():
        return False
    for p in sorted(folder.iterdir()):
        if p.is_file():
            with open(p, "rb") as f:
                f.seek(128)
                if f.read(4) == b"DICM":
                    return True
    return False


def read_series(source: Path | Sequence[Path], grid: sitk.Image) -> DicomSeries:
    """Read the headers of the DICOM image series in ``source`` and order them as ``grid``'s slices.

    Args:
        source: a folder holding one series, or its files.
        grid: the image whose voxels the label map has (read from that series, or on its grid).
    Raises:
        ImageError: no DICOM images, more than one series, non-image files, or a slice that does
            not lie on ``grid`` (other orientation, size or position); the message names the file.
    """
    pydicom = _require("pydicom")
    files = _series_files(source)
    where = Path(source) if isinstance(source, (str, os.PathLike)) else (files[0].parent if files else Path("."))
    headers = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue  # DICOMDIR-less folders hold other files too
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise ImageError(f"{path}: not an image slice (no Image Position/Orientation (Patient))")
        headers.append((path, ds))
    if not headers:
        raise ImageError(f"{where}: no DICOM image files")
    uids = {str(ds.SeriesInstanceUID) for _, ds in headers}
    if len(uids) > 1:
        raise ImageError(f"{where}: holds {len(uids)} DICOM series; give the files of one series")
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    size = grid.GetSize()
    by_slice: dict[int, tuple[Path, Any]] = {}
    for path, ds in headers:
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        if not np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-3):
            raise ImageError(f"{path}: slice orientation {orientation.round(4).tolist()} differs from the label map's grid")
        if (int(ds.Columns), int(ds.Rows)) != size[:2]:
            raise ImageError(f"{path}: {ds.Columns}x{ds.Rows} pixels, the label map's grid has {size[0]}x{size[1]}")
        index = np.array(grid.TransformPhysicalPointToContinuousIndex([float(v) for v in ds.ImagePositionPatient]))
        k = int(round(index[2]))
        if np.abs(index - (0, 0, k)).max() > _GRID_TOLERANCE or not 0 <= k < size[2]:
            raise ImageError(f"{path}: slice position {[float(v) for v in ds.ImagePositionPatient]} is not on the label map's grid")
        if k in by_slice:
            raise ImageError(f"{path}: same slice position as {by_slice[k][0]}")
        by_slice[k] = (path, ds)
    if len(by_slice) != size[2]:
        missing = sorted(set(range(size[2])) - set(by_slice))
        raise ImageError(f"{where}: {len(by_slice)} slices, the label map has {size[2]} (missing slice {missing[0]})")
    ordered = [by_slice[k] for k in range(size[2])]
    return DicomSeries(where, tuple(p for p, _ in ordered), tuple(ds for _, ds in ordered))


def _check_labels(labels: np.ndarray, grid: sitk.Image, scheme: LabelScheme) -> None:
    if labels.shape != sitk.GetArrayViewFromImage(grid).shape:
        raise ValueError(f"labels shape {labels.shape} does not fit the grid {grid.GetSize()[::-1]}")
    unknown = scheme.unknown_values(labels)
    if unknown:
        raise ValueError(f"labels hold values {unknown} not in scheme {scheme.key!r}")


def check_dicom_output(path: Path, overwrite: bool, flag: str = "") -> None:
    """Check a DICOM output path before any work is done.

    Raises:
        ConfigError: not a ``.dcm`` file, a missing folder, or an existing file without ``overwrite``.
    """
    where = f"{flag} {path}".strip()
    if path.suffix.lower() not in DICOM_SUFFIXES:
        raise ConfigError(f"{where}: a DICOM object is written as a .dcm file")
    if not path.parent.is_dir():
        raise ConfigError(f"{where}: the folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise ConfigError(f"{where}: exists already (use --overwrite to replace it)")


def _save(dataset: Any, path: Path) -> None:
    import pydicom

    # a DICOM file with preamble and file meta: pydicom 3 names it enforce_file_format, pydicom 2
    # (the one Slicer 5.8's Python 3.9 gets) write_like_original=False
    if int(pydicom.__version__.split(".")[0]) >= 3:
        atomic_write(path, lambda tmp: dataset.save_as(tmp, enforce_file_format=True), suffix=".dcm")
    else:
        atomic_write(path, lambda tmp: dataset.save_as(tmp, write_like_original=False), suffix=".dcm")


def _code_item(code: Code) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme, code.meaning
    return item


# ---------------------------------------------------------------------------------------------
# RT Structure Set


@contextlib.contextmanager
def _series_folder(series: DicomSeries):
    """A folder holding exactly the series' files, as rt-utils reads a folder (and its subfolders)."""
    folder = series.files[0].parent
    if {p.resolve() for p in folder.rglob("*") if p.is_file()} <= {p.resolve() for p in series.files}:
        yield folder
        return
    tmp = Path(tempfile.mkdtemp(prefix="magms-series-"))
    try:
        for i, path in enumerate(series.files):
            shutil.copyfile(path, tmp / f"{i:05d}.dcm")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_rt_utils():
    """rt-utils prints to stdout (where the CLI's results go) and sets attributes pydicom 3 deprecates:
    its prints go to stderr, the deprecation notices nowhere."""
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        pydicom_log.setLevel(level)


def write_rtstruct(
    labels: np.ndarray, grid: sitk.Image, series: DicomSeries, scheme: LabelScheme, path: str | os.PathLike[str],
    model: str = "", overwrite: bool = False, targets: Sequence[Structure] = (),
) -> Path:
    """Write an RT Structure Set referencing ``series``: one ROI per label and per region, then one per target.

    Each ROI has its generation algorithm (``AUTOMATIC``, a target grown by a margin ``SEMIAUTOMATIC``)
    and description; targets and the brain their RT ROI Interpreted Type. The structure set is marked
    ``UNAPPROVED`` (Approval module): it is for review, not yet approved for planning.

    Contours are drawn by ``rt-utils`` through the centres of each slice's boundary pixels; holes
    are separate inner contours. Empty structures are kept, without contours, so every structure
    set of a scheme lists the same ROIs.

    Args:
        labels: (z, y, x) label values of ``scheme`` on ``grid``.
        grid: the image the labels are on; ``series`` was ordered on it by :func:`read_series`.
        series: the referenced image series.
        scheme: label scheme of the values.
        path: the ``.dcm`` file to write.
        model: the model's name, recorded as the equipment's model name and in the description.
        overwrite: replace an existing file.
        targets: more structures with their own voxels on ``grid`` (:func:`magms.targets.target_structures`).
    Raises:
        ConfigError: bad output path, or rt-utils missing.
        ImageError: pixels that are not square (rt-utils would scale one axis wrongly).
    """
    out = Path(path)
    check_dicom_output(out, overwrite)
    _check_labels(labels, grid, scheme)
    rows, columns = (float(v) for v in series.first.PixelSpacing)
    if abs(rows - columns) > _SQUARE_TOLERANCE_MM:
        raise ImageError(
            f"{series.source}: pixels are {rows} x {columns} mm; an RT Structure Set is only written for square pixels "
            "(a DICOM SEG has no such limit)"
        )
    rt_utils = _require("rt_utils")
    sop_of_slice = {str(ds.SOPInstanceUID): k for k, ds in enumerate(series.datasets)}
    with _series_folder(series) as folder, _quiet_rt_utils():
        rtstruct = rt_utils.RTStructBuilder.create_new(str(folder))
        order = [sop_of_slice.get(str(ds.SOPInstanceUID)) for ds in rtstruct.series_data]
        if None in order or sorted(order) != list(range(len(series.datasets))):
            raise ImageError(f"{series.source}: rt-utils read other images than the series' {len(series.datasets)} slices")
        found = _with_targets(scheme, targets, labels.shape)
        for structure in found:
            mask = np.moveaxis(structure.mask(labels)[order], 0, -1)  # rt-utils takes (rows, columns, slices), its order
            rtstruct.add_roi(mask=mask, color=list(structure.color), name=structure.name,
                             description=structure.description or structure.key, roi_generation_algorithm=structure.algorithm)
    ds = rtstruct.ds
    _complete_rtstruct(ds, series.first, found, scheme, model)
    _save(ds, out)
    return out


def _with_targets(scheme: LabelScheme, targets: Sequence[Structure], shape: tuple[int, ...]) -> tuple[Structure, ...]:
    """The scheme's structures, then the targets; a target's voxels must lie on the labels' grid."""
    for target in targets:
        if target.voxels is None or target.voxels.shape != shape:
            raise ConfigError(f"structure {target.name!r}: its voxels are not on the label map's grid")
    return (*structures(scheme), *targets)


def _complete_rtstruct(ds: Any, reference: Any, found: Sequence[Structure], scheme: LabelScheme, model: str) -> None:
    """The attributes rt-utils leaves out or fills with its own names: equipment, the frame of
    reference and study attributes of the referenced series, approval, the structures' types and codes."""
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.valuerep import format_number_as_ds

    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = MANUFACTURER, model or "MAGMS", magms.__version__
    if "InstitutionName" in ds:
        del ds.InstitutionName
    ds.SeriesDescription = f"MAGMS {model}".strip()[:64]
    ds.StructureSetLabel = "MAGMS"
    ds.StructureSetName = (model or scheme.name)[:64]
    ds.StructureSetDescription = f"Automatic contours by MAGMS {magms.__version__}, {scheme.name} labels; for review"
    ds.InstanceNumber = 1
    ds.OperatorsName = ""
    for keyword in ("AccessionNumber", "ReferringPhysicianName", "StudyID", "FrameOfReferenceUID", "PositionReferenceIndicator"):
        setattr(ds, keyword, reference.get(keyword, ""))
    for contour in ds.ROIContourSequence:
        if "ContourSequence" in contour and len(contour.ContourSequence) == 0:
            del contour.ContourSequence  # an empty structure has no contours (the sequence is 1-n where present)
        for item in contour.get("ContourSequence", []):
            # rt-utils writes full float reprs; a DS value is at most 16 characters (slice positions off the whole mm)
            item.ContourData = [format_number_as_ds(float(v)) for v in item.ContourData]
    ds.ApprovalStatus = "UNAPPROVED"  # Approval module: for review; a planner approves it in the planning system
    for observation, structure in zip(ds.RTROIObservationsSequence, found):
        if "ROIObservationDescription" in observation:
            del observation.ROIObservationDescription  # rt-utils' own display settings
        observation.ROIObservationLabel = structure.key[:16]
        observation.RTROIInterpretedType = structure.interpreted_type
        observation.RTROIIdentificationCodeSequence = DicomSequence([_code_item(structure.type)])
    for roi, structure in zip(ds.StructureSetROISequence, found):
        roi.ROIDescription = (structure.description or structure.key)[:64]


# ---------------------------------------------------------------------------------------------
# Segmentation


def _segment_descriptions(hd: Any, found: Sequence[Structure], model: str) -> list:
    """highdicom's description of each structure: its name, coded concepts and colour, and the algorithm
    (MAGMS; automatic, or semiautomatic for a target grown by a margin)."""
    from pydicom.sr.codedict import codes

    def concept(code: Code) -> Any:
        return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)

    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"MAGMS {model}".strip()[:64], family=codes.cid7162.ArtificialIntelligence, version=magms.__version__
    )
    # highdicom 0.23 added display colours; Python 3.9 (Slicer 5.8) gets 0.22, whose segments go without
    coloured = hasattr(hd.color.CIELabColor, "from_rgb")
    return [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=s.name[:64],
            segmented_property_category=concept(s.category),
            segmented_property_type=concept(s.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues[s.algorithm],
            algorithm_identification=algorithm,
            tracking_id=s.key,
            tracking_uid=hd.UID(),
            anatomic_regions=[concept(s.anatomic_region)] if s.anatomic_region is not None else None,
            **({"display_color": hd.color.CIELabColor.from_rgb(*s.color)} if coloured else {}),
        )
        for i, s in enumerate(found)
    ]


def write_dicom_seg(
    labels: np.ndarray, grid: sitk.Image, series: DicomSeries, scheme: LabelScheme, path: str | os.PathLike[str],
    model: str = "", overwrite: bool = False, targets: Sequence[Structure] = (),
) -> Path:
    """Write a binary DICOM Segmentation referencing ``series``: one segment per label and per
    region (they overlap), with the scheme's category, type and anatomic-region codes and colours;
    then one per target (GTV, CTV, PTV: DICOM CID 9534 codes; the brain), as for the RT Structure Set.

    Args: as :func:`write_rtstruct`.
    Raises:
        ConfigError: bad output path, or highdicom missing.
    """
    out = Path(path)
    check_dicom_output(out, overwrite)
    _check_labels(labels, grid, scheme)
    hd = _require("highdicom")
    _numpy_aliases_for_highdicom(hd.__version__, np)
    found = _with_targets(scheme, targets, labels.shape)
    descriptions = _segment_descriptions(hd, found, model)
    masks = np.stack([s.mask(labels) for s in found], axis=-1).astype(np.uint8)  # (slices, rows, columns, segments)
    seg = hd.seg.Segmentation(
        source_images=list(series.datasets),
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(series.first.get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model or "MAGMS",
        software_versions=magms.__version__,
        device_serial_number="none",
        series_description=f"MAGMS {model}".strip()[:64],
        content_label="MAGMS",
        content_description=f"Automatic segmentation by MAGMS {magms.__version__}, {scheme.name} labels; for review"[:64],
        omit_empty_frames=False,
    )
    _save(seg, out)
    return out
