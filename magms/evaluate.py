"""``magms evaluate``: how good is a model with each subset of its modalities?

For every case with a label and every non-empty subset of the bundle's slots that the case has,
the case is segmented with that subset alone. Dice and HD95 (MONAI metrics, in mm) are computed
per label and per region (WT/TC/ET for brain-tumour schemes); regions also get the BraTS 2023
lesion-wise Dice and HD95 and lesion counts (:mod:`magms.lesionwise`). Three files are written:
``metrics.csv`` (one row per case x subset x label or region; the lesion-wise columns are empty
for labels), ``summary.md`` (mean ± sd per subset, whole-image beside lesion-wise per region, and
the best subset for each region: which images are worth acquiring), and ``heatmap.png``
(subsets x regions, mean whole-image Dice).

Conventions for empty structures: if both prediction and truth are empty, Dice is 1 and HD95 is 0.
If only one of them is empty, Dice is 0 and HD95 is empty (NaN in the CSV), and that value is left
out of the means. The lesion-wise scores have their own conventions (a missed lesion or a false
positive counts HD95 374 mm; no lesion and no false positive: Dice 1, HD95 0), so they are never empty.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from magms.data.cases import Case
from magms.data.io import read_labelmap, resample_like, same_grid
from magms.errors import ConfigError
from magms.inference import Segmentation, Segmenter
from magms.inference.usecases import each_subset
from magms.labels import LabelScheme, get_scheme, map_labels
from magms.lesionwise import HD95_PENALTY_MM, LESION_VOLUME_THRESHOLD_MM3, LesionWiseScore, region_lesion_metrics
from magms.metrics import case_metrics

__all__ = ["REPORT_FILES", "dice_table", "evaluate", "write_reports"]

logger = logging.getLogger(__name__)

FIELDS = ("case", "subset", "target", "kind", "dice", "hd95")
#: Columns after :data:`FIELDS`, filled for regions only: BraTS 2023 lesion-wise scores and counts.
LESION_FIELDS = ("lesion_dice", "lesion_hd95", "lesions", "lesions_missed", "false_positives")
#: What :func:`write_reports` writes into its folder.
REPORT_FILES = ("metrics.csv", "summary.md", "heatmap.png")


def _read_truth(case: Case, data_scheme: LabelScheme, model_scheme: LabelScheme) -> sitk.Image:
    assert case.label is not None
    img = read_labelmap(case.label)
    mapped = map_labels(sitk.GetArrayFromImage(img).astype(np.int64), data_scheme, model_scheme)
    out = sitk.GetImageFromArray(mapped.astype(np.uint16))
    out.CopyInformation(img)
    return out


def evaluate(
    segmenter: Segmenter,
    cases: Sequence[Case],
    data_labels: str | None = None,
    subsets: Sequence[Sequence[str]] | None = None,
    progress: Callable[[str], None] | None = None,
    on_result: Callable[[Case, Segmentation], None] | None = None,
) -> list[dict[str, object]]:
    """Segment every labelled case with every subset and measure it.

    Args:
        segmenter: the model.
        cases: cases with a label file.
        data_labels: label scheme of the data's label files (default: the model's); mapped to the
            model's scheme with :func:`magms.labels.map_labels`.
        subsets: subsets to run (default: every non-empty subset of the model's slots each case has).
        progress: called with a short description before each run.
        on_result: called with each case and its segmentation from one subset (e.g. to write it).
    Returns:
        Rows with the keys of :data:`FIELDS`; region rows also those of :data:`LESION_FIELDS`.
    Raises:
        ConfigError: no case, cases without a label (all named), an unknown subset slot, or label
            schemes that cannot be mapped.
    """
    _check_request(segmenter, cases, subsets)
    model_scheme = segmenter.info.scheme
    data_scheme = get_scheme(data_labels) if data_labels else model_scheme
    rows: list[dict[str, object]] = []
    for case in cases:
        rows += _evaluate_case(segmenter, case, _read_truth(case, data_scheme, model_scheme), subsets, progress, on_result)
    return rows


def _check_request(segmenter: Segmenter, cases: Sequence[Case], subsets: Sequence[Sequence[str]] | None) -> None:
    if not cases:
        raise ConfigError("no case to evaluate")
    unlabelled = [c.name for c in cases if c.label is None]
    if unlabelled:
        raise ConfigError(f"case(s) without a label file: {', '.join(unlabelled)}")
    for subset in subsets or ():
        unknown = [s for s in subset if s not in segmenter.slots]
        if unknown:
            raise ConfigError(f"subset {'+'.join(subset)}: slot(s) {', '.join(unknown)} not in the model ({', '.join(segmenter.slots)})")


def _evaluate_case(
    segmenter: Segmenter,
    case: Case,
    truth: sitk.Image,
    subsets: Sequence[Sequence[str]] | None,
    progress: Callable[[str], None] | None,
    on_result: Callable[[Case, Segmentation], None] | None = None,
) -> list[dict[str, object]]:
    """Rows of one case: each subset it has, segmented and measured on the truth's grid."""
    truth_arr = sitk.GetArrayViewFromImage(truth)
    spacing = truth.GetSpacing()[::-1]  # array axes are (z, y, x)
    announce = (lambda name: progress(f"{case.name}: {name}")) if progress is not None else None
    rows: list[dict[str, object]] = []
    for name, result in each_subset(segmenter, case.images, subsets, announce):
        if on_result is not None:
            on_result(case, result)
        pred = sitk.GetImageFromArray(result.labels)
        pred.CopyInformation(result.reference)
        if not same_grid(pred, truth):
            pred = resample_like(pred, truth, sitk.sitkNearestNeighbor)
        pred_arr = sitk.GetArrayViewFromImage(pred)
        lesion_scores = region_lesion_metrics(pred_arr, truth_arr, segmenter.info.scheme, spacing)
        for row in case_metrics(pred_arr, truth_arr, segmenter.info.scheme, spacing):
            lesion = lesion_scores[str(row["target"])] if row["kind"] == "region" else None
            rows.append({"case": case.name, "subset": name, **row, **_lesion_columns(lesion)})
    return rows


def _lesion_columns(score: LesionWiseScore | None) -> dict[str, object]:
    """The :data:`LESION_FIELDS` of a region's row; none for a label's."""
    if score is None:
        return {}
    return {"lesion_dice": score.dice, "lesion_hd95": score.hd95, "lesions": score.lesions,
            "lesions_missed": score.false_negatives, "false_positives": score.false_positives}


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan, 0
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0), len(finite)


