"""Search by upload (faces, scenes, across cases), similar items and persons; upload limits."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import numpy as np
from fastapi.testclient import TestClient
from served import Served

from heroes.demo import jpeg_bytes, png_bytes, sample_photos
from heroes.serving.app import create_app


def _astronaut() -> bytes:
    return jpeg_bytes(sample_photos()["astronaut"])


def _upload(data: bytes, name: str = "q.jpg") -> dict:
    return {"image": (name, data, "application/octet-stream")}


def test_a_face_search_finds_the_face_in_the_case(client: TestClient, served_root: Served) -> None:
    r = client.post(
        "/api/v1/cases/demo/search/faces",
        files=_upload(_astronaut()),
        data={"k": "5"},
        headers=served_root.auth("ivy"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["query"]["faces"]) >= 1
    q = body["query"]["faces"][0]
    assert len(q["bbox"]) == 4 and 0 < q["score"] <= 1
    results = body["results"]
    assert results and set(results[0]) == {
        "case",
        "item_id",
        "path",
        "score",
        "face_id",
        "bbox",
        "frame_time",
    }
    assert all(h["case"] == "demo" for h in results)
    top = {h["path"] for h in results if h["score"] > 0.9}
    assert "DCIM/100DEMO/IMG_0000_astronaut.jpg" in top
    assert results[0]["face_id"] and len(results[0]["bbox"]) == 4
    assert [h["score"] for h in results] == sorted((h["score"] for h in results), reverse=True)


def test_a_scene_search_ranks_the_same_photo_first(client: TestClient, served_root: Served) -> None:
    query = jpeg_bytes(sample_photos()["motorcycle_left"], quality=80)
    r = client.post(
        "/api/v1/cases/demo/search/scenes", files=_upload(query), headers=served_root.auth("ivy")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"faces": []}
    assert body["results"][0]["path"] == "DCIM/100DEMO/IMG_0005_motorcycle_left.jpg"
    assert body["results"][0]["face_id"] is None


def test_a_cross_case_face_search_covers_granted_cases_only(
    client: TestClient, served_root: Served
) -> None:
    r = client.post(
        "/api/v1/search/faces?cases=demo,other",
        files=_upload(_astronaut()),
        headers=served_root.auth("ada"),
    )
    assert r.status_code == 200, r.text
    assert {h["case"] for h in r.json()["results"]} == {"demo", "other"}
    denied = client.post(
        "/api/v1/search/faces?cases=demo,other",
        files=_upload(_astronaut()),
        headers=served_root.auth("ivy"),
    )
    assert denied.status_code == 403
    mine = client.post(
        "/api/v1/search/faces", files=_upload(_astronaut()), headers=served_root.auth("ivy")
    )
    assert mine.status_code == 200 and {h["case"] for h in mine.json()["results"]} == {"demo"}


def test_uploads_that_are_not_images_or_are_pixel_bombs_are_422(
    client: TestClient, served_root: Served
) -> None:
    h = served_root.auth("ivy")
    for data in (b"not a picture at all", b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        r = client.post("/api/v1/cases/demo/search/faces", files=_upload(data), headers=h)
        assert r.status_code == 422 and r.json()["detail"], data[:10]
    r = client.post("/api/v1/cases/demo/search/faces", files=_upload(_bomb_png()), headers=h)
    assert r.status_code == 422 and "pixel" in r.json()["detail"].lower()
    flat = png_bytes(np.full((64, 64, 3), 128, np.uint8))
    r = client.post("/api/v1/cases/demo/search/faces", files=_upload(flat), headers=h)
    assert r.status_code == 422 and "no face" in r.json()["detail"]


def _bomb_png(side: int = 30_000) -> bytes:
    """A valid PNG header claiming side x side pixels (900 megapixels), a few bytes long."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_uploads_over_the_size_limit_are_413(served_root: Served) -> None:
    settings = served_root.settings.model_copy(update={"max_upload_bytes": 50_000})
    big = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8), 95)
    assert len(big) > 50_000
    with TestClient(create_app(settings)) as c:
        h = served_root.auth("ivy")
        r = c.post("/api/v1/cases/demo/search/faces", files=_upload(big), headers=h)
        assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem")
        huge = b"\xff\xd8" + b"\0" * (2 * 1024 * 1024)
        r = c.post("/api/v1/cases/demo/search/scenes", files=_upload(huge), headers=h)
        assert r.status_code == 413

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(40):
                yield b"\0" * 65536

        r = c.post(
            "/api/v1/cases/demo/search/faces",
            content=chunked(),
            headers={**h, "content-type": "multipart/form-data; boundary=x"},
        )
        assert r.status_code == 413 and r.json()["status"] == 413


def test_similar_items_by_pdq_and_scene(client: TestClient, served_root: Served) -> None:
    h = served_root.auth("ivy")
    page = client.get("/api/v1/cases/demo/queue?limit=500", headers=h).json()["items"]
    ids = {r["path"]: r["item_id"] for r in page}
    i = ids["DCIM/100DEMO/IMG_0000_astronaut.jpg"]
    r = client.get(f"/api/v1/cases/demo/items/{i}/similar", headers=h)
    assert r.status_code == 200
    body = r.json()
    near = {x["path"]: x["distance"] for x in body["pdq"]}
    assert near["Downloads/photos.zip!/album/astronaut.png"] <= 31  # same photo as PNG
    assert near["misc/clip.mp4"] <= 31  # the video's astronaut frame
    assert near["Downloads/astronaut_flipped.jpg"] <= 31  # a mirrored copy, by PDQ's variants
    assert i not in {x["item_id"] for x in body["pdq"]} | {x["item_id"] for x in body["scene"]}
    assert body["scene"] and set(body["scene"][0]) == {"item_id", "path", "score"}


def test_persons_group_faces_and_list_them(client: TestClient, served_root: Served) -> None:
    h = served_root.auth("ivy")
    r = client.get("/api/v1/cases/demo/persons", headers=h)
    assert r.status_code == 200
    people = r.json()
    assert people and set(people[0]) == {"person_id", "faces", "items"}
    first = people[0]
    one = client.get(f"/api/v1/cases/demo/persons/{first['person_id']}", headers=h).json()
    assert one["person_id"] == first["person_id"] and len(one["faces"]) == first["faces"]
    assert {f["item_id"] for f in one["faces"]} == set(first["items"])
    assert set(one["faces"][0]) == {"face_id", "item_id", "path", "bbox", "frame_time"}
    assert client.get("/api/v1/cases/demo/persons/99999", headers=h).status_code == 404


def test_the_query_models_load_once_at_start_up(served_root: Served) -> None:
    settings = served_root.settings.model_copy(update={"preload_models": True})
    with TestClient(create_app(settings)) as c:
        state = c.app.state.service  # type: ignore[attr-defined]
        face = state.face_analyzer
        loaded = (face._detector, face._embed, state.scene_analyzer._scene)
        assert all(m is not None for m in loaded)
        r = c.post(
            "/api/v1/cases/demo/search/faces",
            files=_upload(_astronaut()),
            headers=served_root.auth("ivy"),
        )
        assert r.status_code == 200
        assert (face._detector, face._embed, state.scene_analyzer._scene) == loaded
