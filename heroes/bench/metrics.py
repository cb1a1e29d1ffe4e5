"""Metrics of age estimation, classification, verification and retrieval, over plain arrays.

Conventions follow scikit-learn where it has the metric (ROC AUC with ties counted half, average
precision as the step-wise area ``sum (R_n - R_n-1) P_n``), so that a number here and a number in
a paper computed with scikit-learn agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("0-12", 0, 13),
    ("13-17", 13, 18),
    ("18-25", 18, 26),
    ("26-40", 26, 41),
    ("41+", 41, float("inf")),
)


def _binary(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    y = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    return y, s


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return float(np.abs(t - p).mean()) if len(t) else float("nan")


def cumulative_score(y_true: ArrayLike, y_pred: ArrayLike, tolerance: float = 5.0) -> float:
    """CS@k: the share of estimates within ``tolerance`` years of the truth."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return float((np.abs(t - p) <= tolerance).mean()) if len(t) else float("nan")


def mae_by_band(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, dict[str, float]]:
    """MAE and count per age band of the true age (0-12, 13-17, 18-25, 26-40, 41+)."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    out: dict[str, dict[str, float]] = {}
    for name, lo, hi in AGE_BANDS:
        m = (t >= lo) & (t < hi)
        out[name] = {"n": int(m.sum()), "mae": mae(t[m], p[m]) if m.any() else float("nan")}
    return out


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); NaN with one class only."""
    y, s = _binary(y_true, scores)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks of tied groups
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


@dataclass(frozen=True)
class Curve:
    """ROC points at every distinct score, highest threshold first (FPR and TPR non-decreasing)."""

    thresholds: NDArray[np.float64]
    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    precision: NDArray[np.float64]

    def as_lists(self, max_points: int = 200) -> dict[str, list[float]]:
        n = len(self.thresholds)
        idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int)) if n else []
        return {
            "thresholds": [float(x) for x in self.thresholds[idx]],
            "fpr": [float(x) for x in self.fpr[idx]],
            "tpr": [float(x) for x in self.tpr[idx]],
        }


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> Curve:
    """Flag ``score >= threshold``: FPR, TPR and precision at each distinct score."""
    y, s = _binary(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.zeros(0, int)
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = (last + 1 - tp).astype(np.float64)
    npos, nneg = max(int(y.sum()), 0), max(int((~y).sum()), 0)
    tpr = tp / npos if npos else np.zeros_like(tp)
    fpr = fp / nneg if nneg else np.zeros_like(fp)
    precision = tp / np.maximum(tp + fp, 1)
    return Curve(s[last], fpr, tpr, precision)


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """PR AUC as average precision (scikit-learn's definition); NaN without positives."""
    y, s = _binary(y_true, scores)
    if not y.any():
        return float("nan")
    c = roc_curve(y, s)
    recall = np.r_[0.0, c.tpr]
    return float(np.sum(np.diff(recall) * c.precision))


def tpr_at_fpr(y_true: ArrayLike, scores: ArrayLike, max_fpr: float) -> tuple[float, float]:
    """The highest TPR (recall) whose FPR stays at or below ``max_fpr``, and its threshold.

    This is "recall of minors at 1% of adults wrongly flagged" and "TAR at FAR 1e-3". With no
    threshold that low in FPR, the answer is (0.0, inf): nothing is flagged.
    """
    c = roc_curve(y_true, scores)
    ok = np.nonzero(c.fpr <= max_fpr + 1e-12)[0]
    if not len(ok):
        return 0.0, float("inf")
    best = ok[np.argmax(c.tpr[ok])]
    return float(c.tpr[best]), float(c.thresholds[best])


@dataclass(frozen=True)
class Confusion:
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if np.isnan(p) or np.isnan(r) or p + r == 0:
            return 0.0 if not (np.isnan(p) and np.isnan(r)) else float("nan")
        return 2 * p * r / (p + r)

    @property
    def accuracy(self) -> float:
        n = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / n if n else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "threshold": self.threshold,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "fpr": self.fpr,
        }