def write_reports(rows: Sequence[dict[str, object]], out_dir: str | os.PathLike[str], scheme: LabelScheme,
                  overwrite: bool = False) -> list[Path]:
    """Write ``metrics.csv``, ``summary.md`` and ``heatmap.png`` into ``out_dir``.

    Raises:
        ConfigError: a report file exists and ``overwrite`` is False.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in REPORT_FILES]
    existing = [p.name for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out}: {', '.join(existing)} exist already (use --overwrite to replace them)")
    _write_csv(rows, paths[0])
    table = _Table(rows, scheme)
    paths[1].write_text("\n".join(table.summary_lines()) + "\n", encoding="utf-8")
    table.heatmap(paths[2])
    return paths


def dice_table(rows: Sequence[dict[str, object]], scheme: LabelScheme) -> list[str]:
    """The Dice table of ``summary.md`` (subsets x labels and regions, mean ± sd), as Markdown lines."""
    return _Table(rows, scheme).table("dice")


def _write_csv(rows: Sequence[dict[str, object]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        fields = FIELDS + LESION_FIELDS
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            # label rows have no lesion-wise values: their cells stay empty
            writer.writerow({k: _csv_cell(row.get(k, "")) for k in fields})


def _csv_cell(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value


class _Table:
    """The rows seen as subsets x targets, for the summary and the heat map."""

    def __init__(self, rows: Sequence[dict[str, object]], scheme: LabelScheme) -> None:
        self.rows = rows
        self.subsets = list(dict.fromkeys(str(r["subset"]) for r in rows))
        self.kind = "region" if scheme.regions else "label"
        self.targets = list(dict.fromkeys(str(r["target"]) for r in rows if r["kind"] == self.kind))
        self.all_targets = list(dict.fromkeys(str(r["target"]) for r in rows))
        # regions get their abbreviation first so they never read like the label of the same name
        self.names = ({label.key: label.name for label in scheme.labels}
                      | {r.key: f"{r.key.upper()} ({r.name.lower()})" for r in scheme.regions})
        self.cases = len({r["case"] for r in rows})
        self.means = {t: {s: _mean_sd(self.values(s, t, "dice"))[0] for s in self.subsets} for t in self.targets}

    def values(self, subset: str, target: str, metric: str) -> list[float]:
        # lesion-wise metrics exist on region rows only
        return [float(r[metric]) for r in self.rows if r["subset"] == subset and r["target"] == target and metric in r]  # type: ignore[arg-type]

    def cell(self, subset: str, target: str, metric: str, show_n: bool = False) -> str:
        """``mean ± sd`` of ``metric`` over the cases, NaN left out (their number with ``show_n``)."""
        mean, sd, n = _mean_sd(self.values(subset, target, metric))
        return "-" if n == 0 else f"{mean:.3f} ± {sd:.3f}" + (f" (n={n})" if show_n else "")

    def name(self, target: str) -> str:
        return self.names.get(target, target)

    def table(self, metric: str) -> list[str]:
        """The Markdown table of ``metric``: subsets x labels and regions, mean ± sd."""
        lines = ["| subset | " + " | ".join(self.name(t) for t in self.all_targets) + " |", "|---" * (len(self.all_targets) + 1) + "|"]
        for subset in self.subsets:
            lines.append(f"| {subset} | " + " | ".join(self.cell(subset, t, metric, metric == "hd95") for t in self.all_targets) + " |")
        return lines

    def summary_lines(self) -> list[str]:
        lines = [f"# Evaluation: {self.cases} case(s), {len(self.subsets)} modality subset(s)", ""]
        for metric, title in (("dice", "Dice (mean ± sd)"), ("hd95", "HD95 in mm (mean ± sd; n = cases where both are non-empty)")):
            lines += [f"## {title}", "", *self.table(metric), ""]
        lines += self._lesion_wise_lines()
        return lines + ["## Best subset per " + self.kind, ""] + [line for line in map(self._best, self.targets) if line]

    def _lesion_wise_lines(self) -> list[str]:
        """Per region, the lesion-wise means beside the whole-image ones, and the lesion counts."""
        regions = list(dict.fromkeys(str(r["target"]) for r in self.rows if "lesion_dice" in r))
        if not regions:
            return []
        lines = ["## Lesion-wise beside whole-image, per region (BraTS 2023 conventions)", "",
                 "Lesion-wise: each truth lesion scored apart, missed lesions and false positives count as Dice 0 "
                 f"and HD95 {HD95_PENALTY_MM:g} mm; lesions of {LESION_VOLUME_THRESHOLD_MM3:g} mm³ or less are not scored.", ""]
        header = "| subset | " + " | ".join(f"{t.upper()} | {t.upper()} lesion-wise" for t in regions) + " |"
        rule = "|---" * (2 * len(regions) + 1) + "|"
        for metric, title in (("dice", "Dice (mean ± sd)"), ("hd95", "HD95 in mm (mean ± sd)")):
            lines += [f"### {title}", "", header, rule]
            for subset in self.subsets:
                cells = (f"{self.cell(subset, t, metric, metric == 'hd95')} | {self.cell(subset, t, 'lesion_' + metric)}" for t in regions)
                lines.append(f"| {subset} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["### Lesions, summed over cases (scored / missed / false positives)", "",
                  "| subset | " + " | ".join(t.upper() for t in regions) + " |", "|---" * (len(regions) + 1) + "|"]
        for subset in self.subsets:
            counts = (" / ".join(str(int(sum(self.values(subset, t, k)))) for k in ("lesions", "lesions_missed", "false_positives"))
                      for t in regions)
            lines.append(f"| {subset} | " + " | ".join(counts) + " |")
        return lines + [""]

    def _best(self, target: str) -> str:
        scored = {s: m for s, m in self.means[target].items() if not math.isnan(m)}
        if not scored:
            return ""
        best = max(scored, key=lambda s: (scored[s], -s.count("+")))
        single = {s: m for s, m in scored.items() if "+" not in s}
        best_single = max(single, key=single.get) if single else None
        extra = f"; best single image: {best_single} ({single[best_single]:.3f})" if best_single else ""
        return f"- {self.name(target)}: {best} (Dice {scored[best]:.3f}){extra}"

    def heatmap(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        grid = np.array([[self.means[t][s] for t in self.targets] for s in self.subsets], dtype=float)
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(self.targets), 0.9 + 0.38 * len(self.subsets)))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(self.targets)), [self.name(t) for t in self.targets], rotation=20, ha="right")
        ax.set_yticks(range(len(self.subsets)), self.subsets)
        for i, j in itertools.product(range(len(self.subsets)), range(len(self.targets))):
            if not math.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="white" if grid[i, j] < 0.6 else "black", fontsize=8)
        fig.colorbar(im, ax=ax, label="mean Dice")
        ax.set_title(f"Mean Dice per modality subset ({self.cases} case(s))")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
