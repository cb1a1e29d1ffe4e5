"""Plots of the benchmarks (matplotlib, no display): each written as SVG and PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from heroes.bench import metrics


def _figure():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: object, out: Path, stem: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("svg", "png"):
        p = out / f"{stem}.{ext}"
        fig.savefig(p, dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
        paths.append(str(p))
    return paths


def calibration_plot(y_true: ArrayLike, probs: ArrayLike, out: Path, stem: str) -> list[str]:
    """Reliability diagram of P(age<18): mean predicted probability against the observed share."""
    plt = _figure()
    table = [b for b in metrics.calibration_bins(y_true, probs) if b["n"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    ax.plot([b["mean_prob"] for b in table], [b["observed"] for b in table], "o-", label="model")
    for b in table:
        ax.annotate(str(b["n"]), (b["mean_prob"], b["observed"]), fontsize=7)
    ax.set(
        xlabel="predicted P(age < 18)",
        ylabel="observed share of minors",
        xlim=(0, 1),
        ylim=(0, 1),
        title="P(minor) calibration",
    )
    ax.legend(loc="upper left", fontsize=8)
    try:
        return _save(fig, out, stem)
    finally:
        plt.close(fig)


def roc_plot(curves: dict[str, metrics.Curve], out: Path, stem: str) -> list[str]:
    """ROC curves on a log FPR axis (the low-FPR end is where a lab sets its threshold)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, c in curves.items():
        fpr = np.r_[0.0, c.fpr]
        tpr = np.r_[0.0, c.tpr]
        ax.step(np.clip(fpr, 1e-4, 1), tpr, where="post", label=name)
    ax.set(
        xscale="log",
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(1e-4, 1),
        ylim=(0, 1.01),
        title="ROC",
    )
    ax.legend(loc="lower right", fontsize=8)
    try:
        return _save(fig, out, stem)
    finally:
        plt.close(fig)
