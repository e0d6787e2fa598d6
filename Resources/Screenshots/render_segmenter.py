"""Render ``segmenter.png``: the MAGMS Segmenter logic run on a real case, drawn with matplotlib.

The Slicer application cannot run on a headless server, so this uses the module's own logic
(``MAGMSSegmenterLib``) on a real MRML scene from ``slicer-core``: the volumes are loaded under
their file names, the slots guessed, ``magms segment`` run in a child process, and the new
segmentation node drawn over the reference volume with the node's own segment names and colours.

    python Resources/Screenshots/render_segmenter.py --model BUNDLE [--case FOLDER] [--out PNG]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# as in Slicer: the shared library (MAGMSCommon/) and the module folder on sys.path
sys.path[:0] = [str(REPO / "MAGMSCommon"), str(REPO / "MAGMSSegmenter")]
from magms.bundle import read_bundle_info  # noqa: E402
from magms.protocol import EngineChoice  # noqa: E402
from MAGMSCommonLib import volumes  # noqa: E402
from MAGMSSegmenterLib import logic  # noqa: E402

DATA = Path(os.environ.get("MAGMS_TEST_DATA", REPO.parent / "shared" / "data"))


def load(scene, path: Path):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.name.split(".")[0])
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        sys.exit(f"{path}: cannot be read")
    return node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--case", type=Path, default=DATA / "brats_unlabelled" / "BraTS-GLI-00001-000")
    parser.add_argument("--out", type=Path, default=REPO / "Resources" / "Screenshots" / "segmenter.png")
    args = parser.parse_args()

    scene = slicer.vtkMRMLScene()
    for path in sorted(args.case.glob("*.nii.gz")):
        load(scene, path)
    info = read_bundle_info(args.model)
    mapping, guesses = volumes.guessMapping(scene, info.slots)
    job = logic.SegmentationJob(scene)
    created, failed = [], []
    job.finished.connect(created.extend)
    job.failed.connect(failed.append)
    job.start(mapping, args.model, EngineChoice(device="cpu"), modelName=args.model.name)
    job.wait()
    if failed:
        sys.exit(failed[0])
    node = created[0]
    reference = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
    image = slicer.util.arrayFromVolume(reference)  # (k, j, i)
    segmentation = node.GetSegmentation()
    ids, values = vtk.vtkStringArray(), vtk.vtkIntArray()
    for n in range(segmentation.GetNumberOfSegments()):
        ids.InsertNextValue(segmentation.GetNthSegmentID(n))
        values.InsertNextValue(n + 1)
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        node, reference, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged, values)
    labels = numpy_support.vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(merged.GetDimensions()[::-1])
    segments = [(segmentation.GetNthSegment(n), labels == n + 1) for n in range(segmentation.GetNumberOfSegments())]
    union = np.any([m > 0 for _, m in segments], axis=0)
    k, j, i = (int(round(c)) for c in np.argwhere(union).mean(axis=0)) if union.any() else np.array(image.shape) // 2

    fig = plt.figure(figsize=(12, 4.6), dpi=110)
    panel = fig.add_axes([0.0, 0.0, 0.27, 1.0])
    panel.axis("off")
    lines = ["MAGMS Segmenter", "", "Inputs (guessed from the volume names):"]
    for slot, node_id in mapping.items():
        name = scene.GetNodeByID(node_id).GetName() if node_id else "(none)"
        lines.append(f"  {slot:6s} <- {name}")
    lines += ["", f"Model: {args.model.name} ({', '.join(info.slots)})", "", "New segmentation node:",
              *(f"  {part}" for part in node.GetName().replace(" MAGMS ", "\n MAGMS ").split("\n")), ""]
    panel.text(0.04, 0.96, "\n".join(lines), va="top", family="monospace", fontsize=8.5)
    for n, (segment, _) in enumerate(segments):
        panel.add_patch(plt.Rectangle((0.06, 0.30 - 0.07 * n), 0.05, 0.045, color=segment.GetColor(), transform=panel.transAxes))
        panel.text(0.14, 0.32 - 0.07 * n, segment.GetName(), va="center", fontsize=9)
    views = [("axial", image[k], [m[k] for _, m in segments]),
             ("coronal", image[:, j, :][::-1], [m[:, j, :][::-1] for _, m in segments]),
             ("sagittal", image[:, :, i][::-1], [m[:, :, i][::-1] for _, m in segments])]
    for v, (title, slab, masks) in enumerate(views):
        ax = fig.add_axes([0.28 + v * 0.24, 0.02, 0.23, 0.9])
        ax.imshow(slab, cmap="gray", interpolation="bilinear")
        for (segment, _), mask in zip(segments, masks):
            overlay = np.zeros((*mask.shape, 4))
            overlay[mask > 0] = (*segment.GetColor(), 0.45)
            ax.imshow(overlay, interpolation="nearest")
            if mask.any():
                ax.contour(mask > 0, levels=[0.5], colors=[segment.GetColor()], linewidths=0.8)
        ax.set_title(f"{title} ({reference.GetName()})", fontsize=9)
        ax.axis("off")
    fig.text(0.99, 0.005, "BraTS 2023 data (Baid et al. 2021; Menze et al. 2015; Bakas et al. 2017)", ha="right", fontsize=6.5, color="0.4")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
