"""The VICS export: structure, categories only from humans or exact matches, and a lossless round
trip through the importer on files with real-world quirks (BOM, string booleans, int64 ids)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from heroes.config import Settings
from heroes.pipeline.hashsets import HashEntry, open_hashset
from heroes.pipeline.labels import Label, apply_label
from heroes.pipeline.runner import triage
from heroes.pipeline.vics import VicsError, vics_document, write_vics
from heroes.store import CaseStore

BIG_ID = 9007199254740993  # 2**53 + 1: a float parser would change it


def _png(seed: int) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _hashes(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()


def _media_13(data: list[bytes]) -> list[dict[str, Any]]:
    """Media records as real 1.x exports write them: upper-case hex, string booleans and
    numbers, int64 ids, false flags and category 0 sometimes left out."""
    (m0, s0), (m1, s1), (m2, _s2) = (_hashes(d) for d in data)
    return [
        {
            "MediaID": BIG_ID,
            "MD5": m0.upper(),
            "SHA1": s0.upper(),
            "Category": "1",
            "IsPrecategorized": "true",
            "VictimIdentified": "True",
            "OffenderIdentified": "false",
            "IsDistributed": "true",
            "Series": "Series-A",
            "Tags": "tag1, tag2",
            "Comments": "seen before",
            "PhotoDNA": "AAECAwQFBgc=",
            "MediaSize": str(len(data[0])),
            "MimeType": "image/png",
            "DateUpdated": "2024-03-01T10:00:00Z",
            "MediaFiles": [{"FileName": "a.png", "FilePath": "C:\\seized\\a.png"}],
        },
        {
            "MediaID": "42",
            "MD5": m1,
            "SHA1": s1,
            "Category": 2,
            "IsSuspected": True,
            "OffenderIdentified": True,
        },
        {"MediaID": 7, "MD5": m2.upper(), "Category": 0},
    ]


def _vics_13(path: Path, media: list[dict[str, Any]]) -> Path:
    doc = {"odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml#Media"}
    text = json.dumps({**doc, "value": media}, indent=2)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    return path


def _vics_20(path: Path, media: list[dict[str, Any]]) -> Path:
    ctx = "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/US/$metadata#Cases"
    case = {
        "CaseID": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "CaseNumber": "OP-1",
        "SourceApplicationName": "other tool",
        "TotalMediaFiles": len(media),
        "Media": media,
    }
    path.write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"@odata.context": ctx, "value": [case]}).encode()
    )
    return path


@pytest.fixture()
def evidence(tmp_path: Path) -> tuple[Path, list[bytes]]:
    data = [_png(i) for i in range(5)]
    ev = tmp_path / "ev"
    (ev / "sub").mkdir(parents=True)
    for i, d in enumerate(data):
        (ev / f"img{i}.png").write_bytes(d)
    (ev / "sub" / "copy_of_img0.png").write_bytes(data[0])
    with zipfile.ZipFile(ev / "album.zip", "w") as z:
        z.writestr("inner/img1.png", data[1])
    (ev / "notes.txt").write_text("not media")
    return ev, data


def _triage(ev: Path, case: Path, hashsets: list[Path]) -> CaseStore:
    triage(ev, case, settings=Settings(workers=1, models=False), hashsets=hashsets)
    return CaseStore(case, create=False)


def _entries(path: Path) -> dict[str, HashEntry]:
    _info, entries, _stats = open_hashset(path)
    return {e.md5: e for e in entries if e.md5}


def _media_by_md5(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    values = doc["value"][0]["Media"] if "@odata.context" in doc else doc["value"]
    return {m["MD5"].lower(): m for m in values}


#: Fields an export adds or describes from the case rather than from the set: the files found
#: here, and the pre-categorisation mark on a set's category.
_FROM_THE_CASE = {"FileNames", "FilePaths", "IsPrecategorized", "PrecategorizationSource"}


@pytest.mark.parametrize("version", ["1.3", "2.0"])
@pytest.mark.parametrize("writer", [_vics_13, _vics_20])
def test_import_then_export_keeps_every_field_heroes_read(
    tmp_path: Path, evidence: tuple[Path, list[bytes]], version: str, writer: Any
) -> None:
    ev, data = evidence
    source = writer(tmp_path / "set.json", _media_13(data[:3]))
    store = _triage(ev, tmp_path / "case", [source])
    try:
        out = tmp_path / f"out-{version}.json"
        with open(out, "w", encoding="utf-8") as f:
            write_vics(store, f, version=version)
    finally:
        store.close()
    before, after = _entries(source), _entries(out)
    quirky = before[_hashes(data[0])[0]].meta
    assert quirky["VictimIdentified"] is True and quirky["OffenderIdentified"] is False
    assert quirky["MediaSize"] == len(data[0]) and quirky["Series"] == "Series-A"
    assert set(before) <= set(after)
    for md5, old in before.items():
        new = after[md5]
        assert new.ref == old.ref and new.category == old.category
        assert (new.sha1, new.md5) == (old.sha1 or new.sha1, old.md5)
        for key, value in old.meta.items():
            if key not in _FROM_THE_CASE and key != "CaseID":
                assert new.meta.get(key) == value, (md5, key)
    assert after[_hashes(data[0])[0]].ref == str(BIG_ID)
    assert after[_hashes(data[0])[0]].meta["PrecategorizationSource"] == "set"
    assert '"MediaID": 9007199254740993' in out.read_text()


def test_one_media_per_md5_with_every_file_and_archive_members_named_as_in_jsonl(
    tmp_path: Path, evidence: tuple[Path, list[bytes]]
) -> None:
    ev, data = evidence
    store = _triage(ev, tmp_path / "case", [])
    try:
        doc = vics_document(store, version="2.0")
        again = vics_document(store, version="2.0")
    finally:
        store.close()
    case = doc["value"][0]
    assert doc["@odata.context"].endswith("/2.0.xml/US/$metadata#Cases")
    assert case["CaseID"] == again["value"][0]["CaseID"]
    assert case["SourceApplicationName"] == "heroes"
    media = _media_by_md5(doc)
    assert len(media) == 5  # five distinct images; the text file and the zip are not media
    assert case["TotalMediaFiles"] == 7
    m0 = media[_hashes(data[0])[0]]
    assert sorted(f["FilePath"] for f in m0["MediaFiles"]) == ["img0.png", "sub/copy_of_img0.png"]
    m1 = media[_hashes(data[1])[0]]
    member = next(f for f in m1["MediaFiles"] if "!/" in f["FilePath"])
    assert member["FilePath"] == "album.zip!/inner/img1.png"
    assert member["FileName"] == "img1.png" and member["ParentFilePath"] == "album.zip"
    assert all("Category" not in m for m in media.values())
    assert all(m["MediaSize"] == len(data[0]) for m in [m0])


def test_models_never_categorise_and_tags_only_on_request(
    tmp_path: Path, evidence: tuple[Path, list[bytes]]
) -> None:
    ev, _data = evidence
    store = _triage(ev, tmp_path / "case", [])
    try:
        plain = vics_document(store, version="1.3")
        tagged = vics_document(store, version="1.3", with_model_tags=True)
    finally:
        store.close()
    assert plain["odata.metadata"].endswith("1.3.xml#Media")
    assert all("Tags" not in m and "Category" not in m for m in plain["value"])
    assert all("Category" not in m for m in tagged["value"])
    assert all("heroes:priority=" in m["Tags"] for m in tagged["value"])


def test_a_human_label_sets_the_category_and_overrides_a_precategorisation(
    tmp_path: Path, evidence: tuple[Path, list[bytes]]
) -> None:
    ev, data = evidence
    source = _vics_13(tmp_path / "set.json", _media_13(data[:3]))
    store = _triage(ev, tmp_path / "case", [source])
    try:
        by_md5 = {r.md5: r.id for r in store.items()}
        apply_label(store, [by_md5[_hashes(data[1])[0]]], Label(3, note="drawn"), by="ana")
        apply_label(store, [by_md5[_hashes(data[4])[0]]], Label(4, series="S-9"), by="ana")
        media = _media_by_md5(vics_document(store))
    finally:
        store.close()
    m1, m4 = media[_hashes(data[1])[0]], media[_hashes(data[4])[0]]
    assert m1["Category"] == 3 and m1["IsPrecategorized"] is False and m1["Comments"] == "drawn"
    assert m1["IsSuspected"] is True and m1["OffenderIdentified"] is True
    assert m4["Category"] == 4 and m4["Series"] == "S-9" and m4["IsPrecategorized"] is False
    m0 = media[_hashes(data[0])[0]]
    assert m0["Category"] == 1 and m0["IsPrecategorized"] is True


def test_a_heroes_vics_file_imports_back_with_the_same_categories(
    tmp_path: Path, evidence: tuple[Path, list[bytes]]
) -> None:
    ev, data = evidence
    store = _triage(ev, tmp_path / "case", [])
    try:
        ids = {r.md5: r.id for r in store.items()}
        wanted = {0: 1, 2: 0, 3: 2}
        for i, category in wanted.items():
            apply_label(store, [ids[_hashes(data[i])[0]]], Label(category), by="ana")
        for version in ("2.0", "1.3"):
            out = tmp_path / f"heroes-{version}.json"
            with open(out, "w", encoding="utf-8") as f:
                write_vics(store, f, version=version)
            entries = _entries(out)
            got = {i: entries[_hashes(data[i])[0]].category for i in range(5)}
            assert got == {0: "1", 1: None, 2: "0", 3: "2", 4: None}
    finally:
        store.close()
    second = _triage(ev, tmp_path / "case2", [tmp_path / "heroes-2.0.json"])
    try:
        matches = {r.md5: (r.known_match or {}).get("category") for r in second.items()}
    finally:
        second.close()
    assert matches[_hashes(data[0])[0]] == "1" and matches[_hashes(data[3])[0]] == "2"


def test_a_category_of_another_scheme_is_not_written_as_a_uk_code(
    tmp_path: Path, evidence: tuple[Path, list[bytes]]
) -> None:
    ev, data = evidence
    store = _triage(ev, tmp_path / "case", [])
    try:
        ids = {r.md5: r.id for r in store.items()}
        apply_label(store, [ids[_hashes(data[0])[0]]], Label(1), by="ana")
        doc = vics_document(store, profile="UK")
        with pytest.raises(VicsError):
            vics_document(store, version="1.3", profile="UK")
        with pytest.raises(VicsError):
            vics_document(store, version="3.0")
    finally:
        store.close()
    assert "/2.0.xml/UK/" in doc["@odata.context"]
    m0 = _media_by_md5(doc)[_hashes(data[0])[0]]
    assert "Category" not in m0 and "VICS-US" in m0["Comments"]


def test_media_ids_never_collide_with_a_sets_ids(
    tmp_path: Path, evidence: tuple[Path, list[bytes]]
) -> None:
    ev, data = evidence
    store = _triage(ev, tmp_path / "case", [])
    try:
        ids = sorted(r.id for r in store.items() if r.media_type == "image")
    finally:
        store.close()
    media = _media_13(data[:3])
    media[0]["MediaID"] = ids[-1]  # the id heroes would give another file
    source = _vics_13(tmp_path / "set.json", media)
    store = _triage(ev, tmp_path / "case2", [source])
    try:
        doc = vics_document(store)
    finally:
        store.close()
    numbers = [m["MediaID"] for m in doc["value"][0]["Media"]]
    assert len(numbers) == len(set(numbers)) == 5
    assert _media_by_md5(doc)[_hashes(data[0])[0]]["MediaID"] == ids[-1]
