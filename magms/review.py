"""Review aids for contour review: how big each structure is, how much it changes with the inputs
used, and where the model is unsure.

One case is segmented several times (:meth:`~magms.inference.Segmenter.segment_subsets`: from each
subset of its inputs; :meth:`~magms.inference.Segmenter.segment_flips`: from each flip of the
network's windows alone), every output on the same grid. Against the *fullest* output (all the
inputs; for flips, the output as :meth:`~magms.inference.Segmenter.segment` gives it) this module
measures:

* **volumes**: ml of each non-background label and each region of the scheme (WT/TC/ET for
  brain-tumour schemes), voxel count times voxel volume;
* **Dice to the fullest output**, per label and region (:func:`magms.metrics.dice`: 1 when both are
  empty, 0 when only one is);
* the **disagreement map**: per voxel, how many of the compared outputs have another label than
  the fullest output (0 where all agree).

:func:`write_report` puts them on one page: ``report.md`` (inputs, model and its validation table,
volumes, Dice to the fullest output, disagreement), ``report.png`` (the overlay of the fullest
output with the disagreement outlined) and ``volumes.csv`` (one row per output x structure).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from magms.errors import ConfigError
from magms.files import atomic_write, atomic_write_text
from magms.labels import LabelScheme, Structure, structures
from magms.metrics import dice

__all__ = [
    "REPORT_FILES",
    "VOLUME_FIELDS",
    "voxel_ml",
    "structure_volumes",
    "dice_to_fullest",
    "disagreement_map",
    "CaseReview",
    "validation_summary",
    "check_report_folder",
    "write_report",
]

logger = logging.getLogger(__name__)

#: What :func:`write_report` writes into its folder.
REPORT_FILES = ("report.md", "report.png", "volumes.csv")
#: The columns of ``volumes.csv``: one row per output (``subset``) x structure.
VOLUME_FIELDS = ("subset", "structure", "kind", "name", "ml", "dice_to_fullest")


def _shown_name(structure: Structure) -> str:
    # regions with their abbreviation first ("WT (whole tumour)"), as in magms evaluate's summary
    return f"{structure.key.upper()} ({structure.name.lower()})" if structure.kind == "region" else structure.name


def voxel_ml(spacing: Sequence[float]) -> float:
    """The volume of one voxel in ml (spacing in mm, any axis order)."""
    return float(np.prod(spacing)) / 1000.0


def structure_volumes(labels: np.ndarray, scheme: LabelScheme, spacing: Sequence[float]) -> dict[Structure, float]:
    """Volume in ml of each :func:`structures` entry: voxel count times the voxel volume.

    Args:
        labels: label map in ``scheme``'s values.
        scheme: its label scheme.
        spacing: voxel size in mm (the reference image's ``GetSpacing()``).
    """
    ml = voxel_ml(spacing)
    return {s: int(np.count_nonzero(s.mask(labels))) * ml for s in structures(scheme)}


def dice_to_fullest(labels: np.ndarray, fullest: np.ndarray, scheme: LabelScheme) -> dict[Structure, float]:
    """Dice of each :func:`structures` entry between an output and the fullest output.

    Raises:
        ValueError: the two differ in shape.
    """
    _check_shapes([labels], fullest)
    return {s: dice(s.mask(labels), s.mask(fullest)) for s in structures(scheme)}


def disagreement_map(outputs: Sequence[np.ndarray], fullest: np.ndarray) -> np.ndarray:
    """Per voxel, how many of ``outputs`` have another label than ``fullest`` (0 where all agree).

    Args:
        outputs: the compared label maps, each of ``fullest``'s shape.
        fullest: the label map they are compared with.
    Returns:
        uint8 counts, ``fullest``'s shape.
    Raises:
        ValueError: a shape that differs (both printed), or more than 255 outputs.
    """
    if len(outputs) > 255:
        raise ValueError(f"outputs: at most 255 can be counted in a uint8 map, got {len(outputs)}")
    _check_shapes(outputs, fullest)
    counts = np.zeros(np.shape(fullest), np.uint8)
    for labels in outputs:
        counts += np.asarray(labels) != fullest
    return counts


def _check_shapes(outputs: Sequence[np.ndarray], fullest: np.ndarray) -> None:
    for n, labels in enumerate(outputs):
        if np.shape(labels) != np.shape(fullest):
            raise ValueError(f"output #{n} has shape {np.shape(labels)}, the fullest output {np.shape(fullest)}")


@dataclasses.dataclass
class CaseReview:
    """The outputs of one case and what the report says about where they came from.

    Attributes:
        scheme: the model's label scheme.
        reference: the reference input (its grid is every output's; its grey values are the
            report's background).
        outputs: name (``"flair+t1c"``, ``"flip LR"``) -> label map (z, y, x); the fullest among them.
        fullest: the name of the output the others are compared with.
        inputs: slot -> file, of every input used.
        reference_slot: the slot of ``reference``.
        model: the model's bundle folder.
        compare: how the compared outputs were made: ``"none"``, ``"subsets"`` or ``"flips"``.
        weights_sha256: of the model's weights, for the record.
        output: where the fullest output was written.
        disagreement_file: where the disagreement map was written.
        notes: what the user was told while segmenting (resampling, fallbacks).
        engine: what ran the network (``eager``, ``openvino fp32``; :mod:`magms.inference.predictors`).
    """

    scheme: LabelScheme
    reference: sitk.Image
    outputs: dict[str, np.ndarray]
    fullest: str
    inputs: dict[str, str]
    reference_slot: str
    model: Path
    compare: str = "none"
    weights_sha256: str = ""
    output: Path | None = None
    disagreement_file: Path | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    engine: str = ""

    def __post_init__(self) -> None:
        if self.fullest not in self.outputs:
            raise ValueError(f"fullest: {self.fullest!r} is not among the outputs ({', '.join(self.outputs)})")

    @property
    def compared(self) -> list[str]:
        """The names of the outputs compared with the fullest one."""
        return [name for name in self.outputs if name != self.fullest]

    def disagreement(self) -> np.ndarray:
        """:func:`disagreement_map` of the compared outputs against the fullest one."""
        return disagreement_map([self.outputs[n] for n in self.compared], self.outputs[self.fullest])

    def rows(self) -> list[dict[str, object]]:
        """The rows of ``volumes.csv`` (keys :data:`VOLUME_FIELDS`), the fullest output first;
        its ``dice_to_fullest`` is 1."""
        fullest = self.outputs[self.fullest]
        spacing = self.reference.GetSpacing()
        rows = []
        for name in [self.fullest, *self.compared]:
            volumes = structure_volumes(self.outputs[name], self.scheme, spacing)
            dices = dice_to_fullest(self.outputs[name], fullest, self.scheme)
            for s, ml in volumes.items():
                rows.append({"subset": name, "structure": s.key, "kind": s.kind, "name": _shown_name(s), "ml": ml,
                             "dice_to_fullest": dices[s]})
        return rows


def validation_summary(model: str | os.PathLike[str]) -> Path | None:
    """The bundle's recorded validation table, ``validation/summary.md`` beside ``magms.json``, if any."""
    path = Path(model) / "validation" / "summary.md"
    return path if path.is_file() else None


def check_report_folder(folder: str | os.PathLike[str], overwrite: bool) -> None:
    """Check a report folder before any work is done.

    Raises:
        ConfigError: ``folder`` is a file, or holds report files and ``overwrite`` is False.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder (the report is a folder: {', '.join(REPORT_FILES)})")
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out}: {', '.join(existing)} exist already (use --overwrite to replace them)")


def write_report(folder: str | os.PathLike[str], review: CaseReview, overwrite: bool = False) -> list[Path]:
    """Write :data:`REPORT_FILES` into ``folder`` (made if missing), each atomically.

    Returns:
        The paths written.
    Raises:
        ConfigError: see :func:`check_report_folder`.
    """
    from magms.overlay import render_overlay

    out = Path(folder)
    check_report_folder(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    md, png, table = (out / name for name in REPORT_FILES)
    rows = review.rows()
    counts = review.disagreement() if review.compared else None
    atomic_write_text(table, _csv_text(rows))
    title = f"{review.fullest} ({review.model.name})"
    atomic_write(png, lambda tmp: render_overlay(review.reference, review.outputs[review.fullest], review.scheme, tmp, title,
                                                 disagreement=counts), suffix=".png")
    atomic_write_text(md, "\n".join(_report_lines(review, rows, counts, png.name, table.name)) + "\n")
    logger.info("review report written to %s", out)
    return [md, png, table]


def _csv_text(rows: Sequence[Mapping[str, object]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=VOLUME_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return text.getvalue()


_COMPARED = {
    "subsets": "the case segmented from every smaller non-empty subset of its inputs",
    "flips": "the case segmented from each of the 8 flips of the network's windows alone (left-right, anterior-posterior, "
             "superior-inferior and their combinations)",
}


def _report_lines(review: CaseReview, rows: Sequence[Mapping[str, object]], counts: np.ndarray | None, png: str, table: str) -> list[str]:
    lines = ["# Segmentation review", "", "For research, not for clinical use: every contour needs a qualified reviewer's check.", ""]
    lines += ["## Inputs", "", "| slot | file |", "|---|---|"]
    for slot, file in review.inputs.items():
        lines.append(f"| {slot} | `{file}`{' (reference: the output grid)' if slot == review.reference_slot else ''} |")
    if review.output is not None:
        lines += ["", f"Segmentation written: `{review.output}` ({review.fullest})."]
    lines += ["", *_model_lines(review), ""]
    names = [review.fullest, *review.compared]
    shown = structures(review.scheme)
    value = {(r["subset"], r["kind"], r["structure"]): r for r in rows}
    lines += ["## Volumes (ml)", "", "| structure | " + " | ".join(_header(n, review) for n in names) + " |",
              "|---" * (len(names) + 1) + "|"]
    for s in shown:
        lines.append(f"| {_shown_name(s)} | " + " | ".join(f"{value[(n, s.kind, s.key)]['ml']:.2f}" for n in names) + " |")
    lines.append("")
    if review.compared:
        lines += [f"## Dice to the fullest output ({review.fullest})", "",
                  f"Compared: {_COMPARED.get(review.compare, review.compare)}.", "",
                  "| structure | " + " | ".join(review.compared) + " |", "|---" * (len(review.compared) + 1) + "|"]
        for s in shown:
            lines.append(f"| {_shown_name(s)} | "
                         + " | ".join(f"{value[(n, s.kind, s.key)]['dice_to_fullest']:.3f}" for n in review.compared) + " |")
        lines += ["", *_disagreement_lines(review, counts), ""]
    else:
        lines += ["No comparison ran (`--compare subsets` or `--compare flips` adds the Dice to the fullest output and the "
                  "disagreement map).", ""]
    lines += ["## Overlay", "", f"![{review.fullest}]({png})", "", f"Volumes and Dice per output and structure: [{table}]({table}).", ""]
    if review.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in review.notes), ""]
    return lines


def _header(name: str, review: CaseReview) -> str:
    return f"{name} (fullest)" if name == review.fullest and review.compared else name


def _model_lines(review: CaseReview) -> list[str]:
    lines = ["## Model", "", f"- name: {review.model.name}", f"- folder: `{review.model}`"]
    if review.weights_sha256:
        lines.append(f"- weights sha256: `{review.weights_sha256}`")
    if review.engine:
        lines.append(f"- run by: {review.engine}")
    summary = validation_summary(review.model)
    if summary is None:
        return lines + ["- validation: none recorded"]
    lines += [f"- validation: [{summary}]({summary.resolve()})", ""]
    return lines + _first_table(summary.read_text(encoding="utf-8"), set(review.outputs))


def _first_table(text: str, subsets: set[str]) -> list[str]:
    """The first table of a validation summary (``magms evaluate``'s ``summary.md``: the Dice table),
    under its titles, with only the rows of ``subsets`` when it has them."""
    title, heading, table = "", "", []
    for line in text.splitlines():
        if line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("## "):
            if table:
                break
            heading = line[3:].strip()
        elif line.startswith("|"):
            table.append(line)
    if not table:
        return []
    # the header and the rule, then the rows whose first cell is one of the subsets here
    rows = [row for row in table[2:] if row.strip("|").split("|")[0].strip() in subsets]
    shown = [*table[:2], *rows] if rows else table
    caption = "; ".join(t for t in (title, heading) if t)
    more = f" (the {len(rows)} subsets here, of {len(table) - 2})" if rows and len(rows) < len(table) - 2 else ""
    return [f"### Recorded validation{more}", "", *([caption, ""] if caption else []), *shown]


def _disagreement_lines(review: CaseReview, counts: np.ndarray | None) -> list[str]:
    assert counts is not None
    ml = voxel_ml(review.reference.GetSpacing())
    total = len(review.compared)
    lines = ["## Disagreement", "",
             f"Per voxel, how many of the {total} compared outputs have another label than {review.fullest} (0 where all agree)."]
    if review.disagreement_file is not None:
        lines.append(f"Map: `{review.disagreement_file}` (uint8, on the grid of the {review.reference_slot} input); "
                     "outlined in the overlay below.")
    lines.append("")
    found = np.bincount(counts.ravel(), minlength=total + 1)
    if not found[1:].any():
        return lines + ["All compared outputs agree with it everywhere."]
    lines += ["| outputs that differ | " + " | ".join(str(k) for k in range(1, total + 1)) + " |", "|---" * (total + 1) + "|",
              "| voxels | " + " | ".join(str(int(found[k])) for k in range(1, total + 1)) + " |",
              "| ml | " + " | ".join(f"{found[k] * ml:.2f}" for k in range(1, total + 1)) + " |"]
    return lines