def confusion(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> Confusion:
    y, s = _binary(y_true, scores)
    flag = s >= threshold
    return Confusion(
        float(threshold),
        int((flag & y).sum()),
        int((flag & ~y).sum()),
        int((~flag & ~y).sum()),
        int((~flag & y).sum()),
    )


def threshold_table(
    y_true: ArrayLike, scores: ArrayLike, thresholds: Sequence[float] | None = None
) -> list[dict[str, float]]:
    ts = thresholds if thresholds is not None else [round(0.1 * i, 1) for i in range(1, 10)]
    return [confusion(y_true, scores, t).as_dict() for t in ts]


def best_threshold_accuracy(y_true: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """The accuracy of the best single threshold on these data, and that threshold.

    Thresholds lie half-way between consecutive distinct scores (so that they generalise to
    unseen pairs, as in the LFW protocol); among equally good ones the middle one is taken.
    """
    y, s = _binary(y_true, scores)
    u = np.unique(s)
    cands = np.r_[-np.inf, (u[:-1] + u[1:]) / 2, np.inf]
    accs = np.asarray([((s >= t) == y).mean() for t in cands])
    best = np.nonzero(accs == accs.max())[0]
    i = int(best[len(best) // 2])
    return float(accs[i]), float(cands[i])


def kfold_accuracy(y_true: ArrayLike, scores: ArrayLike, folds: int = 10) -> float:
    """LFW protocol: for each of ``folds`` consecutive folds, pick the best threshold on the
    others and measure accuracy on it; the mean over folds."""
    y, s = _binary(y_true, scores)
    if len(y) < folds:
        return float("nan")
    parts = np.array_split(np.arange(len(y)), folds)
    accs = []
    for part in parts:
        train = np.setdiff1d(np.arange(len(y)), part)
        _, t = best_threshold_accuracy(y[train], s[train])
        accs.append(((s[part] >= t) == y[part]).mean())
    return float(np.mean(accs))


def calibration_bins(y_true: ArrayLike, probs: ArrayLike, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table: per probability bin, mean predicted probability and observed rate."""
    y, p = _binary(y_true, probs)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(m.sum()),
                "mean_prob": float(p[m].mean()) if m.any() else float("nan"),
                "observed": float(y[m].mean()) if m.any() else float("nan"),
            }
        )
    return out


def expected_calibration_error(y_true: ArrayLike, probs: ArrayLike, bins: int = 10) -> float:
    table = calibration_bins(y_true, probs, bins)
    n = sum(int(b["n"]) for b in table)
    if not n:
        return float("nan")
    return float(sum(b["n"] * abs(b["mean_prob"] - b["observed"]) for b in table if b["n"]) / n)


def retrieval_metrics(
    ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """recall@k (share of a query's relevant items in its top k, averaged over queries), hit@k
    (share of queries with at least one relevant item in their top k) and mAP.

    recall@k can only reach 1 once k is at least the number of relevant items; hit@k is the
    "found within k" rate that face search papers often call recall@k.

    ``ranked[q]`` is the database ids in order of similarity with the query itself left out;
    a relevant item that is never returned counts as missed (precision 0 at its rank).
    """
    if len(ranked) != len(relevant):
        raise ValueError("one ranking and one relevant set per query")
    out: dict[str, float] = {}
    used = [(r, rel) for r, rel in zip(ranked, relevant, strict=True) if rel]
    for k in ks:
        out[f"recall@{k}"] = (
            float(np.mean([len(rel & set(r[:k])) / len(rel) for r, rel in used]))
            if used
            else float("nan")
        )
        out[f"hit@{k}"] = (
            float(np.mean([bool(rel & set(r[:k])) for r, rel in used])) if used else float("nan")
        )
    aps = []
    for r, rel in used:
        hits, total = 0, 0.0
        for i, item in enumerate(r, start=1):
            if item in rel:
                hits += 1
                total += hits / i
        aps.append(total / len(rel))
    out["mAP"] = float(np.mean(aps)) if aps else float("nan")
    out["queries"] = float(len(used))
    return out
