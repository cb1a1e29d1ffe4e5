"""Accuracy benchmarks: a labelled set and a scorer in, one JSON-ready result out.

Every sample is accounted for: an unreadable image, a face the detector missed or a pair whose
face was not found is counted (``unreadable``, ``faces_missed``, ``pairs_missed``) and listed in
``problems``, never silently dropped. The metrics are computed on the samples that were scored.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heroes.bench import metrics
from heroes.bench.datasets import Dataset, load_rgb
from heroes.bench.scorers import AgeScorer, Embedder, FaceAge, NudityScorer

Loader = Callable[[Path], NDArray[np.uint8]]
MINOR_AGE = 18.0


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars plain numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _read(path: Path, load: Loader, problems: list[dict[str, str]]) -> NDArray[np.uint8] | None:
    try:
        return load(path)
    except Exception as exc:  # a bad image is a counted problem, never a crash
        problems.append({"path": str(path), "reason": f"unreadable: {type(exc).__name__}: {exc}"})
        return None


def _header(task: str, ds: Dataset, name: str) -> dict[str, Any]:
    return {
        "task": task,
        "model": name,
        "dataset": {"format": ds.format, "root": str(ds.root)},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }


def age(
    ds: Dataset, scorer: AgeScorer, *, out: Path | None = None, load: Loader = load_rgb
) -> dict[str, Any]:
    """MAE, CS@5, MAE by band, minor-vs-adult ROC AUC from P(age<18), recall of minors at 1% and
    5% of adults flagged, calibration of P(age<18); the largest face of each image is scored."""
    t0 = time.perf_counter()
    problems = list(ds.problems)
    truth, pred, pmin, apparent = [], [], [], []
    missed = unreadable = 0
    for s in ds.samples:
        im = _read(s.path, load, problems)
        if im is None:
            unreadable += 1
            continue
        faces: list[FaceAge] = scorer.predict(im)
        if not faces:
            missed += 1
            problems.append({"path": str(s.path), "reason": "no face found"})
            continue
        f = max(faces, key=lambda x: (x.box[2] - x.box[0]) * (x.box[3] - x.box[1]))
        truth.append(s.label)
        pred.append(f.age)
        pmin.append(f.p_minor)
        apparent.append(s.extra.get("apparent_age", math.nan))
    y, p, pm = np.asarray(truth), np.asarray(pred), np.asarray(pmin)
    minor = y < MINOR_AGE
    r1, t1 = metrics.tpr_at_fpr(minor, pm, 0.01)
    r5, t5 = metrics.tpr_at_fpr(minor, pm, 0.05)
    res = _header("age", ds, scorer.name) | {
        "samples": len(ds.samples) + len(ds.problems),
        "scored": len(y),
        "faces_found": len(y),
        "faces_missed": missed,
        "unreadable": unreadable,
        "unlabelled": len(ds.problems),
        "mae": metrics.mae(y, p),
        "cs@5": metrics.cumulative_score(y, p, 5),
        "mae_by_band": metrics.mae_by_band(y, p),
        "minors": int(minor.sum()),
        "adults": int((~minor).sum()),
        "minor_roc_auc": metrics.roc_auc(minor, pm),
        "minor_recall@1%fpr": r1 if minor.any() else math.nan,
        "minor_threshold@1%fpr": t1,
        "minor_recall@5%fpr": r5 if minor.any() else math.nan,
        "minor_threshold@5%fpr": t5,
        "minor_ece": metrics.expected_calibration_error(minor, pm) if len(y) else math.nan,
        "calibration": metrics.calibration_bins(minor, pm) if len(y) else [],
        "problems": problems,
    }
    app = np.asarray(apparent, dtype=np.float64)
    if len(app) and np.isfinite(app).any():
        ok = np.isfinite(app)
        res["mae_apparent"] = metrics.mae(app[ok], p[ok])
    if out is not None and len(y):
        from heroes.bench.plots import calibration_plot

        res["plots"] = calibration_plot(minor, pm, Path(out), f"age-calibration-{scorer.name}")
    res["seconds"] = time.perf_counter() - t0
    return _clean(res)


def nudity(
    ds: Dataset,
    scorer: NudityScorer,
    *,
    thresholds: Sequence[float] | None = None,
    out: Path | None = None,
    load: Loader = load_rgb,
) -> dict[str, Any]:
    """ROC AUC, PR AUC (average precision), precision/recall/F1 at the model's own threshold and
    a threshold table."""
    t0 = time.perf_counter()
    problems = list(ds.problems)
    ys, ss = [], []
    unreadable = 0
    for s in ds.samples:
        im = _read(s.path, load, problems)
        if im is None:
            unreadable += 1
            continue
        ys.append(bool(s.label))
        ss.append(scorer.score(im))
    y, sc = np.asarray(ys, bool), np.asarray(ss, np.float64)
    at = metrics.confusion(y, sc, scorer.threshold)
    curve = metrics.roc_curve(y, sc)
    res = _header("nudity", ds, scorer.name) | {
        "samples": len(ds.samples),
        "scored": len(y),
        "unreadable": unreadable,
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
        "roc_auc": metrics.roc_auc(y, sc),
        "pr_auc": metrics.average_precision(y, sc),
        "threshold": scorer.threshold,
        "precision": at.precision,
        "recall": at.recall,
        "f1": at.f1,
        "fpr": at.fpr,
        "recall@1%fpr": metrics.tpr_at_fpr(y, sc, 0.01)[0],
        "thresholds": metrics.threshold_table(y, sc, thresholds),
        "roc": curve.as_lists(),
        "problems": problems,
    }
    if out is not None and len(y):
        from heroes.bench.plots import roc_plot

        res["plots"] = roc_plot({scorer.name: curve}, Path(out), f"nudity-roc-{scorer.name}")
    res["seconds"] = time.perf_counter() - t0
    return _clean(res)


def _embed_all(
    paths: Sequence[Path], embedder: Embedder, load: Loader, problems: list[dict[str, str]]
) -> dict[Path, NDArray[np.float32] | None]:
    vecs: dict[Path, NDArray[np.float32] | None] = {}
    for p in paths:
        if p in vecs:
            continue
        im = _read(p, load, problems)
        v = embedder.embed(im) if im is not None else None
        if im is not None and v is None:
            problems.append({"path": str(p), "reason": "no face found"})
        vecs[p] = (
            None if v is None else np.asarray(v, np.float32) / max(float(np.linalg.norm(v)), 1e-12)
        )
    return vecs


def face_verify(
    ds: Dataset, embedder: Embedder, *, out: Path | None = None, load: Loader = load_rgb
) -> dict[str, Any]:
    """Cosine similarity per pair; 10-fold accuracy (LFW protocol), ROC AUC, TAR at FAR 1e-3."""
    t0 = time.perf_counter()
    problems = list(ds.problems)
    vecs = _embed_all([p for pr in ds.pairs for p in (pr.a, pr.b)], embedder, load, problems)
    ys, ss, missed = [], [], 0
    for pr in ds.pairs:
        va, vb = vecs[pr.a], vecs[pr.b]
        if va is None or vb is None:
            missed += 1
            continue
        ys.append(pr.same)
        ss.append(float(va @ vb))
    y, sc = np.asarray(ys, bool), np.asarray(ss)
    curve = metrics.roc_curve(y, sc)
    tar3, thr3 = metrics.tpr_at_fpr(y, sc, 1e-3)
    tar2, thr2 = metrics.tpr_at_fpr(y, sc, 1e-2)
    best, best_t = metrics.best_threshold_accuracy(y, sc) if len(y) else (math.nan, math.nan)
    res = _header("face-verify", ds, embedder.name) | {
        "pairs": len(ds.pairs),
        "pairs_scored": len(y),
        "pairs_missed": missed,
        "same": int(y.sum()),
        "different": int((~y).sum()),
        "accuracy_10fold": metrics.kfold_accuracy(y, sc, 10),
        "accuracy_best": best,
        "best_threshold": best_t,
        "roc_auc": metrics.roc_auc(y, sc),
        "tar@far1e-3": tar3,
        "threshold@far1e-3": thr3,
        "tar@far1e-2": tar2,
        "threshold@far1e-2": thr2,
        "roc": curve.as_lists(),
        "problems": problems,
    }
    if out is not None and len(y):
        from heroes.bench.plots import roc_plot

        res["plots"] = roc_plot({embedder.name: curve}, Path(out), f"verify-roc-{embedder.name}")
    res["seconds"] = time.perf_counter() - t0
    return _clean(res)


def search(
    ds: Dataset,
    embedder: Embedder,
    *,
    ks: Sequence[int] = (1, 5, 10),
    load: Loader = load_rgb,
) -> dict[str, Any]:
    """recall@k and mAP, exact cosine ranking over the whole set, each query left out."""
    t0 = time.perf_counter()
    problems = list(ds.problems)
    vecs = _embed_all([s.path for s in ds.samples], embedder, load, problems)
    keep = [i for i, s in enumerate(ds.samples) if vecs[s.path] is not None]
    pos = {i: j for j, i in enumerate(keep)}
    ranked: list[list[int]] = []
    relevant: list[set[int]] = []
    queries_missed = 0
    if keep:
        db = np.stack([vecs[ds.samples[i].path] for i in keep])  # type: ignore[misc]
        groups = np.asarray([ds.samples[i].label for i in keep])
        for q in ds.queries:
            if q not in pos:
                queries_missed += 1
                continue
            j = pos[q]
            sims = db @ db[j]
            order = [int(k) for k in np.argsort(-sims, kind="stable") if k != j]
            ranked.append(order)
            relevant.append({int(k) for k in np.nonzero(groups == groups[j])[0] if k != j})
    else:
        queries_missed = len(ds.queries)
    m = metrics.retrieval_metrics(ranked, relevant, ks)
    res = _header("search", ds, embedder.name) | {
        "images": len(ds.samples),
        "embedded": len(keep),
        "missed": len(ds.samples) - len(keep),
        "queries": len(ds.queries),
        "queries_scored": int(m.pop("queries")),
        "queries_missed": queries_missed,
        **m,
        "problems": problems,
    }
    res["seconds"] = time.perf_counter() - t0
    return _clean(res)


#: the columns of the comparison table per task (result key, header)
TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "age": [
        ("scored", "faces"),
        ("faces_missed", "missed"),
        ("mae", "MAE"),
        ("cs@5", "CS@5"),
        ("minor_roc_auc", "minor AUC"),
        ("minor_recall@1%fpr", "minor recall @1% adults"),
        ("minor_recall@5%fpr", "minor recall @5% adults"),
        ("minor_ece", "ECE"),
    ],
    "nudity": [
        ("scored", "images"),
        ("roc_auc", "ROC AUC"),
        ("pr_auc", "PR AUC"),
        ("threshold", "threshold"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("f1", "F1"),
    ],
    "face-verify": [
        ("pairs_scored", "pairs"),
        ("pairs_missed", "missed"),
        ("accuracy_10fold", "accuracy (10-fold)"),
        ("roc_auc", "ROC AUC"),
        ("tar@far1e-3", "TAR@FAR1e-3"),
    ],
    "search": [
        ("embedded", "images"),
        ("queries_scored", "queries"),
        ("hit@1", "hit@1"),
        ("hit@5", "hit@5"),
        ("recall@5", "recall@5"),
        ("recall@10", "recall@10"),
        ("mAP", "mAP"),
    ],
}


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per model, the task's headline metrics as columns."""
    if not results:
        return ""
    task = results[0]["task"]
    cols = TABLE_COLUMNS[task]
    lines = [
        "| model | " + " | ".join(h for _, h in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for r in results:
        lines.append(f"| {r['model']} | " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    if task == "age":
        bands = [b for b, _, _ in metrics.AGE_BANDS]
        lines += ["", "| model | " + " | ".join(f"MAE {b}" for b in bands) + " |"]
        lines.append("|---" * (len(bands) + 1) + "|")
        for r in results:
            cells = [
                f"{_fmt(r['mae_by_band'][b]['mae'])} (n={r['mae_by_band'][b]['n']})" for b in bands
            ]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
