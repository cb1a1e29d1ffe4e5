"""The benchmark metrics against scikit-learn and hand-computed values on fixed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from heroes.bench import metrics

Y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 0])
S = np.array([0.9, 0.8, 0.8, 0.6, 0.5, 0.4, 0.3, 0.3, 0.2, 0.1])


def test_roc_auc_and_average_precision_match_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        s = rng.integers(0, 8, 60) / 7.0  # many ties
        assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
        assert metrics.average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    assert metrics.roc_auc(Y, S) == pytest.approx(roc_auc_score(Y, S))


def test_roc_auc_by_hand_on_a_tiny_case() -> None:
    # (pos, neg) pairs: 0.9>0.5, 0.9>0.1, 0.5=0.5 (half), 0.5>0.1 -> 3.5 / 4
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.875)
    assert metrics.roc_auc([1, 1, 0, 0], [0.4, 0.5, 0.5, 0.6]) == pytest.approx(0.125)
    assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))


def test_tpr_at_fpr_is_the_best_recall_within_the_false_positive_budget() -> None:
    fpr, tpr, thr = roc_curve(Y, S)
    for budget in (0.0, 1 / 6, 0.2, 0.5, 1.0):
        want = tpr[fpr <= budget + 1e-12].max()
        got, t = metrics.tpr_at_fpr(Y, S, budget)
        assert got == pytest.approx(want)
        flagged = S >= t
        assert (flagged & (Y == 0)).sum() / 6 <= budget + 1e-12
    # by hand: no negative may be flagged -> threshold 0.9 -> 1 of 4 minors
    assert metrics.tpr_at_fpr(Y, S, 0.0) == (0.25, 0.9)


def test_confusion_and_threshold_table_by_hand() -> None:
    c = metrics.confusion(Y, S, 0.5)  # flagged: 0.9 0.8 0.8 0.6 0.5
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 2, 4, 1)
    assert c.precision == pytest.approx(0.6)
    assert c.recall == pytest.approx(0.75)
    assert c.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    table = metrics.threshold_table(Y, S, [0.5, 0.95])
    assert table[0]["tp"] == 3 and table[1]["tp"] == 0 and math.isnan(table[1]["precision"])


def test_age_errors_cumulative_score_and_bands() -> None:
    t = np.array([5, 15, 20, 30, 50, 60])
    p = np.array([9, 15, 30, 31, 40, 66])
    assert metrics.mae(t, p) == pytest.approx((4 + 0 + 10 + 1 + 10 + 6) / 6)
    assert metrics.cumulative_score(t, p, 5) == pytest.approx(3 / 6)
    bands = metrics.mae_by_band(t, p)
    assert bands["0-12"] == {"n": 1, "mae": 4.0}
    assert bands["13-17"] == {"n": 1, "mae": 0.0}
    assert bands["41+"] == {"n": 2, "mae": 8.0}


def test_calibration_bins_and_expected_calibration_error() -> None:
    y = np.array([1, 1, 0, 0])
    p = np.array([0.95, 0.85, 0.15, 0.05])
    bins = metrics.calibration_bins(y, p, bins=2)
    assert bins[0]["n"] == 2 and bins[0]["mean_prob"] == pytest.approx(0.1)
    assert bins[1]["observed"] == 1.0
    assert metrics.expected_calibration_error(y, p, bins=2) == pytest.approx(0.1)


def test_kfold_accuracy_finds_a_separating_threshold() -> None:
    y = np.array([1, 0] * 10)
    s = np.where(y == 1, 0.9, 0.1) + np.linspace(0, 0.05, 20)
    assert metrics.kfold_accuracy(y, s, 10) == 1.0
    acc, t = metrics.best_threshold_accuracy([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1])
    assert (acc, t) == (0.75, pytest.approx(0.85))


def test_recall_at_k_and_map_by_hand() -> None:
    ranked = [[3, 1, 2, 4], [0, 2, 3, 4]]
    relevant = [{1, 2}, {4}]
    m = metrics.retrieval_metrics(ranked, relevant, ks=(1, 2, 3))
    assert m["recall@1"] == pytest.approx((0 + 0) / 2)
    assert m["recall@2"] == pytest.approx((0.5 + 0) / 2)
    assert m["recall@3"] == pytest.approx((1.0 + 0) / 2)
    assert (m["hit@1"], m["hit@2"], m["hit@3"]) == (0.0, 0.5, 0.5)
    # AP q0: hits at ranks 2, 3 -> (1/2 + 2/3) / 2; q1: hit at rank 4 -> 1/4
    assert m["mAP"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 4) / 2)
