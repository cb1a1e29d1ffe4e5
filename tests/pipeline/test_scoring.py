"""Priority tiers and their reasons."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heroes.cli import _why_text
from heroes.config import ScoringWeights
from heroes.pipeline.scoring import (
    REASON_DAMAGED,
    REASON_EXPLICIT,
    REASON_LOW_NUDITY,
    REASON_MINOR,
    REASON_MINOR_AND_EXPLICIT,
    REASON_UNDECODED,
    REASON_WEAK_MINOR,
    score_item,
)

W = ScoringWeights()


def km(method: str, category: str | None = "1", distance: int = 0, **extra: object) -> dict:
    return {
        "hashset": "set",
        "category": category,
        "category_name": "x",
        "scheme": "VICS-US",
        "method": method,
        "distance": distance,
        "known_good": False,
        **extra,
    }


def test_tiers_never_cross() -> None:
    exact_low, _ = score_item("ok", km("md5", category="0"), [], None, W)
    pdq_high, _ = score_item("ok", km("pdq", category="1", distance=0), [], None, W)
    pdq_low, _ = score_item("ok", km("pdq", category="0", distance=31), [], None, W)
    faces = [{"p_minor": 1.0, "frame_time": None}]
    model_max, _ = score_item("ok", None, faces, {"score": 1.0, "frame_time": None}, W)
    assert exact_low > pdq_high >= pdq_low > model_max
    assert model_max <= W.model_cap


def test_category_severity_orders_exact_matches() -> None:
    cam, _ = score_item("ok", km("sha1", "1"), [], None, W)
    exploit, _ = score_item("ok", km("sha1", "2"), [], None, W)
    uncategorised, _ = score_item("ok", km("sha1", None), [], None, W)
    assert cam > exploit > uncategorised


def test_minor_and_nudity_must_share_a_frame() -> None:
    faces = [{"p_minor": 0.9, "frame_time": 1.0}]
    same = {
        "score": 0.8,
        "frame_time": 1.0,
        "frames": [{"time": 1.0, "score": 0.8}, {"time": 5.0, "score": 0.0}],
    }
    apart = {
        "score": 0.8,
        "frame_time": 5.0,
        "frames": [{"time": 1.0, "score": 0.0}, {"time": 5.0, "score": 0.8}],
    }
    p_same, why_same = score_item("ok", None, faces, same, W)
    p_apart, _ = score_item("ok", None, faces, apart, W)
    assert p_same > p_apart
    combo = next(w for w in why_same if w["reason"].startswith("likely minor and explicit"))
    assert combo["frame_time"] == 1.0


def test_known_good_is_zero_and_errors_come_before_benign() -> None:
    good, why = score_item("known_good", {"hashset": "nsrl", "known_good": True}, [], None, W)
    err, _ = score_item("error", None, [], None, W)
    benign, why_benign = score_item("ok", None, [], {"score": 0.0, "frame_time": None}, W)
    assert good == 0.0 and why[0]["reason"] == "known-good hash set"
    assert err > benign == 0.0 and why_benign == []


def test_video_frame_match_keeps_its_time() -> None:
    p, why = score_item("ok", km("pdq", distance=10, frame_time=3.0), [], None, W)
    assert why[0]["frame_time"] == 3.0 and 0.8 < p < 0.9


# --- reasons follow the thresholds -----------------------------------------------------------


def still(score: float, threshold: float = 0.5) -> dict:
    return {
        "score": score,
        "explicit": score >= threshold,
        "threshold": threshold,
        "frame_time": None,
    }


def face(p_minor: float, age: float = 5.0, frame_time: float | None = None) -> dict:
    return {"p_minor": p_minor, "age": age, "frame_time": frame_time}


def reasons(why: list[dict]) -> list[str]:
    return [w["reason"] for w in why]


def test_a_clothed_toddler_with_a_trace_nudity_score_is_a_minor_face_and_nothing_explicit() -> None:
    p, why = score_item("ok", None, [face(0.97, age=2.4)], still(0.0187), W)
    assert reasons(why) == [REASON_MINOR]
    assert why[0]["p_minor"] == 0.97 and why[0]["age"] == 2.4
    assert why[0]["value"] == round(W.minor * 0.97, 4)
    assert p < W.explicit_base
    assert not any("explicit" in r and "below" not in r for r in reasons(why))


def test_a_coffee_cup_scoring_015_is_a_low_nudity_score() -> None:
    p, why = score_item("ok", None, [], still(0.15), W)
    assert reasons(why) == [REASON_LOW_NUDITY]
    assert (why[0]["nudity"], why[0]["threshold"], why[0]["value"]) == (0.15, 0.5, 0.0225)
    assert p == pytest.approx(0.0225)


@pytest.mark.parametrize(
    ("score", "threshold", "explicit"),
    [(0.49, 0.5, False), (0.5, 0.5, True), (0.93, 0.5, True), (0.6, 0.7, False), (0.7, 0.7, True)],
)
def test_explicit_nudity_is_named_only_at_or_above_the_records_threshold(
    score: float, threshold: float, explicit: bool
) -> None:
    p, why = score_item("ok", None, [], still(score, threshold), W)
    assert reasons(why) == [REASON_EXPLICIT if explicit else REASON_LOW_NUDITY]
    assert why[0]["threshold"] == threshold
    assert (p >= W.explicit_base) is explicit


@pytest.mark.parametrize(
    ("p_minor", "score", "tier"),
    [(0.49, 0.95, False), (0.95, 0.49, False), (0.5, 0.5, True), (0.9, 0.8, True)],
)
def test_the_minor_and_explicit_tier_needs_both_thresholds_in_one_frame(
    p_minor: float, score: float, tier: bool
) -> None:
    p, why = score_item("ok", None, [face(p_minor)], still(score), W)
    assert (REASON_MINOR_AND_EXPLICIT in reasons(why)) is tier
    assert (p >= W.minor_and_explicit_base) is tier
    if tier:
        assert reasons(why) == [REASON_MINOR_AND_EXPLICIT]
        assert (why[0]["p_minor"], why[0]["nudity"]) == (p_minor, score)
        assert p == pytest.approx(
            W.minor_and_explicit_base + W.minor_and_explicit * p_minor * score
        )


def test_a_score_just_under_the_threshold_is_never_shown_as_the_threshold() -> None:
    _, why = score_item("ok", None, [face(0.499996)], still(0.499996), W)
    assert reasons(why) == [REASON_LOW_NUDITY, REASON_WEAK_MINOR]
    assert why[0]["nudity"] == 0.4999 and why[1]["p_minor"] == 0.4999


def test_a_weak_minor_probability_says_so() -> None:
    _, why = score_item("ok", None, [face(0.2, age=24.0)], still(0.0), W)
    assert reasons(why) == [REASON_WEAK_MINOR]


def test_a_minor_face_and_explicit_nudity_in_different_frames_name_their_own_times() -> None:
    faces = [face(0.95, frame_time=1.0)]
    nudity = {
        "score": 0.9,
        "threshold": 0.5,
        "frame_time": 5.0,
        "frames": [{"time": 1.0, "score": 0.01}, {"time": 5.0, "score": 0.9}],
    }
    p, why = score_item("ok", None, faces, nudity, W)
    assert reasons(why) == [REASON_EXPLICIT, REASON_MINOR]
    assert why[0]["frame_time"] == 5.0 and why[1]["frame_time"] == 1.0
    assert W.explicit_base <= p < W.minor_and_explicit_base


def test_a_photo_of_a_child_without_nudity_ranks_below_every_explicit_finding() -> None:
    child, _ = score_item("ok", None, [face(1.0)], still(0.4999), W)
    weakest_explicit, _ = score_item("ok", None, [], still(0.5), W)
    assert child < weakest_explicit


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    p_minor=st.floats(0, 1),
    score=st.floats(0, 1),
    threshold=st.floats(0.05, 1),
)
def test_every_reason_holds_for_its_numbers(p_minor: float, score: float, threshold: float) -> None:
    p, why = score_item("ok", None, [face(p_minor)], still(score, threshold), W)
    assert 0 <= p <= W.model_cap
    assert sum(w["value"] for w in why) == pytest.approx(p, abs=W.why_floor * 2 + 1e-3)
    for w in why:
        r = w["reason"]
        if r == REASON_MINOR_AND_EXPLICIT:
            assert p_minor >= W.minor_threshold and score >= threshold
        elif r == REASON_EXPLICIT:
            assert score >= threshold and p_minor < W.minor_threshold
        elif r == REASON_LOW_NUDITY:
            assert 0 < score < threshold
        elif r == REASON_MINOR:
            assert p_minor >= W.minor_threshold and score < threshold
        elif r == REASON_WEAK_MINOR:
            assert 0 < p_minor < W.minor_threshold
        else:
            raise AssertionError(f"unexpected reason {r!r}")
        if "nudity" in w:
            assert (w["nudity"] >= w["threshold"]) is (score >= threshold), "shown as found"
        if "p_minor" in w:
            assert (w["p_minor"] >= W.minor_threshold) is (p_minor >= W.minor_threshold)
    explicit = score >= threshold
    assert (p >= W.explicit_base) is explicit
    assert (p >= W.minor_and_explicit_base) is (explicit and p_minor >= W.minor_threshold)


def test_weights_that_would_let_tiers_overlap_are_refused() -> None:
    with pytest.raises(ValueError, match="explicit_base"):
        ScoringWeights(explicit_base=0.2)
    with pytest.raises(ValueError, match="model_cap"):
        ScoringWeights(minor_and_explicit=0.55)


# --- damaged files ---------------------------------------------------------------------------


def test_a_damaged_file_that_was_analysed_says_so_and_keeps_its_evidence() -> None:
    damage = "truncated image: image file is truncated (97% of rows decoded)"
    p, why = score_item("ok", None, [face(0.9)], still(0.8), W, error=damage)
    assert reasons(why) == [REASON_MINOR_AND_EXPLICIT, REASON_DAMAGED]
    assert why[1]["error"] == damage and why[1]["value"] == 0.0, "the evidence already ranks it"
    assert p == pytest.approx(W.minor_and_explicit_base + W.minor_and_explicit * 0.9 * 0.8)
    benign, why = score_item("ok", None, [], still(0.0), W, error=damage)
    assert reasons(why) == [REASON_DAMAGED] and benign == W.error == why[0]["value"]
    weak, why = score_item("ok", None, [], still(0.04), W, error=damage)
    assert weak == pytest.approx(W.error) and sum(w["value"] for w in why) == pytest.approx(weak)


def test_an_undecodable_file_names_its_error() -> None:
    p, why = score_item("error", None, None, None, W, error="cannot identify image")
    assert (p, reasons(why), why[0]["error"]) == (
        W.error,
        [REASON_UNDECODED],
        "cannot identify image",
    )


def test_reasons_read_as_sentences_in_the_queue() -> None:
    _, why = score_item("ok", None, [face(0.97, age=2.4)], still(0.15), W)
    assert [_why_text(w) for w in why] == [
        "low nudity score, below the explicit threshold"
        " (nudity score 0.15, explicit threshold 0.5)",
        "face estimated under 18 (P(under 18) 0.97, estimated age 2.4)",
    ]
