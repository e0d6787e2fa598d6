"""MAGMS Segmenter logic: MRML only, no Qt, importable without the Slicer application.

One module per concern, all reachable from here: ``mapping`` (the slot mapping and a run's options),
``results`` (the new segmentation nodes), ``disagreement`` (the compare-subsets heat map), ``jobs``
(the segmentation child job), ``dicomexport`` (Export to DICOM and its child job). The child-job base
both modules use is :class:`MAGMSCommonLib.childjob.ChildJob`.

It is tested against the real MRML of the ``slicer-core`` package. The scene is passed in, never
taken from ``slicer.mrmlScene``; what only the application has (Slicer's DICOM database) is passed
in as a callable. The network runs in a separate ``magms segment`` process, the DICOM export in a
``magms export`` process (:class:`~MAGMSCommonLib.runner.ProcessRunner`): Slicer never imports
torch, pydicom, highdicom or rt-utils. The scene is touched only when a process has succeeded, and
then only by adding NEW nodes (segmentations; with compare subsets also the disagreement map, shown
as the slice views' foreground; a run without one takes an earlier map out of the views). The DICOM
export reads the scene and writes files only.
"""

from __future__ import annotations

from .dicomexport import (  # noqa: F401
    DICOM_UIDS_ATTRIBUTE,
    EXPORT_FORMATS,
    EXPORT_KINDS,
    ExportJob,
    InstanceFiles,
    InstancePositions,
    acquisitionTransform,
    dicomSeriesFiles,
    exportPaths,
    exportProblem,
    exportReference,
    noDicomDatabase,
    segmentLabelValues,
    slicePositionProblem,
    writeLabelsForExport,
)
from .disagreement import (  # noqa: F401
    DISAGREEMENT_OPACITY,
    DISAGREEMENT_ROLE,
    FALLBACK_HEAT_NAME,
    HEAT_COLOR_NODE_IDS,
    defaultReportsFolder,
    disagreementWindow,
    heatColorNode,
    hideDisagreement,
    importDisagreement,
    showDisagreement,
)
from .jobs import (  # noqa: F401
    SegmentationJob,
)
from .mapping import (  # noqa: F401
    SLOT_REFERENCE_ROLE,
    compareOptions,
    describeBundle,
    readSlotMapping,
    segmentOptions,
    volumeSkullCheck,
    writeSlotMapping,
)
from .results import (  # noqa: F401
    importSegmentation,
    segmentationName,
)

__all__ = [
    "readSlotMapping",
    "writeSlotMapping",
    "segmentOptions",
    "compareOptions",
    "volumeSkullCheck",
    "importSegmentation",
    "segmentationName",
    "describeBundle",
    "defaultReportsFolder",
    "importDisagreement",
    "heatColorNode",
    "showDisagreement",
    "hideDisagreement",
    "disagreementWindow",
    "SegmentationJob",
    "InstanceFiles",
    "noDicomDatabase",
    "EXPORT_FORMATS",
    "acquisitionTransform",
    "exportReference",
    "exportProblem",
    "slicePositionProblem",
    "dicomSeriesFiles",
    "segmentLabelValues",
    "writeLabelsForExport",
    "exportPaths",
    "ExportJob",
]
