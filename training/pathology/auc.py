"""Slide-level ROC AUC (Camelyon16 task 1) with a bootstrap 95% interval.

``python -m training.pathology.auc (--detections DET_DIR | --scores SCORES.csv)
(--reference REFERENCE.csv | --ground-truth GT_DIR) --json OUT.json [--n-bootstrap 2000] [--seed 0] [--confidence 0.95]``

- Slide score: the maximum probability of the slide's detection CSV (0.0 for a CSV without rows),
  or the ``image,score`` rows of a scores CSV (header optional).
- Labels: Camelyon16's ``reference.csv`` (``image,type[,...]``, type Tumor / Normal, header optional),
  or a ground-truth folder (a slide with a mask or XML there is Tumor, every other scored slide Normal).
  Every labelled slide needs a score (ValueError otherwise); scored slides missing from a reference
  are left out with a warning.
- AUC: scikit-learn is not in the stack, so the AUC is the Mann-Whitney U of the positive scores over
  the negative ones (``scipy.stats.rankdata`` mid-ranks, so a tie counts one half), divided by
  ``n_pos * n_neg``: the same number as ``sklearn.metrics.roc_auc_score``.
- Interval: stratified bootstrap (positives and negatives resampled with replacement separately, so
  every replicate keeps the class counts and has an AUC), ``n_bootstrap`` replicates from
  ``numpy.random.default_rng(seed)``, percentile interval (``numpy.percentile``, linear).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from .detections import find_detection_csvs, read_detections_csv
from .evaluation_masks import find_ground_truth

logger = logging.getLogger(__name__)

N_BOOTSTRAP = 2000


def _checked(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("AUC needs at least one positive and one negative slide")
    return s, y


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (True = tumor): Mann-Whitney U / (n_pos * n_neg), ties count 1/2."""
    s, y = _checked(scores, labels)
    return float(_auc_rows(s[y][None, :], s[~y][None, :])[0])


