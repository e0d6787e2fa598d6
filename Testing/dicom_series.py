"""Write a real image as a DICOM MR series, for the DICOM tests and the README's RT example.

The shared cases are NIfTI; a treatment-planning workflow starts from a DICOM series. This writes
one MR Image Storage file per slice with pydicom: the patient, general study, general series, frame
of reference, general equipment, general image, image plane, image pixel, MR image and SOP common
modules, fresh UIDs, and the image's own orientation, positions and spacing (so the series is on
exactly the image's grid). Test support only: MAGMS itself never writes image series.

    python Testing/dicom_series.py IMAGE.nii.gz OUT_FOLDER [--description "FLAIR"]
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["write_mr_series", "write_ct_series"]

#: A CT's stored values are HU + 1024 (unsigned), with the rescale that undoes it.
CT_INTERCEPT = -1024


def _ds(value: float) -> str:
    # DS values are at most 16 characters
    return f"{value:.10g}"[:16]


def write_mr_series(
    image: sitk.Image,
    folder: Path,
    description: str = "MR",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    patient_id: str = "MAGMS-TEST",
    series_number: int = 1,
    modality: str = "MR",
) -> list[Path]:
    """Write ``image`` (3-D, integer-valued intensities) as one DICOM file per slice in ``folder``
    (``modality="CT"``: CT Image Storage, ``image`` in HU, stored as HU + 1024 with its rescale).

    Returns:
        the files, in slice order (k = 0, 1, ...).
    """
    folder.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    if modality == "CT":
        array = np.clip(array, CT_INTERCEPT, 3000) - CT_INTERCEPT
    storage = CTImageStorage if modality == "CT" else MRImageStorage
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 65535:
        raise ValueError(f"intensities {low}..{high} do not fit unsigned 16 bits")
    pixels = np.round(array).astype(np.uint16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    now = datetime.datetime.now()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    series_uid = generate_uid()
    files = []
    for k in range(pixels.shape[0]):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = storage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{k + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = storage, sop_uid
        ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        # patient and study
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^MAGMS", patient_id, "", "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyDescription = "1", "", "", "MAGMS test study"
        # series, frame of reference, equipment
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid, series_number
        ds.SeriesDescription, ds.PatientPosition, ds.BodyPartExamined = description, "HFS", "HEAD"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer = "MAGMS test data"
        # image
        ds.InstanceNumber, ds.ImageType = k + 1, ["DERIVED", "PRIMARY", "OTHER"]
        ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k)))
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (y), column spacing (x)
        ds.SliceThickness = _ds(spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.SliceLocation = _ds(float(np.dot(position, direction[:, 2])))
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels[k].tobytes()
        if modality == "CT":  # CT image module
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(CT_INTERCEPT), "1", "HU"
            ds.KVP, ds.AcquisitionNumber = "120", 1
        else:  # MR image module
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "3D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "", "", ""
            ds.MagneticFieldStrength = ""
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def write_ct_series(image: sitk.Image, folder: Path, **kwargs) -> list[Path]:
    """:func:`write_mr_series` of a CT in HU."""
    return write_mr_series(image, folder, modality="CT", **{"description": "CT", **kwargs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--description", default="MR")
    args = parser.parse_args()
    files = write_mr_series(sitk.ReadImage(str(args.image)), args.out, args.description)
    print(f"{len(files)} files in {args.out}")


if __name__ == "__main__":
    main()
