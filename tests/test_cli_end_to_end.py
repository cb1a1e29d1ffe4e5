"""End to end: the demo seizure (benign sample photos), triaged and exported through the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from heroes.cli import app
from heroes.demo import build_demo

runner = CliRunner()


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mtime_ns,
            )
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("e2e")
    paths = build_demo(base / "seizure", base / "hashsets")
    seizure, hs = paths["seizure"], paths["hashsets"]
    before = tree_state(seizure)
    case = base / "case"
    result = runner.invoke(
        app,
        [
            "triage",
            str(seizure),
            "--case",
            str(case),
            "--hashset",
            str(hs / "known-bad.vics.json"),
            "--hashset",
            str(hs / "known-bad.pdq.txt"),
            "--known-good",
            str(hs / "known-good.csv"),
            "--json",
            "--engine",
            "ray",
            "--cpus",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["engine"] == "ray" and summary["ray"]["redone"] == 0
    out = base / "items.jsonl"
    exported = runner.invoke(app, ["export", str(case), "--format", "jsonl", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return {
        "base": base,
        "seizure": seizure,
        "case": case,
        "hashsets": hs,
        "before": before,
        "summary": summary,
        "records": {r["path"]: r for r in records},
        "list": records,
    }


def test_every_file_of_the_seizure_is_accounted_for(demo: dict[str, Any]) -> None:
    on_disk = {
        str(p.relative_to(demo["seizure"])) for p in demo["seizure"].rglob("*") if p.is_file()
    }
    assert on_disk <= set(demo["records"])
    members = {
        "Downloads/photos.zip!/album/astronaut.png",
        "Downloads/photos.zip!/album/rocket.jpg",
        "Downloads/photos.zip!/album/holiday.tar.gz",
        "Downloads/photos.zip!/album/holiday.tar.gz!/holiday/chelsea.jpg",
        "Downloads/photos.zip!/album/holiday.tar.gz!/holiday/motorcycle_right.jpg",
        "Downloads/photos.zip!/../../escape.txt",
        "broken/bomb.zip!/zeros.bin",
    }
    assert members <= set(demo["records"])
    assert len(demo["list"]) == len(demo["records"]), "a path was recorded twice"
    assert demo["summary"]["new"] == len(demo["list"])


def test_records_carry_the_contract_fields(demo: dict[str, Any]) -> None:
    required = {
        "item_id",
        "path",
        "size",
        "md5",
        "sha1",
        "sha256",
        "media_type",
        "mime",
        "status",
        "error",
        "duplicate_of",
        "pdq",
        "pdq_quality",
        "visual_group",
        "exif",
        "video",
        "known_match",
        "faces",
        "nudity",
        "priority",
        "rank",
        "why",
    }
    for rec in demo["list"]:
        assert required <= set(rec)
        assert rec["status"] in {"ok", "duplicate", "known_good", "error", "skipped"}
        assert rec["media_type"] in {"image", "video", "archive", "other"}
        if rec["status"] in {"error", "skipped"}:
            assert rec["error"], rec


def test_images_are_identified_by_content_and_hashed(demo: dict[str, Any]) -> None:
    r = demo["records"]
    astro = r["DCIM/100DEMO/IMG_0000_astronaut.jpg"]
    data = (demo["seizure"] / "DCIM/100DEMO/IMG_0000_astronaut.jpg").read_bytes()
    assert astro["md5"] == hashlib.md5(data).hexdigest()
    assert astro["sha1"] == hashlib.sha1(data).hexdigest()
    assert astro["sha256"] == hashlib.sha256(data).hexdigest()
    assert astro["media_type"] == "image" and astro["status"] == "ok"
    assert len(astro["pdq"]) == 64 and astro["pdq_quality"] >= 50
    notes = r["misc/notes.txt"]
    assert notes["media_type"] == "image" and notes["mime"] == "image/jpeg" and notes["pdq"]


def test_exact_copy_is_a_duplicate_of_the_first_seen(demo: dict[str, Any]) -> None:
    r = demo["records"]
    dup = r["misc/copy_of_coffee.jpg"]
    orig = r["DCIM/100DEMO/IMG_0002_coffee.jpg"]
    assert orig["status"] == "ok" and dup["status"] == "duplicate"
    assert dup["duplicate_of"] == orig["item_id"]
    assert dup["pdq"] == orig["pdq"] and dup["faces"] == orig["faces"]


def test_known_bad_sets_match_by_hash_and_pdq(demo: dict[str, Any]) -> None:
    r = demo["records"]
    rocket = r["DCIM/100DEMO/IMG_0004_rocket.jpg"]["known_match"]
    assert (
        rocket["category"] == "1"
        and rocket["method"] in {"md5", "sha1"}
        and rocket["distance"] == 0
    )
    assert rocket["scheme"].startswith("VICS")
    in_zip = r["Downloads/photos.zip!/album/rocket.jpg"]
    assert in_zip["known_match"]["hashset"] == rocket["hashset"]
    hubble = r["DCIM/100DEMO/IMG_0009_hubble.jpg"]["known_match"]
    assert hubble["method"] == "pdq" and hubble["distance"] <= 31
    assert r["DCIM/100DEMO/IMG_0003_chelsea.jpg"]["known_match"] is None


def test_known_good_file_is_marked_and_not_decoded(demo: dict[str, Any]) -> None:
    flower = demo["records"]["Downloads/flower.webp"]
    assert flower["status"] == "known_good"
    assert flower["known_match"]["known_good"] is True
    assert flower["pdq"] is None


def test_resized_and_recompressed_copies_share_a_visual_group(demo: dict[str, Any]) -> None:
    r = demo["records"]
    china = r["DCIM/100DEMO/IMG_0007_china.jpg"]
    assert china["visual_group"] is not None
    assert r["Downloads/china_small.jpg"]["visual_group"] == china["visual_group"]
    rocket = r["DCIM/100DEMO/IMG_0004_rocket.jpg"]
    assert r["Downloads/rocket_recompressed.jpg"]["visual_group"] == rocket["visual_group"]
    assert china["visual_group"] != rocket["visual_group"]
    coffee = r["DCIM/100DEMO/IMG_0002_coffee.jpg"]
    assert coffee["visual_group"] == r["Downloads/coffee.png"]["visual_group"]
    assert coffee["visual_group"] != rocket["visual_group"], "a video must not chain its scenes"


def test_exif_and_gps_are_extracted(demo: dict[str, Any]) -> None:
    exif = demo["records"]["DCIM/100DEMO/IMG_0003_chelsea.jpg"]["exif"]
    assert exif["make"] == "DemoCam" and exif["model"] == "DC-1"
    assert exif["body_serial"] == "SN-000123"
    assert exif["gps"]["lat"] == pytest.approx(51.5) and exif["gps"]["lon"] == pytest.approx(-0.125)


def test_video_has_duration_keyframes_and_vpdq(demo: dict[str, Any]) -> None:
    clip = demo["records"]["misc/clip.mp4"]
    assert clip["media_type"] == "video" and clip["status"] == "ok"
    v = clip["video"]
    assert v["duration"] == pytest.approx(4.0, abs=0.3)
    times = [k["time"] for k in v["keyframes"]]
    assert times == sorted(times) and times[0] < 0.5
    assert all(b - a <= 1.0 + 1e-6 for a, b in zip(times, times[1:], strict=False))
    assert len(v["vpdq"]) >= 3


def test_bad_input_becomes_clear_records(demo: dict[str, Any]) -> None:
    r = demo["records"]
    cut = r["broken/truncated.jpg"]  # half its bytes: more than half its rows decode
    assert cut["status"] == "ok" and cut["error"].startswith("truncated image: ")
    assert cut["sha256"] and cut["pdq"] and cut["nudity"] is not None, "what decoded is analysed"
    assert any(w["reason"].startswith("damaged file") for w in cut["why"])
    assert r["broken/empty.jpg"]["status"] == "skipped"
    assert (
        r["broken/random.jpg"]["status"] == "error"
        and "not an image" in r["broken/random.jpg"]["error"]
    )
    assert (
        r["broken/text.png"]["status"] == "error" and "text/plain" in r["broken/text.png"]["error"]
    )
    assert "bomb" in r["broken/bomb.zip!/zeros.bin"]["error"]
    escape = r["Downloads/photos.zip!/../../escape.txt"]
    assert escape["status"] == "ok" and escape["container"] == "Downloads/photos.zip"
    assert not (demo["base"] / "escape.txt").exists()


def test_evidence_is_unchanged_and_nothing_is_written_outside_the_case(
    demo: dict[str, Any],
) -> None:
    assert tree_state(demo["seizure"]) == demo["before"]
    assert sorted(p.name for p in demo["base"].iterdir()) == [
        "case",
        "hashsets",
        "items.jsonl",
        "seizure",
    ]


def test_second_triage_does_no_work_and_says_so(demo: dict[str, Any]) -> None:
    result = runner.invoke(
        app, ["triage", str(demo["seizure"]), "--case", str(demo["case"]), "--json"]
    )
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["new"] == 0
    assert again["already_done"] == len(demo["list"])


def test_csv_export_has_one_row_per_record(demo: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "items.csv"
    result = runner.invoke(app, ["export", str(demo["case"]), "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    import csv

    with open(out, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(demo["list"])


def test_missing_evidence_and_unwritable_case_exit_with_status_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["triage", str(tmp_path / "nope"), "--case", str(tmp_path / "c")])
    assert result.exit_code == 2
    (tmp_path / "ev").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["triage", str(tmp_path / "ev"), "--case", str(blocker / "case")])
    assert result.exit_code == 2
    assert "not writable" in result.output


def test_hashsets_import_and_list(demo: dict[str, Any], tmp_path: Path) -> None:
    case = tmp_path / "c"
    result = runner.invoke(
        app,
        ["hashsets", "import", str(demo["hashsets"] / "known-bad.vics.json"), "--into", str(case)],
    )
    assert result.exit_code == 0, result.output
    assert "1 entries" in result.output
    again = runner.invoke(
        app,
        ["hashsets", "import", str(demo["hashsets"] / "known-bad.vics.json"), "--into", str(case)],
    )
    assert "already in the case" in again.output
    listed = runner.invoke(app, ["hashsets", "list", str(case)])
    assert listed.exit_code == 0, listed.output
    assert "known-bad.vics" in listed.output and "VICS" in listed.output


def test_summary_table_is_printed_for_people(demo: dict[str, Any], tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["triage", str(demo["seizure"] / "broken"), "--case", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    assert "files by type and status" in result.output
    assert "errors and skips by kind" in result.output
    full = runner.invoke(
        app,
        [
            "triage",
            str(demo["seizure"]),
            "--case",
            str(tmp_path / "c2"),
            "--hashset",
            str(demo["hashsets"] / "known-bad.vics.json"),
        ],
    )
    assert full.exit_code == 0, full.output
    assert "known-bad matches" in full.output and "sha1" in full.output


def test_astronaut_has_one_adult_face_with_an_embedding(demo: dict[str, Any]) -> None:
    r = demo["records"]
    faces = r["DCIM/100DEMO/IMG_0000_astronaut.jpg"]["faces"]
    assert len(faces) == 1
    f = faces[0]
    assert f["score"] >= 0.5 and 25 <= f["age"] <= 60 and f["p_minor"] < 0.1
    assert (
        f["frame_time"] is None
        and f["face_id"] == f"{r['DCIM/100DEMO/IMG_0000_astronaut.jpg']['item_id']}-0"
    )
    assert len(r["DCIM/100DEMO/IMG_0001_camera.jpg"]["faces"]) == 1


def test_faces_in_the_demo_video_are_found_between_the_right_times(demo: dict[str, Any]) -> None:
    faces = demo["records"]["misc/clip.mp4"]["faces"]
    assert faces, "the astronaut is on screen from 1 s to 3 s"
    assert all(1.0 - 1e-6 <= f["frame_time"] < 3.0 for f in faces)
    assert all(f["p_minor"] < 0.2 for f in faces)


def test_nothing_benign_is_flagged_explicit(demo: dict[str, Any]) -> None:
    scored = [rec for rec in demo["list"] if rec["nudity"] is not None]
    assert len(scored) >= 15
    assert not any(rec["nudity"]["explicit"] for rec in scored)
    assert all(rec["nudity"]["score"] < 0.5 for rec in scored)


def test_known_good_and_broken_files_are_not_inferred(demo: dict[str, Any]) -> None:
    r = demo["records"]
    assert (
        r["Downloads/flower.webp"]["nudity"] is None and r["Downloads/flower.webp"]["faces"] == []
    )
    assert r["broken/random.jpg"]["nudity"] is None


def test_face_and_scene_vectors_are_stored_for_search(demo: dict[str, Any]) -> None:
    import sqlite3

    import numpy as np

    with sqlite3.connect(demo["case"] / "case.db") as c:
        rows = c.execute("select kind, dim, ref, vector, item_id from vectors").fetchall()
    kinds = {k for k, *_ in rows}
    assert kinds == {"face", "scene"}
    for kind, dim, ref, blob, _item in rows:
        v = np.frombuffer(blob, dtype="<f4")
        assert v.size == dim
        if kind == "face":
            assert ref and abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
    astro = demo["records"]["DCIM/100DEMO/IMG_0000_astronaut.jpg"]["item_id"]
    assert any(k == "face" and item == astro for k, _d, _r, _b, item in rows)


def test_models_are_listed_with_licences_and_usable(demo: dict[str, Any]) -> None:
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("nudenet-320n", "age-v1", "dlib-face-resnet", "dlib-landmarks-5", "scene-vlad"):
        assert name in result.output
    assert "scene-vlad-fast" in result.output
    assert "AGPL-3.0" in result.output and "CC0-1.0" in result.output
    assert "no:" not in result.output
    assert demo["summary"]["models"] == {
        "nudenet-320n": "ok",
        "dlib-landmarks-5": "ok",
        "age-v1": "ok",
        # on CPU the face ResNet runs as its INT8 copy, measured to agree with it
        "dlib-face-resnet-int8": "ok",
        "scene-vlad-fast": "ok",
    }


def test_queue_puts_known_bad_first_and_known_good_last(demo: dict[str, Any]) -> None:
    ranked = sorted(demo["list"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    top = {r["path"] for r in ranked[:2]}
    assert top == {"DCIM/100DEMO/IMG_0004_rocket.jpg", "Downloads/photos.zip!/album/rocket.jpg"}
    assert ranked[0]["why"][0]["reason"].startswith("known-bad")
    assert ranked[-1]["status"] == "known_good"
    near = demo["records"]["Downloads/rocket_recompressed.jpg"]
    assert near["known_match"]["method"] == "pdq" and near["known_match"]["via_item"]
    clip = demo["records"]["misc/clip.mp4"]["known_match"]
    assert clip["method"] == "pdq" and 3.0 <= clip["frame_time"] < 4.0, (
        "the rocket is on screen 3-4 s"
    )
    assert all(0.0 <= r["priority"] <= 1.0 for r in ranked)


def test_queue_command_prints_the_head_with_reasons(demo: dict[str, Any]) -> None:
    result = runner.invoke(app, ["queue", str(demo["case"]), "--top", "3", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["rank"] for x in lines] == [1, 2, 3]
    assert all(x["why"] for x in lines)


def test_no_models_flag_ingests_without_inference(demo: dict[str, Any], tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "triage",
            str(demo["seizure"] / "DCIM"),
            "--case",
            str(tmp_path / "c"),
            "--no-models",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["models"] == {} and summary["faces"] == 0 and summary["new"] == 10
