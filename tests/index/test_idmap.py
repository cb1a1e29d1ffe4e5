from __future__ import annotations

import numpy as np
import pytest

from heroes.index import IdMap, Meta


def test_metas_with_and_without_optional_fields_round_trip_through_disk(tmp_path):
    metas = [
        Meta("case-ä", 1),
        Meta("case-ä", 2, 12.5, (1.0, 2.0, 3.5, 4.25), "face/ö-1"),
        Meta("other", -3, 0.0, None, ""),
    ]
    ids = IdMap.from_metas(metas)
    ids.save(tmp_path / "meta.npz")
    loaded = IdMap.load(tmp_path / "meta.npz")
    assert list(loaded) == metas
    assert sorted(loaded.cases) == ["case-ä", "other"]


def test_extending_recodes_strings_into_one_table(tmp_path):
    a = IdMap.from_columns(case="x", item_id=[1, 2], ref=["r1", None])
    b = IdMap.from_columns(case=["y", "x"], item_id=[3, 4], ref=[None, "r1"])
    a.save(tmp_path / "a.npz")
    loaded = IdMap.load(tmp_path / "a.npz")
    loaded.extend(b)
    loaded.extend(IdMap())
    assert list(loaded) == [
        Meta("x", 1, ref="r1"),
        Meta("x", 2),
        Meta("y", 3),
        Meta("x", 4, ref="r1"),
    ]


def test_many_single_row_extends_stay_linear():
    ids = IdMap()
    for i in range(3000):
        ids.extend(IdMap.from_columns(case="c", item_id=[i]))
    assert len(ids) == 3000 and ids[2999].item_id == 2999
    assert ids.item_ids.tolist() == list(range(3000))


def test_negative_rows_count_from_the_end_and_out_of_range_rows_raise():
    ids = IdMap.from_columns(case="c", item_id=np.arange(4))
    assert ids[-1].item_id == 3
    with pytest.raises(IndexError, match="row -5 is out of range"):
        ids[-5]


def test_mismatched_columns_and_non_string_refs_are_refused():
    with pytest.raises(ValueError, match="frame_time"):
        IdMap.from_columns(case="c", item_id=[1, 2], frame_time=[0.5])
    with pytest.raises(TypeError, match="string"):
        IdMap.from_columns(case="c", item_id=[1], ref=[5])  # type: ignore[list-item]
