"""Reading, checking and writing images: the one place that knows file formats and geometry.

Inputs are NIfTI, NRRD, MHA/MHD files or a DICOM series folder, read with SimpleITK. Every
check names the file and the fault. Outputs (labelmaps, a Slicer ``.seg.nrrd`` with segment
names, colours and terminology, probability maps) are written atomically and never replace an
existing file unless asked to.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from magms.data.geometry import box_overlap_fraction
from magms.errors import ConfigError, ImageError
from magms.files import atomic_write
from magms.labels import LabelScheme

__all__ = [
    "IMAGE_SUFFIXES",
    "LABELMAP_SUFFIXES",
    "PROBABILITY_SUFFIXES",
    "MAP_SUFFIXES",
    "is_image_path",
    "read_image",
    "read_labelmap",
    "volume_ref",
    "split_volume_ref",
    "check_image",
    "same_grid",
    "overlap_fraction",
    "resample_like",
    "write_labelmap",
    "write_probabilities",
    "write_map",
    "check_output_path",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
LABELMAP_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")
PROBABILITY_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
#: Scalar maps on the reference grid (the review's disagreement count): the plain volume formats.
MAP_SUFFIXES = PROBABILITY_SUFFIXES


def _suffix(path: Path, choices: Sequence[str]) -> str | None:
    name = path.name.lower()
    return next((s for s in choices if name.endswith(s)), None)


def is_image_path(path: Path) -> bool:
    """True for a file with an image suffix (not a ``.seg.nrrd``) or a folder."""
    return path.is_dir() or (_suffix(path, IMAGE_SUFFIXES) is not None and not path.name.lower().endswith(".seg.nrrd"))


# One volume of a 4-D file (an MSD image holds every modality of a case) is addressed as
# ``file.nii.gz#k``: a plain path that survives CSV manifests, JSON and process boundaries.
_VOLUME_REF = re.compile(r"^(?P<file>.+)#(?P<index>\d+)$")


def volume_ref(path: str | os.PathLike[str], index: int) -> Path:
    """The address of volume ``index`` (0-based) of the 4-D image ``path``."""
    return Path(f"{os.fspath(path)}#{index}")


def split_volume_ref(path: str | os.PathLike[str]) -> tuple[Path, int | None]:
    """``file.nii.gz#k`` -> (file, k); any other path -> (path, None)."""
    match = _VOLUME_REF.match(os.fspath(path))
    if match and _suffix(Path(match["file"]), IMAGE_SUFFIXES) is not None:
        return Path(match["file"]), int(match["index"])
    return Path(path), None


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ImageError(f"{folder}: a folder without a DICOM series (give an image file or a DICOM series folder)")
    if len(series) > 1:
        raise ImageError(f"{folder}: holds {len(series)} DICOM series; give the folder of one series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


def read_image(path: str | os.PathLike[str]) -> sitk.Image:
    """Read one 3-D image (file, DICOM series folder, or ``file#k``: volume k of a 4-D file) as
    float32 and check it (:func:`check_image`).

    Raises:
        ImageError: missing, unreadable, of an unknown format, or failing :func:`check_image`.
    """
    p, index = split_volume_ref(path)
    if index is not None:
        return _read_volume_of_4d(p, index)
    if not p.exists():
        raise ImageError(f"{p}: no such file or folder")
    if p.is_dir():
        img = _read_dicom_series(p)
    else:
        if _suffix(p, IMAGE_SUFFIXES) is None:
            raise ImageError(f"{p}: unknown image format (expected {', '.join(IMAGE_SUFFIXES)} or a DICOM folder)")
        try:
            img = sitk.ReadImage(str(p))
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
            raise ImageError(f"{p}: cannot be read as an image ({reason})") from err
    _check_nifti_finite(p)
    check_image(img, p.name)
    return sitk.Cast(img, sitk.sitkFloat32)


def read_labelmap(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a 3-D label map (file or DICOM series folder) as integers; unlike :func:`read_image`, an
    empty (constant) map is fine.

    Raises:
        ImageError: missing, unreadable, not 3-D, or with non-integer values.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file or folder")
    try:
        img = _read_dicom_series(p) if p.is_dir() else sitk.ReadImage(str(p))
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise ImageError(f"{p}: cannot be read as an image ({detail})") from err
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{p.name}: a label map must be a 3-D image with one value per voxel")
    arr = sitk.GetArrayViewFromImage(img)
    if not np.allclose(arr, np.round(arr)):
        raise ImageError(f"{p.name}: label map with non-integer values")
    if img.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkInt32):
        return sitk.Cast(img, sitk.sitkInt32)
    return img


def _check_nifti_finite(p: Path) -> None:
    # ITK's NIfTI reader turns NaN into 0, which would hide a broken file: look at the stored values.
    if not p.name.lower().endswith((".nii", ".nii.gz")) or not _nifti_stores_floats(p):
        return
    import nibabel  # only now: its import alone takes 0.3 s

    nii = nibabel.load(str(p))
    if nii.header.get_data_dtype().kind != "f":
        return
    bad = int((~np.isfinite(np.asanyarray(nii.dataobj))).sum())
    if bad:
        raise ImageError(f"{p.name}: {bad} voxels are NaN or infinite")


def _nifti_stores_floats(p: Path) -> bool:
    """Whether a NIfTI-1 or -2 file's header gives a floating-point data type (True when unsure)."""
    import gzip
    import struct

    try:
        with (gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")) as f:
            header = f.read(540)
    except (OSError, EOFError):
        return True
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            datatype = struct.unpack(order + "h", header[70:72])[0]
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype = struct.unpack(order + "h", header[12:14])[0]
            break
    else:
        return True
    # float32, float64, float128, complex64, complex128, complex256
    return datatype in (16, 64, 1536, 32, 1792, 2048)


def _read_volume_of_4d(p: Path, index: int) -> sitk.Image:
    if not p.is_file():
        raise ImageError(f"{p}: no such file")
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.ReadImageInformation()
        size = list(reader.GetSize())
    except RuntimeError as err:
        raise ImageError(f"{p}: cannot be read as an image") from err
    if len(size) != 4:
        raise ImageError(f"{p}: {len(size)}-D image, but volume {index} of a 4-D image was asked for")
    if index >= size[3]:
        raise ImageError(f"{p}: holds {size[3]} volumes, there is no volume {index}")
    # Read the one volume only: 4-D MSD images are ~4x the size of what is used.
    reader.SetExtractIndex([0, 0, 0, index])
    reader.SetExtractSize(size[:3] + [0])
    img = reader.Execute()
    check_image(img, f"{p.name}#{index}")
    return sitk.Cast(img, sitk.sitkFloat32)


def check_image(img: sitk.Image, name: str) -> None:
    """Refuse images a 3-D segmentation network cannot use.

    Raises:
        ImageError: not 3-D (2-D, a single slice, 4-D), vector-valued, empty, NaN or infinite
            values, or constant.
    """
    dim = img.GetDimension()
    if dim != 3:
        extra = f" ({img.GetSize()[3]} volumes; extract one)" if dim == 4 else ""
        raise ImageError(f"{name}: {dim}-D image{extra}, a 3-D volume is expected")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{name}: {img.GetNumberOfComponentsPerPixel()} components per voxel, a scalar volume is expected")
    size = img.GetSize()
    if 0 in size:
        raise ImageError(f"{name}: empty image (size {size})")
    if sorted(size)[0] == 1:
        raise ImageError(f"{name}: a single slice (size {size}), a 3-D volume is expected")
    arr = sitk.GetArrayViewFromImage(img)
    finite = np.isfinite(arr)
    if not finite.all():
        raise ImageError(f"{name}: {int((~finite).sum())} voxels are NaN or infinite")
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise ImageError(f"{name}: constant image (every voxel is {lo:g})")


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-3) -> bool:
    """Same size, and spacing, origin and direction equal within ``tolerance`` (relative to the spacing)."""
    if a.GetSize() != b.GetSize():
        return False
    spacing = np.asarray(a.GetSpacing())
    return (
        np.allclose(spacing, b.GetSpacing(), rtol=tolerance, atol=0)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance * spacing.min())
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def _world_box(img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    # axis-aligned world box of the voxel corners (half a voxel beyond the centres)
    size = np.asarray(img.GetSize(), dtype=float)
    corners = np.array([[c0, c1, c2] for c0 in (-0.5, size[0] - 0.5) for c1 in (-0.5, size[1] - 0.5) for c2 in (-0.5, size[2] - 0.5)])
    points = np.array([img.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in corners])
    return points.min(axis=0), points.max(axis=0)


def overlap_fraction(a: sitk.Image, b: sitk.Image) -> float:
    """Fraction of ``b``'s world bounding box that lies inside ``a``'s (0: disjoint)."""
    return box_overlap_fraction(*_world_box(a), *_world_box(b))


def resample_like(img: sitk.Image, reference: sitk.Image, interpolator: int = sitk.sitkLinear,
                  transform: sitk.Transform | None = None) -> sitk.Image:
    """Resample ``img`` onto ``reference``'s grid (zero outside ``img``); ``transform`` maps the
    reference's world points to ``img``'s (identity: as the headers place them)."""
    return sitk.Resample(img, reference, transform or sitk.Transform(), interpolator, 0.0, img.GetPixelID())


def check_output_path(path: Path, overwrite: bool, suffixes: Sequence[str] = LABELMAP_SUFFIXES) -> str:
    """Check an output path before any work is done; returns its suffix.

    Raises:
        ConfigError: unknown suffix, missing parent folder, or an existing file without ``overwrite``.
    """
    suffix = _suffix(path, suffixes)
    if suffix is None:
        raise ConfigError(f"{path}: unknown output format (use one of {', '.join(suffixes)})")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: exists already (use --overwrite to replace it)")
    return suffix


def _write_atomic(img: sitk.Image, path: Path, suffix: str, compress: bool = True) -> None:
    # the temporary file keeps the ending: SimpleITK picks the format by it
    atomic_write(path, lambda tmp: sitk.WriteImage(img, str(tmp), compress), suffix=suffix)


def _segmentation_metadata(img: sitk.Image, labels: np.ndarray, scheme: LabelScheme) -> None:
    # the fields of Slicer's vtkMRMLSegmentationStorageNode, one segment per non-background label
    img.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    img.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    img.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    size = labels.shape[::-1]  # (x, y, z)
    for i, label in enumerate(candidate for candidate in scheme.labels if candidate.value != 0):
        where = np.argwhere(labels == label.value)
        if len(where):
            lo, hi = where.min(axis=0)[::-1], where.max(axis=0)[::-1]
            extent = " ".join(f"{a} {b}" for a, b in zip(lo, hi))
        else:
            extent = " ".join(f"0 {n - 1}" for n in size)
        prefix = f"Segment{i}_"
        img.SetMetaData(prefix + "ID", f"Segment_{label.value}")
        img.SetMetaData(prefix + "Name", label.name)
        img.SetMetaData(prefix + "NameAutoGenerated", "0")
        img.SetMetaData(prefix + "Color", " ".join(f"{c / 255:.6g}" for c in label.color))
        img.SetMetaData(prefix + "ColorAutoGenerated", "0")
        img.SetMetaData(prefix + "LabelValue", str(label.value))
        img.SetMetaData(prefix + "Layer", "0")
        img.SetMetaData(prefix + "Extent", extent)
        img.SetMetaData(prefix + "Tags", f"TerminologyEntry:{scheme.slicer_terminology(label.value)}|")


def _check_fits(array: np.ndarray, reference: sitk.Image, what: str) -> None:
    if array.shape != sitk.GetArrayViewFromImage(reference).shape:
        raise ValueError(f"{what} shape {array.shape} does not fit the reference grid {reference.GetSize()[::-1]}")


def write_labelmap(labels: np.ndarray, reference: sitk.Image, path: str | os.PathLike[str], scheme: LabelScheme,
                   overwrite: bool = False) -> None:
    """Write a labelmap on ``reference``'s grid; ``.seg.nrrd`` also carries the segments' names,
    colours and terminology for Slicer.

    Args:
        labels: (z, y, x) label values of ``scheme`` (SimpleITK array order).
        reference: the image whose grid the labels are on.
        path: ``.seg.nrrd``, ``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha``.
        scheme: label scheme of the values.
        overwrite: replace an existing file.
    Raises:
        ConfigError: see :func:`check_output_path`.
        ValueError: ``labels`` does not fit ``reference`` or holds values outside ``scheme``.
    """
    out = Path(path)
    suffix = check_output_path(out, overwrite)
    _check_fits(labels, reference, "labels")
    unknown = scheme.unknown_values(labels)
    if unknown:
        raise ValueError(f"labels hold values {unknown} not in scheme {scheme.key!r}")
    img = sitk.GetImageFromArray(labels.astype(np.uint8 if max(scheme.values) < 256 else np.uint16, copy=False))
    img.CopyInformation(reference)
    if suffix == ".seg.nrrd":
        _segmentation_metadata(img, labels, scheme)
    _write_atomic(img, out, suffix)


def write_probabilities(probabilities: np.ndarray, reference: sitk.Image, path: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Write class probabilities (C, z, y, x) on ``reference``'s grid as a vector image, one component per class."""
    out = Path(path)
    suffix = check_output_path(out, overwrite, PROBABILITY_SUFFIXES)
    img = sitk.GetImageFromArray(np.moveaxis(probabilities.astype(np.float32), 0, -1), isVector=True)
    img.CopyInformation(reference)
    _write_atomic(img, out, suffix)


def write_map(values: np.ndarray, reference: sitk.Image, path: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Write a scalar map (z, y, x) on ``reference``'s grid, its dtype kept (the review's uint8 counts).

    Raises:
        ConfigError: see :func:`check_output_path` (suffixes :data:`MAP_SUFFIXES`).
        ValueError: ``values`` does not fit ``reference``.
    """
    out = Path(path)
    suffix = check_output_path(out, overwrite, MAP_SUFFIXES)
    _check_fits(values, reference, "map")
    img = sitk.GetImageFromArray(np.ascontiguousarray(values))
    img.CopyInformation(reference)
    _write_atomic(img, out, suffix)
