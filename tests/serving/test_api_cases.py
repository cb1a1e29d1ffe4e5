"""Cases, the queue, item records, thumbnails (blurred by default, reveal audited and capped),
labels and the reviewer's preferences and exposure."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from served import Served
from sqlalchemy import select

from heroes.pipeline.discover import open_item
from heroes.pipeline.report import RECORD_FIELDS, record
from heroes.pipeline.video import frame_at
from heroes.serving.app import create_app
from heroes.serving.db import UserRow
from heroes.serving.thumbs import priority_frame
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow


def _ids(served: Served, case: str = "demo") -> dict[str, int]:
    store = CaseStore(served.root / case, create=False)
    try:
        with store.session() as s:
            return {p: i for i, p in s.query(ItemRow.id, ItemRow.path)}
    finally:
        store.close()


def _sharpness(webp: bytes) -> float:
    """Variance of a Laplacian: high for a sharp picture, near zero for a blurred one."""
    a = np.asarray(Image.open(io.BytesIO(webp)).convert("L"), dtype=np.float64)
    lap = a[1:-1, 1:-1] * 4 - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float(lap.var())


def _audit_rows(served: Served, action: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(served.root / "service.db") as con:
        return con.execute(
            'SELECT user, action, "case", target, detail, source FROM audit WHERE action = ?',
            (action,),
        ).fetchall()


def test_the_queue_pages_records_in_rank_order_with_a_label_field(
    client: TestClient, served_root: Served
) -> None:
    h = served_root.auth("ivy")
    page = client.get("/api/v1/cases/demo/queue?offset=0&limit=5", headers=h).json()
    assert page["offset"] == 0 and page["limit"] == 5 and len(page["items"]) == 5
    assert page["total"] == len(_ids(served_root))
    assert [r["rank"] for r in page["items"]] == [1, 2, 3, 4, 5]
    assert list(page["items"][0]) == [*RECORD_FIELDS]
    assert page["items"][0]["path"] == "DCIM/100DEMO/IMG_0004_rocket.jpg"  # known-bad first
    assert page["items"][0]["known_match"]["method"] in ("md5", "sha1", "sha256")
    rest = client.get("/api/v1/cases/demo/queue?offset=5&limit=500", headers=h).json()
    ranks = [r["rank"] for r in page["items"] + rest["items"]]
    assert ranks == sorted(ranks) and len(ranks) == page["total"]


def test_queue_records_are_the_export_records(client: TestClient, served_root: Served) -> None:
    got = client.get("/api/v1/cases/demo/queue?limit=500", headers=served_root.auth("ivy")).json()
    store = CaseStore(served_root.root / "demo", create=False)
    try:
        with store.session() as s:
            rows = {r.id: r for r in s.query(ItemRow)}
        for rec in got["items"]:
            want = record(rows[rec["item_id"]], rec["label"])
            assert rec == _jsonish(want)
    finally:
        store.close()


def _jsonish(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def test_the_queue_filters_by_status_and_priority(client: TestClient, served_root: Served) -> None:
    h = served_root.auth("ivy")
    errors = client.get("/api/v1/cases/demo/queue?status=error&limit=500", headers=h).json()
    assert errors["total"] >= 3 and {r["status"] for r in errors["items"]} == {"error"}
    top = client.get("/api/v1/cases/demo/queue?min_priority=0.5", headers=h).json()
    assert top["total"] >= 1 and all(r["priority"] >= 0.5 for r in top["items"])
    assert client.get("/api/v1/cases/demo/queue?limit=0", headers=h).status_code == 422
    bad = client.get("/api/v1/cases/demo/queue?min_priority=x", headers=h)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith(
        "application/problem+json"
    )


def test_an_item_is_its_record_and_a_missing_item_is_404(
    client: TestClient, served_root: Served
) -> None:
    ids = _ids(served_root)
    i = ids["misc/clip.mp4"]
    r = client.get(f"/api/v1/cases/demo/items/{i}", headers=served_root.auth("ivy"))
    assert r.status_code == 200 and r.json()["media_type"] == "video" and "label" in r.json()
    missing = client.get("/api/v1/cases/demo/items/999999", headers=served_root.auth("ivy"))
    assert missing.status_code == 404 and missing.json()["status"] == 404


def test_thumbnails_are_small_blurred_webp_and_cached_only_blurred(
    client: TestClient, served_root: Served
) -> None:
    i = _ids(served_root)["DCIM/100DEMO/IMG_0006_motorcycle_right.jpg"]
    h = served_root.auth("ivy")
    blurred = client.get(f"/api/v1/cases/demo/items/{i}/thumbnail", headers=h)
    assert blurred.status_code == 200 and blurred.headers["content-type"] == "image/webp"
    assert blurred.headers["cache-control"] == "no-store"
    im = Image.open(io.BytesIO(blurred.content))
    assert im.format == "WEBP" and max(im.size) <= 256
    clear = client.get(f"/api/v1/cases/demo/items/{i}/thumbnail?reveal=true", headers=h)
    assert clear.status_code == 200
    assert _sharpness(clear.content) > 20 * _sharpness(blurred.content)
    again = client.get(f"/api/v1/cases/demo/items/{i}/thumbnail", headers=h)
    assert again.content == blurred.content
    cached = sorted(p.name for p in (served_root.root / "demo" / "thumbs").iterdir())
    assert cached and all("-blur" in n for n in cached)
    for p in (served_root.root / "demo" / "thumbs").iterdir():
        assert _sharpness(p.read_bytes()) < _sharpness(clear.content) / 20


def test_thumbnails_of_archive_members_and_videos_are_read_again_from_the_evidence(
    client: TestClient, served_root: Served
) -> None:
    ids = _ids(served_root)
    h = served_root.auth("ivy")
    for path in (
        "Downloads/photos.zip!/album/holiday.tar.gz!/holiday/chelsea.jpg",
        "Downloads/photos.zip!/album/astronaut.png",
        "misc/clip.mp4",
    ):
        r = client.get(f"/api/v1/cases/demo/items/{ids[path]}/thumbnail?reveal=true", headers=h)
        assert r.status_code == 200, (path, r.text)
        assert max(Image.open(io.BytesIO(r.content)).size) <= 256
    for path in ("broken/random.jpg", "Downloads/photos.zip", "broken/empty.jpg"):
        r = client.get(f"/api/v1/cases/demo/items/{ids[path]}/thumbnail", headers=h)
        assert r.status_code == 404 and r.json()["detail"]


def test_a_video_thumbnail_shows_the_frame_that_set_its_priority() -> None:
    video = {"keyframes": [{"time": 0.0}, {"time": 1.0}]}
    assert priority_frame(video, {"frame_time": 2.5}, [{"frame_time": 1.0}]) == 2.5
    assert priority_frame(video, None, [{"frame_time": None}, {"frame_time": 1.5}]) == 1.5
    assert priority_frame(video, {"frame_time": None}, []) == 0.0
    assert priority_frame({"keyframes": [{"time": 0.5}]}, None, None) == 0.5


def test_a_video_thumbnail_is_that_frame_of_the_video(
    client: TestClient, served_root: Served
) -> None:
    """The demo clip shows coffee until 1 s, then the astronaut: the thumbnail is the frame its
    record names, not another one."""
    i = _ids(served_root)["misc/clip.mp4"]
    h = served_root.auth("ivy")
    rec = client.get(f"/api/v1/cases/demo/items/{i}", headers=h).json()
    at = priority_frame(rec["video"], rec["nudity"], rec["faces"])
    other = 2.0 if at < 1.0 else 0.5
    r = client.get(f"/api/v1/cases/demo/items/{i}/thumbnail?reveal=true", headers=h)
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.float32)

    def frame(t: float) -> np.ndarray:
        with open_item(Path(rec["evidence"]), rec["path"]) as f:
            return frame_at(f, t, working_size=256).astype(np.float32)

    assert np.abs(got - frame(at)).mean() * 3 < np.abs(got - frame(other)).mean()


def test_a_reveal_is_audited_and_counted(client: TestClient, served_root: Served) -> None:
    i = _ids(served_root)["DCIM/100DEMO/IMG_0003_chelsea.jpg"]
    h = served_root.auth("ivy")
    before = client.get("/api/v1/me", headers=h).json()["exposure"]["reveals_today"]
    n_audit = len(_audit_rows(served_root, "thumbnail.reveal"))
    assert client.get(f"/api/v1/cases/demo/items/{i}/thumbnail?reveal=true", headers=h).is_success
    after = client.get("/api/v1/me", headers=h).json()["exposure"]
    assert after["reveals_today"] == before + 1 and after["minutes_today"] >= 0
    rows = _audit_rows(served_root, "thumbnail.reveal")
    assert len(rows) == n_audit + 1
    user, action, case, target, _detail, source = rows[-1]
    assert (user, action, case, target) == ("ivy", "thumbnail.reveal", "demo", str(i))
    assert source  # from where
    everyone = client.get("/api/v1/exposure", headers=served_root.auth("ada")).json()
    ivy = next(u for u in everyone if u["user"] == "ivy")
    assert ivy["reveals_today"] == after["reveals_today"]


def test_the_daily_reveal_cap_answers_429(client: TestClient, served_root: Served) -> None:
    admin = served_root.auth("ada")
    assert (
        client.post(
            "/api/v1/users",
            json={"name": "cap2", "role": "investigator", "daily_reveal_cap": 2},
            headers=admin,
        ).status_code
        == 201
    )
    key = client.post("/api/v1/keys", json={"user": "cap2", "cases": ["demo"]}, headers=admin)
    h = {"Authorization": f"Bearer {key.json()['key']}"}
    i = _ids(served_root)["DCIM/100DEMO/IMG_0009_hubble.jpg"]
    url = f"/api/v1/cases/demo/items/{i}/thumbnail"
    assert [client.get(f"{url}?reveal=true", headers=h).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    assert client.get(url, headers=h).status_code == 200  # blurred still served
    me = client.get("/api/v1/me", headers=h).json()
    assert me["prefs"]["daily_reveal_cap"] == 2 and me["exposure"]["reveals_today"] == 2
    lifted = client.patch("/api/v1/users/cap2", json={"daily_reveal_cap": 3}, headers=admin)
    assert lifted.status_code == 200 and lifted.json()["daily_reveal_cap"] == 3
    assert client.get(f"{url}?reveal=true", headers=h).status_code == 200
    assert client.get(f"{url}?reveal=true", headers=h).status_code == 429
    no_cap = {"daily_reveal_cap": None}
    assert client.patch("/api/v1/users/cap2", json=no_cap, headers=h).status_code == 403
    assert client.patch("/api/v1/users/nobody", json=no_cap, headers=admin).status_code == 422


def test_greyscale_and_blur_preferences(client: TestClient, served_root: Served) -> None:
    admin = served_root.auth("ada")
    client.post("/api/v1/users", json={"name": "grey", "role": "investigator"}, headers=admin)
    key = client.post("/api/v1/keys", json={"user": "grey", "cases": ["demo"]}, headers=admin)
    h = {"Authorization": f"Bearer {key.json()['key']}"}
    prefs = client.patch("/api/v1/me/prefs", json={"greyscale": True, "blur": False}, headers=h)
    assert prefs.json() == {"blur": False, "greyscale": True, "daily_reveal_cap": None}
    i = _ids(served_root)["Downloads/coffee.png"]
    for q in ("", "?reveal=true"):
        r = client.get(f"/api/v1/cases/demo/items/{i}/thumbnail{q}", headers=h)
        a = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
        assert np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2
    blurred = client.get(f"/api/v1/cases/demo/items/{i}/thumbnail", headers=h).content
    clear = client.get(f"/api/v1/cases/demo/items/{i}/thumbnail?reveal=true", headers=h).content
    assert _sharpness(blurred) * 5 < _sharpness(clear)  # blur=false never means a clear default
    assert (
        client.patch("/api/v1/me/prefs", json={"daily_reveal_cap": 1000}, headers=h).status_code
        == 422
    )


def test_a_label_covers_exact_copies_and_shows_in_the_queue(
    client: TestClient, served_root: Served
) -> None:
    ids = _ids(served_root)
    original, copy = ids["DCIM/100DEMO/IMG_0002_coffee.jpg"], ids["misc/copy_of_coffee.jpg"]
    h = served_root.auth("ivy")
    body = {
        "category": 0,
        "victim_identified": False,
        "offender_identified": False,
        "series": None,
        "note": "a cup of coffee",
    }
    r = client.post(f"/api/v1/cases/demo/items/{original}/label", json=body, headers=h)
    assert r.status_code == 200
    lab = r.json()
    assert lab["category"] == 0 and lab["note"] == "a cup of coffee" and lab["by"] == "ivy"
    assert set(lab["items"]) == {original, copy}
    rec = client.get(f"/api/v1/cases/demo/items/{copy}", headers=h).json()
    assert rec["label"]["category"] == 0 and rec["label"]["by"] == "ivy"
    rows = _audit_rows(served_root, "label")
    assert rows[-1][:4] == ("ivy", "label", "demo", str(original))


@pytest.mark.parametrize(
    "body",
    [
        {"category": 5},
        {"category": -1},
        {"category": "1"},
        {"category": 1, "extra": 1},
        {"category": 1, "victim_identified": "maybe"},
    ],
)
def test_a_bad_label_is_422(client: TestClient, served_root: Served, body: dict) -> None:
    i = _ids(served_root)["DCIM/100DEMO/IMG_0007_china.jpg"]
    r = client.post(
        f"/api/v1/cases/demo/items/{i}/label", json=body, headers=served_root.auth("ivy")
    )
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem")


def test_cases_count_items_and_what_is_left_to_review(
    client: TestClient, served_root: Served
) -> None:
    cases = {
        c["case"]: c for c in client.get("/api/v1/cases", headers=served_root.auth("ada")).json()
    }
    demo = cases["demo"]
    assert demo["items"] == len(_ids(served_root))
    assert 0 < demo["queued"] < demo["items"]  # known-good, skipped and labelled files are out


def test_the_evidence_is_left_as_it_was(client: TestClient, served_root: Served) -> None:
    files = sorted(p for p in served_root.evidence.rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in files}
    ids = _ids(served_root)
    for path in ("DCIM/100DEMO/IMG_0005_motorcycle_left.jpg", "misc/clip.mp4"):
        client.get(
            f"/api/v1/cases/demo/items/{ids[path]}/thumbnail?reveal=true",
            headers=served_root.auth("ivy"),
        )
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in files}
    assert before == after
    assert not list(served_root.evidence.rglob("*.webp")) or all(
        "thumbs" not in str(p) for p in served_root.evidence.rglob("*.webp")
    )


def test_thumbnails_read_only_below_the_evidence_roots_when_set(served_root: Served) -> None:
    i = _ids(served_root)["Downloads/coffee.png"]
    h = served_root.auth("ivy")
    url = f"/api/v1/cases/demo/items/{i}/thumbnail?reveal=true"
    inside = served_root.settings.model_copy(update={"evidence_roots": [served_root.evidence]})
    with TestClient(create_app(inside)) as c:
        assert c.get(url, headers=h).status_code == 200
    elsewhere = served_root.settings.model_copy(
        update={"evidence_roots": [served_root.root / "other"]}
    )
    with TestClient(create_app(elsewhere)) as c:
        r = c.get(url, headers=h)
        assert r.status_code == 404 and "outside" in r.json()["detail"]


def test_review_minutes_count_short_gaps_only(served_root: Served) -> None:
    from datetime import timedelta

    from heroes.serving.db import ExposureRow, ServiceDB, today
    from heroes.serving.exposure import exposure_today, touch

    db = ServiceDB(served_root.settings.service_db_url())
    try:
        with db.session() as s, s.begin():
            uid = s.execute(select(UserRow.id).where(UserRow.name == "noa")).scalar_one()
        touch(db, uid, 300)
        start = exposure_today(db, uid)["minutes_today"]

        def back(seconds: float) -> None:
            with db.session() as s, s.begin():
                row = s.execute(
                    select(ExposureRow).where(
                        ExposureRow.user_id == uid, ExposureRow.day == today().isoformat()
                    )
                ).scalar_one()
                row.last_seen = row.last_seen - timedelta(seconds=seconds)

        back(120)  # two minutes of review
        touch(db, uid, 300)
        back(3600)  # an hour away is a break, not review
        touch(db, uid, 300)
        minutes = exposure_today(db, uid)["minutes_today"]
        assert 1.99 <= minutes - start <= 2.1
    finally:
        db.close()
