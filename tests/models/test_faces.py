"""The face branch on benign photos: landmarks, age, identity embedding."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data as data

from heroes.models.faces import AgeEstimator, calibrated_interval
from heroes.pipeline.infer import Analyzer, InferOptions


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(InferOptions(scene_embed=None))


def _face(analyzer: Analyzer, image: np.ndarray) -> tuple[dict, np.ndarray]:
    (res,) = analyzer.analyze([image], [None])
    assert len(res.faces) == 1, res.faces
    vecs = [v["vector"] for v in res.vectors if v["kind"] == "face"]
    return res.faces[0], vecs[0]


def test_astronaut_is_an_adult_of_plausible_age(analyzer: Analyzer) -> None:
    face, _ = _face(analyzer, data.astronaut())
    assert face["score"] >= 0.5
    assert 25 <= face["age"] <= 60
    assert face["p_minor"] < 0.1
    lo, hi = face["age_interval"]
    assert lo <= face["age"] <= hi
    assert len(face["landmarks"]) == 5


def test_cameraman_has_one_face(analyzer: Analyzer) -> None:
    face, _ = _face(analyzer, np.stack([data.camera()] * 3, -1))
    assert 0 <= face["p_minor"] <= 1


def test_identity_embedding_matches_a_flipped_copy_and_not_another_person(
    analyzer: Analyzer,
) -> None:
    _, astro = _face(analyzer, data.astronaut())
    _, flipped = _face(analyzer, np.ascontiguousarray(data.astronaut()[:, ::-1]))
    _, cam = _face(analyzer, np.stack([data.camera()] * 3, -1))
    assert np.linalg.norm(astro) == pytest.approx(1.0, abs=1e-5)
    same = float(astro @ flipped)
    other = float(astro @ cam)
    assert same >= 0.9
    assert other < same


def test_age_distribution_decodes_to_expectation_minor_mass_and_interval() -> None:
    est = AgeEstimator()
    bins = est.bins
    probs = np.zeros((2, len(bins)), np.float32)
    probs[0, bins.tolist().index(10)] = 1.0  # certainly 10
    probs[1, bins.tolist().index(30)] = 0.5
    probs[1, bins.tolist().index(40)] = 0.5
    a, b = est.decode(probs)
    assert a.age == pytest.approx(10) and a.p_minor == pytest.approx(1.0)
    assert b.age == pytest.approx(35) and b.p_minor == 0.0
    # calibrated: a one-bin distribution still gets an interval as wide as the model's error
    assert a.interval[0] < 10 - est.min_half_width and a.interval[1] > 10 + est.min_half_width
    assert b.interval[0] < 30 and b.interval[1] > 40


def _distributions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random age distributions over the model's bins: peaked, bimodal, flat, at the edges."""
    bins = AgeEstimator().bins.astype(np.float64)
    rng = np.random.default_rng(seed)
    out = np.zeros((n, len(bins)))
    for r in range(n):
        kind = r % 4
        if kind == 0:  # one bin
            out[r, rng.integers(0, len(bins))] = 1.0
        elif kind == 1:  # a Gaussian, narrow or wide, anywhere (edges included)
            mu, sd = rng.uniform(-5, 85), rng.uniform(0.3, 15)
            out[r] = np.exp(-0.5 * ((bins - mu) / sd) ** 2) + 1e-12
        elif kind == 2:  # two far peaks
            out[r, rng.integers(0, 20)] = rng.uniform(0.2, 1)
            out[r, rng.integers(50, len(bins))] = rng.uniform(0.2, 1)
        else:  # a Dirichlet, spiky or flat
            out[r] = rng.dirichlet(np.full(len(bins), rng.choice([0.05, 1.0, 20.0])))
    return out / out.sum(axis=1, keepdims=True), bins


@pytest.mark.parametrize("sigma", [0.0, 6.0])
@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_age_interval_contains_the_estimate_and_is_never_narrower_than_the_floor(
    sigma: float, temperature: float
) -> None:
    probs, bins = _distributions(400, seed=1)
    est = probs @ bins
    lo, hi = calibrated_interval(
        probs, bins, est, coverage=0.8, temperature=temperature, sigma=sigma, min_half_width=2.0
    )
    assert (lo <= est + 1e-9).all() and (est <= hi + 1e-9).all()
    assert (hi - lo >= 4.0 - 1e-9).all(), (hi - lo).min()
    assert (lo >= bins[0] - 0.1).all() and (hi <= bins[-1]).all()


def test_age_interval_widens_with_confidence_level() -> None:
    probs, bins = _distributions(200, seed=2)
    est = probs @ bins
    previous = None
    for coverage in (0.5, 0.6, 0.8, 0.9, 0.95, 0.99):
        lo, hi = calibrated_interval(probs, bins, est, coverage=coverage, sigma=4.0)
        if previous is not None:
            assert (lo <= previous[0] + 1e-9).all() and (hi >= previous[1] - 1e-9).all()
        previous = (lo, hi)


def test_age_interval_covers_its_share_of_a_wide_distribution() -> None:
    """Without smoothing, the 80% interval of a wide Gaussian holds about 80% of its mass."""
    bins = AgeEstimator().bins.astype(np.float64)
    p = np.exp(-0.5 * ((bins - 40) / 8) ** 2)[None]
    p /= p.sum()
    lo, hi = calibrated_interval(p, bins, p @ bins, coverage=0.8)
    assert lo[0] == pytest.approx(40 - 1.2816 * 8, abs=0.6)
    assert hi[0] == pytest.approx(40 + 1.2816 * 8, abs=0.6)


def test_smoothing_and_temperature_widen_an_overconfident_interval() -> None:
    bins = AgeEstimator().bins.astype(np.float64)
    p = np.exp(-0.5 * ((bins - 30) / 1.5) ** 2)[None]
    p /= p.sum()
    e = p @ bins
    raw = calibrated_interval(p, bins, e, min_half_width=0.0)
    warm = calibrated_interval(p, bins, e, temperature=3.0, min_half_width=0.0)
    smooth = calibrated_interval(p, bins, e, sigma=6.0, min_half_width=0.0)
    width = [float(hi[0] - lo[0]) for lo, hi in (raw, warm, smooth)]
    assert width[0] < width[1] and width[0] < width[2]


def test_age_interval_refuses_a_coverage_outside_zero_one() -> None:
    p = np.ones((1, 81)) / 81
    with pytest.raises(ValueError, match="coverage"):
        calibrated_interval(p, AgeEstimator().bins, p @ AgeEstimator().bins, coverage=1.0)


def test_a_frame_without_faces_gives_no_face_records(analyzer: Analyzer) -> None:
    (res,) = analyzer.analyze([data.rocket()], [2.5])
    assert res.faces == [] and res.frame_time == 2.5
