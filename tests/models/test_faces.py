"""The face branch on benign photos: landmarks, age, identity embedding."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data as data

from heroes.models.faces import AgeEstimator
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
    assert a.age == pytest.approx(10) and a.p_minor == pytest.approx(1.0) and a.interval == (10, 10)
    assert b.age == pytest.approx(35) and b.p_minor == 0.0 and b.interval == (30, 40)


def test_a_frame_without_faces_gives_no_face_records(analyzer: Analyzer) -> None:
    (res,) = analyzer.analyze([data.rocket()], [2.5])
    assert res.faces == [] and res.frame_time == 2.5
