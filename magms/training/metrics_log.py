"""``metrics.csv``: one row per epoch, appended and flushed, so another process can follow the run.

The Training module of Slicer reads the file while the run goes on; it finds it by
:data:`magms.protocol.METRICS_FILE`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from magms.files import atomic_write

__all__ = ["EpochLosses", "append_metrics"]


class EpochLosses:
    """The running sums of the loss and its terms over the steps an epoch trains.

    Steps replayed after a resume are not trained, so they are not counted either.
    """

    def __init__(self) -> None:
        # "loss" first: the order of the keys is the order of the metrics.csv columns
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Count one step: its total loss and each named term."""
        self.steps += 1
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss.item()
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.item()

    def means(self) -> dict[str, float]:
        """Mean of each sum over the counted steps (empty when none was trained)."""
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the CSV file ``path``, writing the header first when the file is new.

    A row with columns the header lacks (the first validation after epochs without one) extends the
    header at its end: the file is rewritten once, atomically, with the earlier rows' new cells
    empty. Missing cells stay empty. Floats are written with 6 significant digits.

    Args:
        path: the ``metrics.csv`` of the run.
        row: column -> value.
    """
    cells = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
    if not path.exists():
        _write(path, list(row), [cells])
        return
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    added = [k for k in row if k not in header]
    if added:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        atomic_write(path, lambda tmp: _write(tmp, header + added, [*rows, cells]))
        return
    with open(path, "a", newline="", encoding="utf-8") as f:
        csv.DictWriter(f, fieldnames=header).writerow(cells)
        f.flush()  # a reader following the file sees each row as soon as the epoch ends


def _write(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
