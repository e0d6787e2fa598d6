"""A PNG of a segmentation over its image: axial, coronal and sagittal slices through the tumour,
with, for review, the outline of where other outputs disagree with it and, below, how many
disagree as a heat map."""

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
        disagreement: (z, y, x) on the same grid, how many other outputs differ from ``labels``:
            where it is non-zero is outlined in :data:`DISAGREEMENT_COLOUR`, and a second row
            shows the counts as a heat map over the image (nothing where it is 0).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, lab, counts, (sz, sy, sx) = _radiological_arrays(image, labels, disagreement)
    doubt = counts > 0
    fg = np.argwhere(lab > 0)
    cz, cy, cx = (fg.mean(axis=0).round().astype(int) if len(fg) else np.array(lab.shape) // 2)
    lo, hi = np.percentile(img[img != 0], (1, 99)) if (img != 0).any() else (img.min(), img.max() + 1)
    colours = _label_colours(scheme)

    def cut(volume: np.ndarray) -> list[np.ndarray]:
        return [volume[cz], np.flipud(volume[:, cy]), np.flipud(volume[:, :, cx])]

    views = list(zip(("axial", "coronal", "sagittal"), cut(img), cut(lab), cut(doubt), cut(counts), (sy / sx, sz / sx, sz / sy)))
    rows = 2 if doubt.any() else 1
    fig, axes = plt.subplots(rows, 3, figsize=(12, 4.6 * rows), facecolor="black", squeeze=False)
    for ax, (name, grey, seg, unsure, _, aspect) in zip(axes[0], views):
        ax.imshow(grey, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="bilinear")
        ax.imshow(colours[seg], aspect=aspect, interpolation="nearest")
        if unsure.any():
            ax.contour(unsure.astype(float), levels=[0.5], colors=DISAGREEMENT_COLOUR, linewidths=0.8)
        ax.set_title(name, color="white", fontsize=10)
        ax.axis("off")
    if rows == 2:
        _draw_heat_row(fig, axes[1], views, max(int(counts.max()), 1), lo, hi)
    _draw_legend(fig, scheme, colours, lab, doubt.any())
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    if rows == 1:
        fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)


def _radiological_arrays(image: sitk.Image, labels: np.ndarray, disagreement: np.ndarray | None):
    """The image, labels and disagreement counts as LPS arrays (z, y, x: inferior->superior,
    anterior->posterior, right->left), and their (z, y, x) spacing."""
    def lps(array: np.ndarray) -> np.ndarray:
        grid = sitk.GetImageFromArray(array)
        grid.CopyInformation(image)
        return sitk.GetArrayFromImage(sitk.DICOMOrient(grid, "LPS"))

    oriented = sitk.DICOMOrient(image, "LPS")
    lab = lps(labels.astype(np.uint16))
    counts = lps(np.asarray(disagreement).astype(np.uint8)) if disagreement is not None else np.zeros(lab.shape, np.uint8)
    return sitk.GetArrayFromImage(oriented).astype(np.float32), lab, counts, oriented.GetSpacing()[::-1]


def _label_colours(scheme: LabelScheme) -> np.ndarray:
    """RGBA per label value, half transparent; background clear."""
    colours = np.zeros((max(scheme.values) + 1, 4))
    for label in scheme.labels:
        if label.value:
            colours[label.value] = (*(c / 255 for c in label.color), 0.5)
    return colours


def _draw_heat_row(fig, axes, views, top: int, lo: float, hi: float) -> None:
    """The second row: the disagreement counts as a heat map over the dimmed image, with its colour bar."""
    for ax, (name, grey, _, _, count, aspect) in zip(axes, views):
        # the image dimmed, so that a bright FLAIR core where all outputs agree is not read as heat
        ax.imshow(grey, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="bilinear", alpha=0.5)
        heat = ax.imshow(np.ma.masked_equal(count, 0), cmap="plasma", vmin=0.5, vmax=top + 0.5, aspect=aspect,
                         interpolation="nearest", alpha=0.85)
        ax.set_title(f"{name}: outputs that differ", color="white", fontsize=10)
        ax.axis("off")
    bar = fig.colorbar(heat, ax=list(axes), fraction=0.025, pad=0.01, ticks=range(1, top + 1, max(1, top // 7)))
    bar.ax.yaxis.set_tick_params(color="white", labelcolor="white")


def _draw_legend(fig, scheme: LabelScheme, colours: np.ndarray, lab: np.ndarray, doubt: bool) -> None:
    """The labels present (and the disagreement outline) below the views."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    present = sorted(set(np.unique(lab).tolist()) - {0})
    handles: list = [Patch(color=colours[v][:3], label=scheme.label(v).name) for v in present]
    if doubt:
        handles.append(Line2D([], [], color=DISAGREEMENT_COLOUR, linewidth=1.5, label="outputs disagree"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white", fontsize=9)
