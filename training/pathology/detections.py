"""Camelyon16 detection files: one ``<slide>.csv`` per slide, rows ``probability,x,y`` (level-0 pixels).

The official reader (``readCSVContent``) takes every line as ``float, int, int`` and so fails on a
header, a blank line or a decimal coordinate. Here a first row that is not numeric is a header
(when it names ``x``, ``y`` and a ``prob...`` column those columns are used, else the order is
probability, x, y), blank lines are skipped, and coordinates may be decimal. Extra columns are ignored.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detections:
    """Detections of one slide: probability and level-0 (x, y), float64 arrays of one length."""

    probability: np.ndarray
    x_level0: np.ndarray
    y_level0: np.ndarray

    def __post_init__(self) -> None:
        if not (self.probability.shape == self.x_level0.shape == self.y_level0.shape) or self.probability.ndim != 1:
            raise ValueError("probability, x_level0 and y_level0 must be 1-D arrays of one length")

    def __len__(self) -> int:
        return int(self.probability.size)

    @classmethod
    def from_rows(cls, rows: list[tuple[float, float, float]]) -> Detections:
        a = np.asarray(rows, np.float64).reshape(-1, 3)
        return cls(a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header_columns(header: list[str]) -> tuple[int, int, int]:
    names = [h.strip().lower() for h in header]
    prob = [i for i, n in enumerate(names) if n.startswith("prob") or n in ("p", "score", "confidence")]
    if prob and "x" in names and "y" in names:
        return prob[0], names.index("x"), names.index("y")
    return 0, 1, 2


def read_detections_csv(path: str | Path) -> Detections:
    """Detections of one CSV (module docstring); raises ValueError on a malformed row or a NaN."""
    path = Path(path)
    rows: list[tuple[float, float, float]] = []
    columns = (0, 1, 2)
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            fields = [f.strip() for f in row]
            if not any(fields):
                continue
            if not rows and lineno == 1 and not _is_number(fields[0]):
                columns = _header_columns(fields)
                continue
            try:
                values = tuple(float(fields[c]) for c in columns)
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: expected probability,x,y, got {row!r}") from exc
            if not all(np.isfinite(values)):
                raise ValueError(f"{path}:{lineno}: non-finite value in {row!r}")
            rows.append(values)  # type: ignore[arg-type]
    return Detections.from_rows(rows)


def find_detection_csvs(det_dir: str | Path) -> dict[str, Path]:
    """``{slide name: path}`` of every ``*.csv`` in ``det_dir`` (as the official code: every CSV is a slide)."""
    return {p.stem: p for p in sorted(Path(det_dir).glob("*.csv")) if p.is_file()}
