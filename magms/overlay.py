"""A PNG of a segmentation over its image: axial, coronal and sagittal slices through the tumour,
with, for review, the outline of where other outputs disagree with it."""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from magms.labels import LabelScheme

__all__ = ["DISAGREEMENT_COLOUR", "render_overlay"]


#: Colour of the disagreement outline: none of the label schemes' colours.
DISAGREEMENT_COLOUR = "cyan"


def render_overlay(
    image: sitk.Image, labels: np.ndarray, scheme: LabelScheme, path: str | os.PathLike[str], title: str = "",
    disagreement: np.ndarray | None = None,
) -> None:
    """Write a three-view overlay PNG.

    The slices pass through the centre of mass of the labelled voxels (the image centre if none).
    Views follow the radiological convention: patient right on the left of the picture, anterior
    and superior up.

    Args:
        image: the grey-value image; ``labels`` lies on its grid.
        labels: (z, y, x) label values of ``scheme``.
        scheme: names and colours of the labels.
        path: PNG file to write.
        title: a line above the views.
        disagreement: (z, y, x) on the same grid: where it is non-zero (other outputs differ from
            ``labels``) is outlined in :data:`DISAGREEMENT_COLOUR`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    lab_img = sitk.GetImageFromArray(labels.astype(np.uint16))
    lab_img.CopyInformation(image)
    # LPS: array (z, y, x) runs inferior->superior, anterior->posterior, right->left
    img = sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.DICOMOrient(lab_img, "LPS"))
    doubt = np.zeros(lab.shape, bool)
    if disagreement is not None:
        doubt_img = sitk.GetImageFromArray((np.asarray(disagreement) > 0).astype(np.uint8))
        doubt_img.CopyInformation(image)
        doubt = sitk.GetArrayFromImage(sitk.DICOMOrient(doubt_img, "LPS")).astype(bool)
    sz, sy, sx = sitk.DICOMOrient(image, "LPS").GetSpacing()[::-1]
    fg = np.argwhere(lab > 0)
    cz, cy, cx = (fg.mean(axis=0).round().astype(int) if len(fg) else np.array(lab.shape) // 2)
    lo, hi = np.percentile(img[img != 0], (1, 99)) if (img != 0).any() else (img.min(), img.max() + 1)

    colours = np.zeros((max(scheme.values) + 1, 4))
    for label in scheme.labels:
        if label.value:
            colours[label.value] = (*(c / 255 for c in label.color), 0.5)
    views = [
        ("axial", img[cz], lab[cz], doubt[cz], sy / sx),
        ("coronal", np.flipud(img[:, cy]), np.flipud(lab[:, cy]), np.flipud(doubt[:, cy]), sz / sx),
        ("sagittal", np.flipud(img[:, :, cx]), np.flipud(lab[:, :, cx]), np.flipud(doubt[:, :, cx]), sz / sy),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), facecolor="black")
    for ax, (name, grey, seg, unsure, aspect) in zip(axes, views):
        ax.imshow(grey, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="bilinear")
        ax.imshow(colours[seg], aspect=aspect, interpolation="nearest")
        if unsure.any():
            ax.contour(unsure.astype(float), levels=[0.5], colors=DISAGREEMENT_COLOUR, linewidths=0.8)
        ax.set_title(name, color="white", fontsize=10)
        ax.axis("off")
    present = sorted(set(np.unique(lab).tolist()) - {0})
    handles: list = [Patch(color=colours[v][:3], label=scheme.label(v).name) for v in present]
    if doubt.any():
        handles.append(Line2D([], [], color=DISAGREEMENT_COLOUR, linewidth=1.5, label="outputs disagree"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white", fontsize=9)
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)
