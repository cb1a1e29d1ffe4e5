"""Search by face, scene and PDQ over triaged benign cases; identities."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data as data
from PIL import Image
from typer.testing import CliRunner

from heroes.cli import app
from heroes.config import Settings
from heroes.demo import build_demo, jpeg_bytes, sample_photos
from heroes.pipeline.runner import triage
from heroes.search import SearchError, persons, search_faces, search_pdq, search_scene

runner = CliRunner()


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("search")
    paths = build_demo(base / "seizure", base / "hashsets")
    s = Settings(workers=2)
    triage(paths["seizure"], base / "case", settings=s)
    # a second case without the left stereo view, for the scene query and cross-case merging
    other = base / "other"
    other.mkdir()
    photos = sample_photos()
    for name in ("motorcycle_right", "coffee", "china", "rocket", "hubble", "chelsea"):
        (other / f"{name}.jpg").write_bytes(jpeg_bytes(photos[name]))
    triage(other, base / "case2", settings=s)
    queries = base / "queries"
    queries.mkdir()
    astro, coffee = data.astronaut(), data.coffee().copy()
    coffee[50:250, 100:300] = astro[40:240, 130:330]  # the astronaut's face pasted on a coffee cup
    Image.fromarray(coffee).save(queries / "composite.jpg", quality=92)
    Image.fromarray(photos["motorcycle_left"]).save(queries / "left.jpg", quality=92)
    small = Image.fromarray(photos["china"][:, ::-1]).resize((320, 213))
    small.save(queries / "china_flipped_small.jpg", quality=80)
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(queries / "grey.png")
    return {
        "base": base,
        "case": base / "case",
        "case2": base / "case2",
        "q": queries,
        "seizure": paths["seizure"],
    }


def test_composite_finds_the_astronaut_photo_first(cases: dict[str, Any]) -> None:
    hits = search_faces([cases["case"]], cases["q"] / "composite.jpg", k=5)
    assert hits[0].path in {
        "DCIM/100DEMO/IMG_0000_astronaut.jpg",
        "Downloads/photos.zip!/album/astronaut.png",
    }
    assert hits[0].score > 0.95 and hits[0].query_face == 0 and hits[0].bbox
    cam = [h for h in hits if h.path == "DCIM/100DEMO/IMG_0001_camera.jpg"]
    assert not cam or cam[0].score < hits[0].score


def test_a_face_in_a_video_is_found_with_its_frame_time(cases: dict[str, Any]) -> None:
    hits = search_faces([cases["case"]], cases["q"] / "composite.jpg", k=10)
    video = [h for h in hits if h.path == "misc/clip.mp4"]
    assert video and all(1.0 <= h.frame_time < 3.0 for h in video)


def test_query_without_a_face_is_a_clear_error(cases: dict[str, Any]) -> None:
    with pytest.raises(SearchError, match="no face"):
        search_faces([cases["case"]], cases["q"] / "grey.png")


def test_other_stereo_view_is_the_top_scene_hit(cases: dict[str, Any]) -> None:
    hits = search_scene([cases["case2"]], cases["q"] / "left.jpg", k=3)
    assert hits[0].path == "motorcycle_right.jpg"
    rechecked = search_scene([cases["case2"]], cases["q"] / "left.jpg", k=3, recheck=True)
    assert rechecked[0].path == "motorcycle_right.jpg" and rechecked[0].extra["inliers"] > 50


def test_the_geometric_recheck_reads_evidence_without_touching_its_access_time(
    cases: dict[str, Any],
) -> None:
    evidence = cases["base"] / "other"
    photo = evidence / "motorcycle_right.jpg"
    then = 1_600_000_000
    os.utime(photo, (then, photo.stat().st_mtime))
    hits = search_scene([cases["case2"]], cases["q"] / "left.jpg", k=3, recheck=True)
    assert hits[0].path == "motorcycle_right.jpg" and hits[0].extra["inliers"] > 50
    assert photo.stat().st_atime == then


def test_flipped_and_resized_copies_are_found_by_pdq(cases: dict[str, Any]) -> None:
    hits = search_pdq([cases["case"]], image=cases["q"] / "china_flipped_small.jpg")
    paths = {h.path for h in hits}
    assert {"DCIM/100DEMO/IMG_0007_china.jpg", "Downloads/china_small.jpg"} <= paths
    assert all(h.distance <= 31 for h in hits)
    china = next(h for h in hits if h.path == "DCIM/100DEMO/IMG_0007_china.jpg")
    by_item = search_pdq([cases["case"]], similar_to=china.item_id)
    assert "Downloads/china_small.jpg" in {h.path for h in by_item}


def test_pdq_hex_query_and_bad_hex(cases: dict[str, Any]) -> None:
    from heroes.pipeline.decode import analyze_image

    pdq = analyze_image((cases["seizure"] / "DCIM/100DEMO/IMG_0004_rocket.jpg").read_bytes()).pdq
    hits = search_pdq([cases["case"]], pdq=pdq, max_distance=0)
    assert {"DCIM/100DEMO/IMG_0004_rocket.jpg"} <= {h.path for h in hits}
    with pytest.raises(SearchError):
        search_pdq([cases["case"]], pdq="zz")


def test_several_cases_are_searched_and_merged_by_score(cases: dict[str, Any]) -> None:
    hits = search_scene([cases["case"], cases["case2"]], cases["q"] / "left.jpg", k=4)
    assert {Path(h.case).name for h in hits} == {"case", "case2"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_cli_search_jsonl_carries_the_contract_fields(cases: dict[str, Any]) -> None:
    result = runner.invoke(
        app,
        [
            "search",
            str(cases["case"]),
            "--face",
            str(cases["q"] / "composite.jpg"),
            "--format",
            "jsonl",
            "--k",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines
    for x in lines:
        assert {
            "rank",
            "score",
            "case",
            "item_id",
            "path",
            "frame_time",
            "bbox",
            "query_face",
        } <= set(x)
    everything = runner.invoke(
        app,
        [
            "search",
            str(cases["base"]),
            "--all",
            "--scene",
            str(cases["q"] / "left.jpg"),
            "--format",
            "jsonl",
        ],
    )
    assert everything.exit_code == 0, everything.output
    assert len({json.loads(x)["case"] for x in everything.stdout.splitlines()}) == 2
    bad = runner.invoke(app, ["search", str(cases["case"]), "--face", "x.jpg", "--scene", "y.jpg"])
    assert bad.exit_code == 2


def test_persons_groups_the_astronaut_apart_from_the_cameraman(cases: dict[str, Any]) -> None:
    people = persons(cases["case"], min_faces=2)
    assert len(people) == 1
    p = people[0]
    assert p.faces >= 4 and p.videos == 1
    assert all("camera" not in e for e in p.examples)
    again = persons(cases["case"], min_faces=2)
    assert [q.identity for q in again] == [p.identity], "ids are stable across re-runs"
    result = runner.invoke(
        app, ["persons", str(cases["case"]), "--min-faces", "2", "--format", "jsonl"]
    )
    assert (
        result.exit_code == 0
        and json.loads(result.stdout.splitlines()[0])["identity"] == p.identity
    )


def test_a_persons_faces_are_listed_with_ids_files_boxes_and_times(
    cases: dict[str, Any],
) -> None:
    (p,) = persons(cases["case"], min_faces=2)
    result = runner.invoke(
        app, ["persons", str(cases["case"]), "--show", str(p.identity), "--format", "jsonl"]
    )
    assert result.exit_code == 0, result.output
    faces = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(faces) == p.faces and all(f["person"] == p.identity for f in faces)
    assert all(f["face_id"].startswith(f"{f['item_id']}-") and len(f["bbox"]) == 4 for f in faces)
    in_video = [f for f in faces if f["path"] == "misc/clip.mp4"]
    assert in_video and all(f["frame_time"] is not None for f in in_video)
    table = runner.invoke(app, ["persons", str(cases["case"]), "--show", str(p.identity)])
    assert table.exit_code == 0 and faces[0]["face_id"] in table.output
    missing = runner.invoke(app, ["persons", str(cases["case"]), "--show", "999999"])
    assert missing.exit_code == 2


def test_merge_and_split_survive_until_new_faces_arrive(cases: dict[str, Any]) -> None:
    people = {p.identity: p for p in persons(cases["case"], min_faces=1, recluster=True)}
    astro = max(people.values(), key=lambda p: p.faces)
    cam = next(p for p in people.values() if p.identity != astro.identity)
    merged = persons(cases["case"], min_faces=1, merge=(astro.identity, cam.identity))
    assert [p.faces for p in merged] == [astro.faces + cam.faces]
    kept = persons(cases["case"], min_faces=1)
    assert [p.identity for p in kept] == [astro.identity], "no new face: the merge stays"
    cam_face = next(f["face_id"] for f in _faces_of(cases, "DCIM/100DEMO/IMG_0001_camera.jpg"))
    split = persons(cases["case"], min_faces=1, split=(astro.identity, [cam_face]))
    assert sorted(p.faces for p in split) == [1, astro.faces]
    bad = runner.invoke(app, ["persons", str(cases["case"]), "--split", "0"])
    assert bad.exit_code == 2


def _faces_of(cases: dict[str, Any], path: str) -> list[dict[str, Any]]:
    from heroes.pipeline.report import records
    from heroes.store import CaseStore

    store = CaseStore(cases["case"], create=False)
    try:
        return next(r["faces"] for r in records(store) if r["path"] == path)
    finally:
        store.close()


def test_a_file_changed_in_place_is_found_as_it_is_now(tmp_path: Path) -> None:
    """Triaging evidence again after a file changed keeps no trace of its old content in the
    indexes: search finds the new picture under its path and no longer the old one."""
    photos = sample_photos()
    ev, case = tmp_path / "ev", tmp_path / "case"
    ev.mkdir()
    target = ev / "a.jpg"
    target.write_bytes(jpeg_bytes(photos["astronaut"]))
    (ev / "b.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    s = Settings(workers=1)
    triage(ev, case, settings=s)
    q = tmp_path / "q"
    q.mkdir()
    Image.fromarray(photos["astronaut"]).save(q / "astro.jpg", quality=90)
    Image.fromarray(photos["china"]).save(q / "china.jpg", quality=90)
    assert search_faces([case], q / "astro.jpg", k=3)[0].path == "a.jpg"
    assert all(h.path != "a.jpg" for h in search_pdq([case], image=q / "china.jpg"))

    target.write_bytes(jpeg_bytes(photos["china"]))  # same path, new content, new mtime
    os.utime(target, (1_700_000_000, 1_700_000_000))
    triage(ev, case, settings=s)

    assert not [h for h in search_faces([case], q / "astro.jpg", k=3) if h.path == "a.jpg"]
    assert [h.path for h in search_pdq([case], image=q / "china.jpg")] == ["a.jpg"]
    assert [h.path for h in search_scene([case], q / "china.jpg", k=1)] == ["a.jpg"]


def test_search_leaves_the_indexes_alone_while_a_triage_holds_the_case(
    cases: dict[str, Any],
) -> None:
    from heroes.pipeline.indexing import STATE_FILE, index_root, mark_stale
    from heroes.store.lock import case_lock

    case = cases["case2"]
    state = index_root(case) / STATE_FILE
    before = state.stat().st_mtime_ns
    mark_stale(case)  # would make the next update rebuild every index
    with case_lock(case):
        hits = search_scene([case], cases["q"] / "left.jpg", k=1)
        assert hits and (index_root(case) / "stale").exists()
        assert state.stat().st_mtime_ns == before
    search_scene([case], cases["q"] / "left.jpg", k=1)  # unlocked: brought up to date
    assert not (index_root(case) / "stale").exists()


def _two_faces(cases: dict[str, Any]) -> Path:
    """The astronaut's face (large) beside the cameraman's (smaller), on a grey canvas."""
    path = cases["q"] / "two_faces.png"
    if not path.exists():
        canvas = np.full((512, 900, 3), 60, np.uint8)
        canvas[0:300, 0:300] = data.astronaut()[0:300, 100:400]
        canvas[0:260, 350:560] = np.stack([data.camera()] * 3, -1)[60:320, 120:330]
        Image.fromarray(canvas).save(path)
    return path


def test_a_face_query_searches_its_largest_face_unless_asked_for_all(
    cases: dict[str, Any],
) -> None:
    query = _two_faces(cases)
    largest = search_faces([cases["case"]], query, k=3)
    assert len(largest) == 3
    assert len({h.query_face for h in largest}) == 1
    assert all(h.query_bbox is not None and h.query_bbox[2] < 300 for h in largest)
    assert "astronaut" in (largest[0].path or "")
    every = search_faces([cases["case"]], query, k=3, all_faces=True)
    assert len({h.query_face for h in every}) == 2
    assert len(every) == 6
    assert {h.item_id for h in largest} <= {h.item_id for h in every}


def test_cli_face_search_returns_k_rows_and_all_faces_k_per_face(cases: dict[str, Any]) -> None:
    query = str(_two_faces(cases))
    base = ["search", str(cases["case"]), "--face", query, "--k", "2", "--format", "jsonl"]
    one = runner.invoke(app, base)
    assert one.exit_code == 0, one.output
    assert len(one.stdout.splitlines()) == 2
    both = runner.invoke(app, [*base, "--all-faces"])
    assert both.exit_code == 0, both.output
    assert len(both.stdout.splitlines()) == 4


def test_persons_help_shows_the_default_similarity() -> None:
    from heroes.index import DEFAULT_MIN_SIMILARITY

    result = runner.invoke(app, ["persons", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert f"default {DEFAULT_MIN_SIMILARITY:.2f}" in result.output
    assert DEFAULT_MIN_SIMILARITY == 0.94


def test_cases_are_searched_with_the_models_their_vectors_were_made_with(
    cases: dict[str, Any], tmp_path: Path
) -> None:
    """A case made with an earlier default scene model (or an FP32 face model where the pass now
    runs its INT8 copy) stays searchable: each case is searched with its own model, and a search
    over cases made with different models merges them."""
    import shutil

    from heroes.search import case_model, model_family

    folder = tmp_path / "old-seizure"
    shutil.copytree(cases["base"] / "other", folder)
    (folder / "astronaut.jpg").write_bytes(jpeg_bytes(sample_photos()["astronaut"]))
    old = tmp_path / "old-case"
    triage(folder, old, settings=Settings(scene_model="scene-vlad", int8=False))
    assert case_model(old, "scene", Settings().scene_model) == "scene-vlad"
    assert case_model(old, "face", "dlib-face-resnet-int8") == "dlib-face-resnet"
    assert "dlib-face-resnet-int8" in model_family("dlib-face-resnet")
    assert case_model(cases["case"], "face", "dlib-face-resnet") == "dlib-face-resnet-int8"
    hits = search_scene([old], cases["q"] / "left.jpg", k=3)
    assert hits and hits[0].path == "motorcycle_right.jpg"
    both = search_scene([old, cases["case2"]], cases["q"] / "left.jpg", k=4)
    tops = {(h.case, h.path) for h in both[:2]}
    assert {p for _c, p in tops} == {"motorcycle_right.jpg"} and len(tops) == 2
    from heroes.pipeline.indexing import case_name

    faces = search_faces([old, cases["case"]], cases["q"] / "composite.jpg", k=4)
    astronauts = [h for h in faces if h.score > 0.95]
    assert {h.case for h in astronauts} == {case_name(old), case_name(cases["case"])}
