"""Priority of each item for review, with the reasons that make it up.

``priority`` is in [0, 1] and falls in tiers, so a weaker kind of evidence never outranks a
stronger one:

1. **Known-bad hash match** (exact MD5/SHA-1/SHA-256): ``0.90 + 0.10 * w(category)``.
2. **PDQ near-duplicate of a known-bad file**: ``0.80 + 0.09 * w(category) * (1 - d / (D + 1))``
   for Hamming distance ``d`` within the match distance ``D``.
3. **Model evidence** (at most 0.79), per image or video frame: ``m``, the highest P(age < 18) of
   its faces, and ``n``, its explicit-nudity score. A tier is named only when its thresholds hold:

   a. a face estimated under 18 (``m >= minor_threshold``) and explicit nudity
      (``n >= threshold``, the record's ``nudity.threshold``) **in the same frame**:
      ``0.60 + 0.19 * m * n`` of the frame where ``m * n`` is highest;
   b. explicit nudity anywhere, but no such face in its frame:
      ``0.30 + 0.15 * n_max + 0.09 * m_max``;
   c. weaker evidence, no explicit nudity: ``0.15 * n_max + 0.09 * m_max`` (at most 0.24), so a
      photo of a child with no nudity stays below every explicit finding.

   Faces whose record says ``confirmed: false`` (the independent human-face check disagreed with
   the detector) do not count in ``m``. Videos take the maxima over frames and record the time of
   the frame that set each reason.
4. Everything else is 0, with files that failed to decode (``error``) at 0.01 so that they come
   before plainly benign files; a damaged file whose readable part was analysed gets at least
   0.01 too; known-good files are 0 and ranked last.

``w(category)`` is the severity weight of a category in its scheme (VICS-US: 1 CAM 1.0,
2 exploitive 0.8, 4 comparison 0.5, 3 CGI 0.4, 0 non-pertinent 0.0; uncategorised 0.6). Every
number above is a field of :class:`ScoringWeights` and can be changed (``HEROES_SCORING__*``);
settings that would let two tiers overlap are refused.

Wording of ``why[].reason`` (each says only what its numbers support; model reasons below
``why_floor`` are left out):

==========================================================  =====================================
reason                                                      when
==========================================================  =====================================
``known-bad md5|sha1|sha256 match``                         exact hash in a known-bad set
``PDQ near-duplicate of a known-bad file``                  PDQ within the match distance
``likely minor and explicit nudity in the same frame``      tier a
``explicit nudity``                                         ``n_max >= threshold`` (tier b)
``low nudity score, below the explicit threshold``          ``0 < n_max < threshold``
``face estimated under 18``                                 ``m_max >= minor_threshold``
``low probability that a face is under 18``                 ``0 < m_max < minor_threshold``
``damaged file: only the part that decoded was analysed``   status ok with a decode ``error``
``could not be decoded: review by hand``                    status error
``known-good hash set``                                     status known_good
==========================================================  =====================================

Each entry also carries ``value`` (its share of the priority) and the numbers it rests on:
``nudity`` and ``threshold``, ``p_minor`` and ``age`` (expected age of that face), ``frame_time``
(videos), ``hashset``, ``category``, ``distance``, ``via_item``, ``error``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from heroes.config import ScoringWeights

REASON_MINOR_AND_EXPLICIT = "likely minor and explicit nudity in the same frame"
REASON_EXPLICIT = "explicit nudity"
REASON_LOW_NUDITY = "low nudity score, below the explicit threshold"
REASON_MINOR = "face estimated under 18"
REASON_WEAK_MINOR = "low probability that a face is under 18"
REASON_DAMAGED = "damaged file: only the part that decoded was analysed"
REASON_UNDECODED = "could not be decoded: review by hand"


@dataclass(slots=True)
class _Frame:
    """One still or video frame: its most likely minor face and its nudity score."""

    p_minor: float = 0.0
    age: float | None = None
    nudity: float = 0.0


def _frames(
    faces: list[dict[str, Any]], nudity: dict[str, Any] | None
) -> dict[float | None, _Frame]:
    """Per frame time (None for a still)."""
    per: dict[float | None, _Frame] = {}
    if nudity:
        frames = nudity.get("frames")
        if frames:
            for f in frames:
                per.setdefault(f["time"], _Frame()).nudity = float(f["score"] or 0)
        else:
            per.setdefault(nudity.get("frame_time"), _Frame()).nudity = float(
                nudity.get("score") or 0
            )
    for face in faces:
        if face.get("confirmed") is False:
            continue  # not a human face by the second check (an animal, a pattern)
        slot = per.setdefault(face.get("frame_time"), _Frame())
        p = float(face.get("p_minor") or 0)
        if p > slot.p_minor or (slot.age is None and p >= slot.p_minor):
            slot.p_minor, slot.age = p, face.get("age")
    return per


def _shown(value: float, threshold: float) -> float:
    """``value`` to 4 decimals, never rounded across its threshold (0.49996 shows as 0.4999, not
    0.5, next to "below the threshold 0.5")."""
    shown = round(value, 4)
    if value < threshold <= shown:
        shown = math.floor(value * 10_000) / 10_000
    elif shown < threshold <= value:
        shown = math.ceil(value * 10_000) / 10_000
    return shown


def _argmax(frames: dict[float | None, _Frame], value: Any) -> tuple[float | None, _Frame]:
    return max(frames.items(), key=lambda item: value(item[1]))


def _model_evidence(
    frames: dict[float | None, _Frame], threshold: float, weights: ScoringWeights
) -> tuple[float, list[dict[str, Any]]]:
    """Priority and reasons of the model tiers (3a-3c of the module docstring)."""
    floor = weights.why_floor
    n_time, n_frame = _argmax(frames, lambda f: f.nudity)
    m_time, m_frame = _argmax(frames, lambda f: f.p_minor)
    n_max, m_max = n_frame.nudity, m_frame.p_minor
    both = {
        t: f
        for t, f in frames.items()
        if f.p_minor >= weights.minor_threshold and f.nudity >= threshold
    }
    if both:
        t, f = _argmax(both, lambda f: f.p_minor * f.nudity)
        p = weights.minor_and_explicit_base + weights.minor_and_explicit * f.p_minor * f.nudity
        p = min(weights.model_cap, p)
        entry = {
            "reason": REASON_MINOR_AND_EXPLICIT,
            "p_minor": _shown(f.p_minor, weights.minor_threshold),
            "nudity": _shown(f.nudity, threshold),
            "threshold": threshold,
            "frame_time": t,
            "value": round(p, 4),
        }
        if f.age is not None:
            entry["age"] = round(float(f.age), 1)
        return p, [entry]
    why: list[dict[str, Any]] = []
    explicit = n_max >= threshold
    n_part = (weights.explicit_base if explicit else 0.0) + weights.explicit * n_max
    m_part = weights.minor * m_max
    if n_part >= floor:
        why.append(
            {
                "reason": REASON_EXPLICIT if explicit else REASON_LOW_NUDITY,
                "nudity": _shown(n_max, threshold),
                "threshold": threshold,
                "frame_time": n_time,
                "value": round(n_part, 4),
            }
        )
    if m_part >= floor:
        entry = {
            "reason": REASON_MINOR if m_max >= weights.minor_threshold else REASON_WEAK_MINOR,
            "p_minor": _shown(m_max, weights.minor_threshold),
            "frame_time": m_time,
            "value": round(m_part, 4),
        }
        if m_frame.age is not None:
            entry["age"] = round(float(m_frame.age), 1)
        why.append(entry)
    return min(weights.model_cap, n_part + m_part), why


def score_item(
    status: str,
    known_match: dict[str, Any] | None,
    faces: list[dict[str, Any]] | None,
    nudity: dict[str, Any] | None,
    weights: ScoringWeights,
    max_distance: int = 31,
    error: str | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """``(priority, why)`` of one item; ``why`` names each contribution and its value.

    ``error`` is the record's ``error`` text: on an ``ok`` record it says the file was damaged and
    only partly decoded (the part that decoded was analysed).
    """
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
    p = 0.0
    frames = _frames(faces or [], nudity)
    if frames:
        threshold = float((nudity or {}).get("threshold") or weights.explicit_threshold)
        p, why = _model_evidence(frames, threshold, weights)
    if status == "error":
        return weights.error, [{"reason": REASON_UNDECODED, "error": error, "value": weights.error}]
    if error and status == "ok":
        # ranked at least like a file that could not be decoded: the unread part may matter
        lift = max(0.0, weights.error - p)
        why.append({"reason": REASON_DAMAGED, "error": error, "value": round(lift, 4)})
        p += lift
    return p, why