def _auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of each row: positives (B, n1), negatives (B, n0)."""
    n1, n0 = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)


@dataclass(frozen=True)
class AucResult:
    auc: float
    ci_low: float
    ci_high: float
    confidence: float
    n_bootstrap: int
    seed: int
    n_tumor: int
    n_normal: int


def bootstrap_auc_interval(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = 0.95,
    seed: int = 0,
) -> AucResult:
    """AUC and its stratified-bootstrap percentile interval (module docstring); deterministic for a seed."""
    s, y = _checked(scores, labels)
    if n_bootstrap < 1 or not 0 < confidence < 1:
        raise ValueError("need n_bootstrap >= 1 and 0 < confidence < 1")
    pos, neg = s[y], s[~y]
    rng = np.random.default_rng(seed)
    pos_idx = rng.integers(0, pos.size, size=(n_bootstrap, pos.size))
    neg_idx = rng.integers(0, neg.size, size=(n_bootstrap, neg.size))
    aucs = _auc_rows(pos[pos_idx], neg[neg_idx])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(aucs, [100 * alpha, 100 * (1 - alpha)])
    return AucResult(roc_auc(s, y), float(low), float(high), confidence, n_bootstrap, seed, int(y.sum()), int((~y).sum()))


# ---------------------------------------------------------------- files


def slide_scores_from_detections(det_dir: str | Path) -> dict[str, float]:
    """``{slide: max detection probability}`` of every CSV in ``det_dir``; 0.0 for a CSV without detections."""
    out = {}
    for name, path in find_detection_csvs(det_dir).items():
        det = read_detections_csv(path)
        out[name] = float(det.probability.max()) if len(det) else 0.0
    return out


def _rows(path: str | Path) -> list[list[str]]:
    with Path(path).open(newline="") as fh:
        return [[f.strip() for f in row] for row in csv.reader(fh) if any(f.strip() for f in row)]


def read_scores_csv(path: str | Path) -> dict[str, float]:
    """``{image: score}`` of an ``image,score`` CSV; a first row whose score is not a number is a header."""
    rows = _rows(path)
    out: dict[str, float] = {}
    for k, row in enumerate(rows):
        try:
            score = float(row[1])
        except (IndexError, ValueError) as exc:
            if k == 0:
                continue
            raise ValueError(f"{path}: row {k + 1}: expected image,score, got {row!r}") from exc
        out[Path(row[0]).stem if row[0].lower().endswith((".tif", ".csv")) else row[0]] = score
    return out


def read_reference_csv(path: str | Path) -> dict[str, bool]:
    """``{image: is tumor}`` of a Camelyon16 ``reference.csv`` (image,type[,...]; header optional)."""
    out: dict[str, bool] = {}
    for k, row in enumerate(_rows(path)):
        kind = row[1].lower() if len(row) > 1 else ""
        if kind not in ("tumor", "normal"):
            if k == 0:
                continue
            raise ValueError(f"{path}: row {k + 1}: type must be Tumor or Normal, got {row!r}")
        out[Path(row[0]).stem if row[0].lower().endswith(".tif") else row[0]] = kind == "tumor"
    return out


def pair_scores_and_labels(scores: dict[str, float], labels: dict[str, bool]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Slides (sorted), scores and labels of every labelled slide; raises ValueError when one has no score."""
    missing = sorted(set(labels) - set(scores))
    if missing:
        raise ValueError(f"{len(missing)} labelled slide(s) without a score: {', '.join(missing[:10])}")
    extra = sorted(set(scores) - set(labels))
    if extra:
        logger.warning("%d scored slide(s) without a label left out: %s", len(extra), ", ".join(extra[:10]))
    slides = sorted(labels)
    return slides, np.array([scores[s] for s in slides], np.float64), np.array([labels[s] for s in slides], bool)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.pathology.auc",
        allow_abbrev=False,
        description="Slide-level ROC AUC with a stratified bootstrap percentile interval.",
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--detections", type=Path, metavar="DET_DIR", help="<slide>.csv detections; slide score = max probability")
    src.add_argument("--scores", type=Path, metavar="SCORES.csv", help="image,score rows")
    lab = ap.add_mutually_exclusive_group(required=True)
    lab.add_argument("--reference", type=Path, metavar="REFERENCE.csv", help="image,type rows (Tumor / Normal)")
    lab.add_argument("--ground-truth", type=Path, metavar="GT_DIR", help="slides with a mask or XML here are Tumor, others Normal")
    ap.add_argument("--json", type=Path, required=True, metavar="OUT.json")
    ap.add_argument("--n-bootstrap", type=int, default=N_BOOTSTRAP)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--confidence", type=float, default=0.95)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        scores = slide_scores_from_detections(args.detections) if args.detections else read_scores_csv(args.scores)
        if args.reference:
            labels = read_reference_csv(args.reference)
        else:
            tumor = set(find_ground_truth(args.ground_truth))
            labels = {s: s in tumor for s in set(scores) | tumor}
        slides, s, y = pair_scores_and_labels(scores, labels)
        res = bootstrap_auc_interval(s, y, args.n_bootstrap, args.confidence, args.seed)
    except (ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 1
    report = {
        "auc": res.auc,
        "ci_low": res.ci_low,
        "ci_high": res.ci_high,
        "confidence": res.confidence,
        "bootstrap": "stratified, percentile",
        "n_bootstrap": res.n_bootstrap,
        "seed": res.seed,
        "n_tumor": res.n_tumor,
        "n_normal": res.n_normal,
        "slides": [{"slide": n, "score": float(v), "tumor": bool(t)} for n, v, t in zip(slides, s, y, strict=True)],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    logger.info(
        "AUC %.4f (%.0f%% CI %.4f-%.4f, %d tumor, %d normal) -> %s",
        res.auc,
        100 * res.confidence,
        res.ci_low,
        res.ci_high,
        res.n_tumor,
        res.n_normal,
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
