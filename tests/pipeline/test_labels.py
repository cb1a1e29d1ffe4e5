"""Human labels: validation, copies, append-only history, the label object."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from heroes.pipeline.labels import Label, apply_label, current_labels
from heroes.store import CaseStore, LabelRow

SHA_A = "a" * 64
SHA_B = "b" * 64


def _item(item_id: int, path: str, sha256: str | None, status: str = "ok") -> dict[str, object]:
    return {"id": item_id, "evidence": "/ev", "path": path, "sha256": sha256, "status": status}


@pytest.fixture()
def store(tmp_path: Path) -> CaseStore:
    s = CaseStore(tmp_path / "case")
    s.insert_and_update(
        [
            _item(1, "a.jpg", SHA_A),
            _item(2, "b.jpg", SHA_B),
            _item(3, "copy/a.jpg", SHA_A, "duplicate"),
            _item(4, "x.zip!/a.jpg", SHA_A, "duplicate"),
            _item(5, "broken.jpg", None, "error"),
        ]
    )
    return s


@pytest.mark.parametrize("category", [-1, 5, 1.0, "1", True, False])
def test_label_refuses_a_category_outside_vics_us(category: object) -> None:
    with pytest.raises(ValueError):
        Label(category)  # type: ignore[arg-type]


def test_label_refuses_flags_and_texts_of_the_wrong_type() -> None:
    with pytest.raises(ValueError):
        Label(1, victim_identified="true")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Label(1, series=3)  # type: ignore[arg-type]


def test_label_accepts_every_vics_us_code_and_none() -> None:
    assert [Label(c).category_name for c in (0, 1, 2, 3, 4)][1] == "Child abuse material"
    assert Label(None).category_name is None


def test_a_label_applies_to_every_exact_copy(store: CaseStore) -> None:
    labelled = apply_label(store, [3], Label(1, series="S1"), by="ana")
    assert labelled == [1, 3, 4]
    labels = current_labels(store)
    assert sorted(labels) == [1, 3, 4]
    assert {labels[i]["category"] for i in labelled} == {1}


def test_the_label_object_has_every_field(store: CaseStore) -> None:
    apply_label(store, [2], Label(2, True, False, " Series X ", "looks staged"), by="ana")
    got = current_labels(store, [2])[2]
    assert got == {
        "category": 2,
        "category_name": "Child exploitive / age difficult",
        "scheme": "VICS-US",
        "victim_identified": True,
        "offender_identified": False,
        "series": "Series X",
        "note": "looks staged",
        "by": "ana",
        "at": got["at"],
    }
    at = datetime.fromisoformat(got["at"])
    assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 0


def test_the_latest_label_wins_and_history_is_kept(store: CaseStore) -> None:
    apply_label(store, [1], Label(1), by="ana")
    apply_label(store, [1], Label(0, note="adult, verified"), by="ben")
    now = current_labels(store, [1, 3])
    assert now[1]["category"] == 0 and now[1]["by"] == "ben"
    assert now[3]["note"] == "adult, verified"
    with store.session() as s:
        history = [(r.item_id, r.category, r.by) for r in s.execute(select(LabelRow)).scalars()]
    assert history.count((1, 1, "ana")) == 1 and history.count((1, 0, "ben")) == 1
    assert len(history) == 6


def test_unknown_item_ids_raise_and_write_nothing(store: CaseStore) -> None:
    with pytest.raises(KeyError, match="99"):
        apply_label(store, [1, 99], Label(1), by="ana")
    assert current_labels(store) == {}


def test_a_label_needs_who_set_it(store: CaseStore) -> None:
    with pytest.raises(ValueError):
        apply_label(store, [1], Label(1), by=" ")


def test_an_item_without_hashes_is_labelled_alone(store: CaseStore) -> None:
    assert apply_label(store, [5], Label(None, offender_identified=True), by="ana") == [5]
    assert current_labels(store) == {5: current_labels(store, [5])[5]}
    assert current_labels(store)[5]["category"] is None


def test_a_copy_found_later_takes_the_label_of_its_content(store: CaseStore) -> None:
    apply_label(store, [2], Label(4), by="ana")
    store.insert_and_update([_item(6, "later/b.jpg", SHA_B, "duplicate")])
    assert current_labels(store, [6])[6]["category"] == 4
    assert sorted(current_labels(store)) == [2, 6]


def test_current_labels_of_unlabelled_or_unknown_items_is_empty(store: CaseStore) -> None:
    apply_label(store, [2], Label(3), by="ana")
    assert current_labels(store, [1, 5, 1234]) == {}
