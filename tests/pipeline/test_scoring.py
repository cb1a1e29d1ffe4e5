"""Priority tiers and their reasons."""

from __future__ import annotations

from heroes.config import ScoringWeights
from heroes.pipeline.scoring import score_item

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
