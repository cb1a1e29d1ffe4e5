"""Priority of each item for review, with the reasons that make it up.

``priority`` is in [0, 1] and falls in tiers, so a weaker kind of evidence never outranks a
stronger one:

1. **Known-bad hash match** (exact MD5/SHA-1/SHA-256): ``0.90 + 0.10 * w(category)``.
2. **PDQ near-duplicate of a known-bad file**: ``0.80 + 0.09 * w(category) * (1 - d / (D + 1))``
   for Hamming distance ``d`` within the match distance ``D``.
3. **Model evidence** (capped at 0.79): for each image or video frame, the most likely minor face
   ``m = max P(age < 18)`` and the explicit-nudity score ``n`` of the same frame combine as
   ``0.55 * m * n + 0.15 * n_max + 0.09 * m_max``. Videos take the maximum over frames and record
   the time of the frame that set it.
4. Everything else is 0, with files that failed to decode (``error``) at 0.01 so that they come
   before plainly benign files; known-good files are 0 and ranked last.

``w(category)`` is the severity weight of a category in its scheme (VICS-US: 1 CAM 1.0,
2 exploitive 0.8, 4 comparison 0.5, 3 CGI 0.4, 0 non-pertinent 0.0; uncategorised 0.6). Every
number above is a field of :class:`ScoringWeights` and can be changed (``HEROES_SCORING__*``).
"""

from __future__ import annotations

from typing import Any

from heroes.config import ScoringWeights


def _frames(
    faces: list[dict[str, Any]], nudity: dict[str, Any] | None
) -> dict[float | None, tuple[float, float]]:
    """Per frame (None for a still): (max P(minor) of its faces, its nudity score)."""
    per: dict[float | None, list[float]] = {}
    if nudity:
        frames = nudity.get("frames")
        if frames:
            for f in frames:
                per.setdefault(f["time"], [0.0, 0.0])[1] = float(f["score"])
        else:
            per.setdefault(nudity.get("frame_time"), [0.0, 0.0])[1] = float(
                nudity.get("score") or 0
            )
    for face in faces:
        slot = per.setdefault(face.get("frame_time"), [0.0, 0.0])
        slot[0] = max(slot[0], float(face.get("p_minor") or 0))
    return {t: (m, n) for t, (m, n) in per.items()}


def score_item(
    status: str,
    known_match: dict[str, Any] | None,
    faces: list[dict[str, Any]] | None,
    nudity: dict[str, Any] | None,
    weights: ScoringWeights,
    max_distance: int = 31,
) -> tuple[float, list[dict[str, Any]]]:
    """``(priority, why)`` of one item; ``why`` names each contribution and its value."""
    why: list[dict[str, Any]] = []
    if status == "known_good":
        return 0.0, [
            {
                "reason": "known-good hash set",
                "hashset": (known_match or {}).get("hashset"),
                "value": 0.0,
            }
        ]
    if known_match and not known_match.get("known_good"):
        w = weights.category_weight(known_match.get("scheme"), known_match.get("category"))
        cat = known_match.get("category")
        label = (
            f"{cat} {known_match.get('category_name') or ''}".strip()
            if cat is not None
            else "uncategorised"
        )
        if known_match.get("method") != "pdq":
            p = weights.exact_base + weights.exact_span * w
            why.append(
                {
                    "reason": f"known-bad {known_match['method']} match",
                    "hashset": known_match.get("hashset"),
                    "category": label,
                    "value": round(p, 4),
                }
            )
            return p, why
        d = int(known_match.get("distance") or 0)
        p = weights.pdq_base + weights.pdq_span * w * (1 - d / (max_distance + 1))
        entry = {
            "reason": "PDQ near-duplicate of a known-bad file",
            "hashset": known_match.get("hashset"),
            "category": label,
            "distance": d,
            "value": round(p, 4),
        }
        if known_match.get("frame_time") is not None:
            entry["frame_time"] = known_match["frame_time"]
        if known_match.get("via_item") is not None:
            entry["via_item"] = known_match["via_item"]
        why.append(entry)
        return p, why
    frames = _frames(faces or [], nudity)
    if frames:
        best_t, best = None, -1.0
        m_max = max(m for m, _ in frames.values())
        n_max = max(n for _, n in frames.values())
        for t, (m, n) in frames.items():
            combo = m * n
            if combo > best:
                best_t, best = t, combo
        p = weights.minor_and_explicit * best + weights.explicit * n_max + weights.minor * m_max
        p = min(weights.model_cap, p)
        if p > 0:
            floor = weights.why_floor
            if weights.minor_and_explicit * best >= floor:
                m, n = frames[best_t]
                why.append(
                    {
                        "reason": "likely minor and explicit nudity in the same frame",
                        "p_minor": round(m, 4),
                        "nudity": round(n, 4),
                        "frame_time": best_t,
                        "value": round(weights.minor_and_explicit * best, 4),
                    }
                )
            if weights.explicit * n_max >= floor:
                why.append(
                    {
                        "reason": "explicit nudity score",
                        "nudity": round(n_max, 4),
                        "value": round(weights.explicit * n_max, 4),
                    }
                )
            if weights.minor * m_max >= floor:
                why.append(
                    {
                        "reason": "most likely minor face",
                        "p_minor": round(m_max, 4),
                        "value": round(weights.minor * m_max, 4),
                    }
                )
            return p, why
    if status == "error":
        return weights.error, [
            {"reason": "could not be decoded: review by hand", "value": weights.error}
        ]
    return 0.0, why
