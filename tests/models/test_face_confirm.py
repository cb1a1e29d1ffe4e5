"""A second, independent check that a detected face is human: animal faces stay in the record,
marked unconfirmed, and count neither as likely minors nor towards identities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data as data

from heroes.config import ScoringWeights, Settings
from heroes.pipeline.infer import Analyzer, InferOptions
from heroes.pipeline.report import faces_found
from heroes.pipeline.scoring import REASON_MINOR, REASON_WEAK_MINOR, score_item
from heroes.search import persons
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow, VectorRow
from heroes.vectors import encode_vector

# crops (top, left, height, width) of the scikit-image cat photo on which the body-part detector
# reports a face; the first two were estimated P(minor) 0.98 and 0.51
CAT_CROPS = [(1, 42, 239, 359), (34, 136, 177, 266), (47, 38, 234, 352), (66, 80, 207, 312)]


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(InferOptions(scene_embed=None, face_embed=None))


@pytest.mark.parametrize("crop", CAT_CROPS)
def test_a_cat_face_is_kept_but_not_confirmed(analyzer: Analyzer, crop: tuple) -> None:
    y, x, h, w = crop
    (res,) = analyzer.analyze([np.ascontiguousarray(data.chelsea()[y : y + h, x : x + w])], [None])
    assert res.faces, "the detector no longer sees a face here: pick other crops"
    for face in res.faces:
        assert face["confirmed"] is False
        assert face["confirm_score"] is None or face["confirm_score"] < -0.6
        assert "p_minor" in face and "age_interval" in face  # still estimated, for a reviewer


def test_the_astronaut_and_the_cameraman_are_confirmed(analyzer: Analyzer) -> None:
    astro, cam = analyzer.analyze([data.astronaut(), np.stack([data.camera()] * 3, -1)], [None] * 2)
    for res in (astro, cam):
        assert len(res.faces) == 1
        assert res.faces[0]["confirmed"] is True
        assert res.faces[0]["confirm_score"] >= -0.6


def test_without_the_check_every_face_counts_as_confirmed() -> None:
    an = Analyzer(InferOptions(scene_embed=None, face_embed=None, face_confirm=None))
    y, x, h, w = CAT_CROPS[0]
    (res,) = an.analyze([np.ascontiguousarray(data.chelsea()[y : y + h, x : x + w])], [None])
    assert res.faces and all(f["confirmed"] is True for f in res.faces)
    assert all(f["confirm_score"] is None for f in res.faces)


def test_an_unconfirmed_face_does_not_count_as_a_likely_minor() -> None:
    w = ScoringWeights()
    cat = {"p_minor": 0.98, "age": 9.0, "frame_time": None, "confirmed": False}
    p, why = score_item("ok", None, [cat], None, w)
    assert p == 0.0 and not any(r["reason"] in (REASON_MINOR, REASON_WEAK_MINOR) for r in why)
    human = {**cat, "confirmed": True}
    p2, why2 = score_item("ok", None, [human, cat], None, w)
    assert [r["reason"] for r in why2] == [REASON_MINOR] and p2 > 0
    older = {k: v for k, v in cat.items() if k != "confirmed"}  # records made before the check
    assert score_item("ok", None, [older], None, w)[0] == p2


def _case(folder: Path, settings: Settings) -> None:
    """Three items with one face each, nearly the same vector; item 3's face is unconfirmed and
    has the highest P(minor)."""
    store = CaseStore(folder)
    rng = np.random.default_rng(0)
    base = rng.normal(size=128).astype(np.float32)
    with store.session() as s, s.begin():
        for item in (1, 2, 3):
            face = {
                "bbox": [0, 0, 9, 9],
                "score": 0.5,
                "age": 30.0 - item,
                "p_minor": 0.1 * item if item != 3 else 0.98,
                "face_id": f"{item}-0",
                "confirmed": item != 3,
            }
            s.add(
                ItemRow(
                    id=item,
                    evidence="/e",
                    path=f"{item}.jpg",
                    status="ok",
                    media_type="image",
                    faces=[face],
                )
            )
            v = base + 0.01 * rng.normal(size=128).astype(np.float32)
            s.add(
                VectorRow(
                    item_id=item,
                    kind="face",
                    model=settings.face_model,
                    ref=f"{item}-0",
                    dim=128,
                    vector=encode_vector(v / np.linalg.norm(v)),
                )
            )
    store.close()


def test_persons_leave_unconfirmed_faces_out(tmp_path: Path) -> None:
    settings = Settings()
    _case(tmp_path / "case", settings)
    people = persons(tmp_path / "case", min_faces=1, settings=settings)
    assert len(people) == 1
    assert people[0].faces == 2 and people[0].items == [1, 2]


def test_the_face_list_puts_unconfirmed_faces_after_confirmed_ones(tmp_path: Path) -> None:
    settings = Settings()
    _case(tmp_path / "case", settings)
    store = CaseStore(tmp_path / "case", create=False)
    try:
        found = faces_found(store)
    finally:
        store.close()
    assert [f["item_id"] for f in found] == [2, 1, 3]
