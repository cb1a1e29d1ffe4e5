"""Hash-set readers: every supported dialect, the quirks of real exports, and fuzzing that shows a
hostile or broken file ends in :class:`HashSetError` or valid entries, never in anything else."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heroes.pipeline.hashsets import (
    FORMATS,
    HashEntry,
    HashSetError,
    detect_format,
    open_hashset,
)

MD5_A = "d41d8cd98f00b204e9800998ecf8427e"
MD5_B = "0cc175b9c0f1b6a831c399e269772661"
SHA1_A = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA1_B = "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"
SHA256_A = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA256_B = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
PDQ_A = "f" * 32 + "0" * 32
PDQ_B = "0123456789abcdef" * 4
INT64_MAX = 9223372036854775807

VICS13 = "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml#Media"
VICS20 = "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/{}/$metadata#{}"
HEX = frozenset("0123456789abcdef")


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _read(path: Path, **kwargs: Any) -> tuple[Any, list[HashEntry], Any]:
    info, entries, stats = open_hashset(path, **kwargs)
    return info, list(entries), stats


def _valid_hex(value: str | None, length: int) -> bool:
    return value is None or (len(value) == length and set(value) <= HEX)


def _assert_valid(entry: HashEntry) -> None:
    assert isinstance(entry, HashEntry)
    assert _valid_hex(entry.md5, 32)
    assert _valid_hex(entry.sha1, 40)
    assert _valid_hex(entry.sha256, 64)
    assert _valid_hex(entry.pdq, 64)
    assert any((entry.md5, entry.sha1, entry.sha256, entry.pdq))
    assert entry.category is None or isinstance(entry.category, str)
    assert entry.label is None or isinstance(entry.label, str)
    assert entry.ref is None or isinstance(entry.ref, str)
    assert isinstance(entry.meta, dict)


def test_vics_1_3_with_bom_string_booleans_and_missing_category_keeps_int64_ids(
    tmp_path: Path,
) -> None:
    doc = (
        '{"odata.metadata": "' + VICS13 + '", "value": ['
        '{"MediaID": ' + str(INT64_MAX) + ', "MD5": "' + MD5_A.upper() + '", "Category": 1,'
        ' "VictimIdentified": "true", "OffenderIdentified": "False", "IsDistributed": "True",'
        ' "Series": "Series X", "MediaSize": "1024",'
        ' "MediaFiles": [{"FileName": "a.jpg", "FilePath": "C:\\\\x\\\\a.jpg"}]},'
        '{"mediaid": 2, "md5": "' + MD5_B + '", "sha1": "' + SHA1_B + '"},'
        '{"MediaID": 3, "MD5": "' + MD5_A + '", "Category": "2"}]}'
    )
    path = _write(tmp_path / "vics13.json", doc, bom=True)
    info, entries, stats = _read(path)
    assert (info.format, info.scheme, info.known_good) == ("vics-1", "VICS-Default", False)
    assert info.categories["1"] == "Child abuse material"
    assert info.meta["version"] == "1.3" and info.meta["records"] == 3
    first, second, third = entries
    assert first.ref == str(INT64_MAX)
    assert first.md5 == MD5_A and first.category == "1" and first.label == "Series X"
    assert first.meta["VictimIdentified"] is True
    assert first.meta["OffenderIdentified"] is False
    assert first.meta["IsDistributed"] is True
    assert first.meta["MediaSize"] == 1024
    assert first.meta["FileNames"] == ["a.jpg"]
    assert second.category is None and second.sha1 == SHA1_B and second.ref == "2"
    assert third.category == "2"
    assert (stats.entries, stats.rejected) == (3, 0)


def test_vics_2_cases_with_nested_media_use_the_us_profile_table(tmp_path: Path) -> None:
    doc = {
        "@odata.context": VICS20.format("US", "Cases"),
        "value": [
            {
                "CaseID": "6f0c6f7e-2f7d-4c55-9a55-0d5f2b7c1e11",
                "CaseNumber": "2024-17",
                "ContactName": "Examiner",
                "SourceApplicationName": "Griffeye",
                "SourceApplicationVersion": "22.1",
                "TotalMediaFiles": 2,
                "Media": [
                    {
                        "MediaID": 1,
                        "MD5": MD5_A,
                        "SHA1": SHA1_A,
                        "Category": 3,
                        "IsPrecategorized": "true",
                        "Tags": "t1",
                    },
                    {"MediaID": 2, "MD5": MD5_B, "Category": 0},
                ],
            }
        ],
    }
    path = _write(tmp_path / "cases.json", json.dumps(doc))
    info, entries, stats = _read(path)
    assert (info.format, info.scheme) == ("vics-2", "VICS-US")
    assert info.categories == {
        "0": "Non-pertinent",
        "1": "Child abuse material",
        "2": "Child exploitive / age difficult",
        "3": "CGI/animation",
        "4": "Comparison",
    }
    assert info.meta["CaseNumber"] == "2024-17"
    assert info.meta["SourceApplicationName"] == "Griffeye"
    assert info.meta["kind"] == "Cases"
    assert [e.category for e in entries] == ["3", "0"]
    assert entries[0].sha1 == SHA1_A and entries[0].meta["IsPrecategorized"] is True
    assert entries[0].meta["CaseID"] == doc["value"][0]["CaseID"]
    assert stats.entries == 2


def test_vics_2_media_document_with_uk_profile_keeps_caid_grades(tmp_path: Path) -> None:
    doc = {
        "@odata.context": VICS20.format("UK", "Media"),
        "value": [
            {"MediaID": 10, "MD5": MD5_A, "Category": "a"},
            {"MediaID": 11, "MD5": MD5_B},
            {"MediaID": 12, "MD5": "not-a-hash"},
        ],
    }
    path = _write(tmp_path / "uk.json", json.dumps(doc))
    info, entries, stats = _read(path)
    assert (info.format, info.scheme) == ("vics-2", "VICS-UK")
    assert set(info.categories) >= {"A", "B", "C"}
    assert [(e.ref, e.category) for e in entries] == [("10", "A"), ("11", None)]
    assert stats.rejected == 1 and "MediaID 12" in stats.rejects[0]


def test_csv_with_md5_sha1_category_header(tmp_path: Path) -> None:
    text = f'MD5,SHA1,Category\n{MD5_A.upper()},{SHA1_A},1\n"{MD5_B}",,\n'
    path = _write(tmp_path / "list.csv", text)
    info, entries, stats = _read(path)
    assert (info.format, info.scheme, info.meta["delimiter"]) == ("csv", "none", ",")
    assert [(e.md5, e.sha1, e.category) for e in entries] == [
        (MD5_A, SHA1_A, "1"),
        (MD5_B, None, None),
    ]
    assert stats.rejected == 0


def test_tab_separated_sha256_list_with_names(tmp_path: Path) -> None:
    text = f"File Name\tSHA-256\tid\nx.png\t{SHA256_A}\t7\ny.png\t{SHA256_B.upper()}\t8\n"
    path = _write(tmp_path / "list.txt", text)
    info, entries, _ = _read(path)
    assert info.format == "csv" and info.meta["delimiter"] == "\t"
    assert [(e.sha256, e.label, e.ref) for e in entries] == [
        (SHA256_A, "x.png", "7"),
        (SHA256_B, "y.png", "8"),
    ]


def test_icse_semicolon_export_maps_image_id_series_and_flags(tmp_path: Path) -> None:
    header = (
        "MD5;SHA1;PhotoDNA;Image ID;Is distributed;Victim identified;Offender identified;"
        "Series name;Number of submissions;File Available;Media Type;Baseline"
    )
    row = f"{MD5_A};{SHA1_A};;123456;Yes;No;False;Blue series;4;True;Image;1"
    path = _write(tmp_path / "icse.csv", f"{header}\r\n{row}\r\n", bom=True)
    info, entries, stats = _read(path)
    assert info.format == "icse" and info.meta["delimiter"] == ";"
    (entry,) = entries
    assert (entry.md5, entry.sha1, entry.ref, entry.label) == (
        MD5_A,
        SHA1_A,
        "123456",
        "Blue series",
    )
    assert entry.meta == {
        "IsDistributed": True,
        "VictimIdentified": False,
        "OffenderIdentified": False,
        "NumberOfSubmissions": 4,
        "FileAvailable": True,
        "MediaType": "Image",
        "Baseline": True,
    }
    assert stats.entries == 1


def test_headerless_list_of_mixed_hashes(tmp_path: Path) -> None:
    text = f"{MD5_A}\n\n{SHA1_A.upper()}\n{SHA256_A}\n"
    path = _write(tmp_path / "hashes", text)
    assert detect_format(path) == "csv"
    info, entries, _ = _read(path)
    assert info.meta["header"] is None
    assert (entries[0].md5, entries[1].sha1, entries[2].sha256) == (MD5_A, SHA1_A, SHA256_A)


def test_md5sum_style_lines_keep_the_file_name_as_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "MD5SUMS", f"{MD5_A}  a b.jpg\n{MD5_B} *c.jpg\n")
    _, entries, _ = _read(path)
    assert [(e.md5, e.label) for e in entries] == [(MD5_A, "a b.jpg"), (MD5_B, "c.jpg")]


def test_nsrl_sqlite_is_streamed_and_left_byte_for_byte_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "RDS_2024.03.1_modern_minimal.db"
    with sqlite3.connect(db) as con:
        con.execute(
            "CREATE TABLE FILE (sha256 TEXT, sha1 TEXT, md5 TEXT, file_name TEXT,"
            " file_size INTEGER, package_id INTEGER)"
        )
        con.executemany(
            "INSERT INTO FILE VALUES (?, ?, ?, ?, ?, ?)",
            [
                (SHA256_A.upper(), SHA1_A.upper(), MD5_A.upper(), "notepad.exe", 2048, 17),
                (SHA256_B, None, None, "calc.exe", 1024, 18),
                ("XYZ", None, None, "broken.dll", 1, 19),
            ],
        )
    con.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    listing = sorted(p.name for p in tmp_path.iterdir())
    assert detect_format(db) == "nsrl"
    info, entries, stats = _read(db)
    assert (info.format, info.scheme, info.known_good) == ("nsrl", "NSRL", True)
    assert [(e.sha256, e.sha1, e.md5, e.label, e.ref) for e in entries] == [
        (SHA256_A, SHA1_A, MD5_A, "notepad.exe", "17"),
        (SHA256_B, None, None, "calc.exe", "18"),
    ]
    assert entries[0].meta["file_size"] == 2048
    assert stats.rejected == 1 and stats.rejects[0].startswith("row 3:")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_sqlite_without_a_file_table_is_not_an_nsrl_set(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(HashSetError, match="other.db.*FILE table"):
        detect_format(db)


def test_pdq_list_with_labels_quality_and_comments(tmp_path: Path) -> None:
    text = f"# PDQ hashes from a hotlist\n{PDQ_A} beach series\n\n{PDQ_B.upper()},90,img 7.jpg\n"
    path = _write(tmp_path / "list.txt", text)
    assert detect_format(path) == "pdq"
    info, entries, stats = _read(path)
    assert (info.format, info.scheme) == ("pdq", "none")
    assert [(e.pdq, e.label) for e in entries] == [(PDQ_A, "beach series"), (PDQ_B, "img 7.jpg")]
    assert entries[1].meta == {"quality": 90}
    assert stats.rejected == 0


def test_bad_rows_are_counted_with_line_numbers_and_do_not_stop_the_file(tmp_path: Path) -> None:
    text = f"md5;category\n{MD5_A};1\nzz;2\n{MD5_A[:-1]};3\n;4\n{MD5_B};2\n"
    path = _write(tmp_path / "list.csv", text)
    _, entries, stats = _read(path)
    assert [e.md5 for e in entries] == [MD5_A, MD5_B]
    assert (stats.entries, stats.rejected) == (2, 3)
    assert [r.split(":")[0] for r in stats.rejects] == ["line 3", "line 4", "line 5"]


def test_rejects_keep_only_the_first_twenty_reasons(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.txt", MD5_A + "\n" + "nothex\n" * 30)
    _, entries, stats = _read(path, fmt="csv")
    assert len(entries) == 1 and stats.rejected == 30 and len(stats.rejects) == 20


@pytest.mark.parametrize(
    "content",
    ["just some prose\nabout nothing\n", '{"a": 1}', "", "\x00\x01binary\x00"],
    ids=["prose", "other-json", "empty", "binary"],
)
def test_a_file_in_no_known_format_raises_hash_set_error(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path / "mystery.csv", content)
    with pytest.raises(HashSetError, match="cannot read mystery.csv as a hash set"):
        open_hashset(path)


def test_detect_format_ignores_the_file_extension(tmp_path: Path) -> None:
    vics = _write(tmp_path / "hashes.csv", json.dumps({"odata.metadata": VICS13, "value": []}))
    csv_named_json = _write(tmp_path / "set.json", f"SHA1\n{SHA1_A}\n")
    pdq_named_db = _write(tmp_path / "set.db", f"{PDQ_A} label\n")
    assert detect_format(vics) == "vics-1"
    assert detect_format(csv_named_json) == "csv"
    assert detect_format(pdq_named_db) == "pdq"


def test_name_format_and_known_good_can_be_given(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.txt", f"{SHA256_A}\n")
    info, entries, _ = _read(path, name="Lab set", fmt="pdq", known_good=True)
    assert (info.name, info.format, info.known_good, info.source) == (
        "Lab set",
        "pdq",
        True,
        "mine.txt",
    )
    assert entries[0].pdq == SHA256_A


def test_info_is_complete_before_iteration_and_stats_fill_while_iterating(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.csv", f"MD5\n{MD5_A}\n{MD5_B}\n")
    info, entries, stats = open_hashset(path)
    assert info.name == "list" and info.meta["header"] == ["MD5"]
    assert stats.entries == 0
    next(entries)
    assert stats.entries == 1
    assert list(entries) and stats.entries == 2


# --- property tests ----------------------------------------------------------------------------

_TOKENS = st.sampled_from(
    [
        MD5_A,
        MD5_A.upper(),
        SHA1_A,
        SHA256_A,
        PDQ_A,
        MD5_A[:-1],
        "MD5",
        "SHA1",
        "SHA-256",
        "Category",
        "Image ID",
        "Series name",
        "pdq",
        "#",
        "sep=;",
        "{",
        "}",
        "[",
        "]",
        '"',
        ",",
        ";",
        "\t",
        "|",
        " ",
        "  ",
        " *",
        "\n",
        "\r\n",
        "\r",
        "zz",
        "0",
        "1",
        "true",
        "\ufeff",
        "\x00",
        "é",
        '"odata.metadata": "',
        '"value": [',
        VICS13,
    ]
)
_FILES = st.one_of(
    st.binary(max_size=400),
    st.lists(_TOKENS, max_size=60).map(lambda xs: "".join(xs).encode("utf-8")),
    st.lists(_TOKENS, max_size=60).map(lambda xs: "".join(xs).encode("utf-16")),
    st.binary(max_size=400).map(lambda b: b"SQLite format 3\x00" + b),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=_FILES, fmt=st.sampled_from((None, *FORMATS)))
def test_any_bytes_give_hash_set_error_or_only_valid_entries(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, fmt: str | None
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "set"
    path.write_bytes(content)
    try:
        info, entries, stats = open_hashset(path, fmt=fmt)
        items = list(entries)
    except HashSetError:
        return
    assert info.format in FORMATS
    for entry in items:
        _assert_valid(entry)
    assert stats.entries == len(items)


_KEYS = st.one_of(
    st.sampled_from(
        [
            "MD5",
            "md5",
            "SHA1",
            "SHA256",
            "PDQ",
            "MediaID",
            "Category",
            "Media",
            "MediaFiles",
            "FileName",
            "Series",
            "VictimIdentified",
            "IsDistributed",
            "MediaSize",
            "Hashes",
            "HashName",
            "HashValue",
            "PhotoDNA",
            "CaseID",
        ]
    ),
    st.text(max_size=8),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from([MD5_A, MD5_B.upper(), SHA1_A, SHA256_A, PDQ_A, " " + MD5_A, "true", "1"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=25,
)
_ENVELOPES = st.sampled_from(
    [
        ("odata.metadata", VICS13),
        ("@odata.context", VICS20.format("US", "Cases")),
        ("@odata.context", VICS20.format("UK", "Media")),
        ("@odata.context", VICS20.format("CUSTOM", "Media")),
        ("@odata.context", "junk"),
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    envelope=_ENVELOPES,
    values=st.lists(st.one_of(st.dictionaries(_KEYS, _JSON, max_size=6), _JSON), max_size=5),
    bom=st.booleans(),
)
def test_any_json_in_a_vics_envelope_gives_hash_set_error_or_only_valid_entries(
    tmp_path_factory: pytest.TempPathFactory,
    envelope: tuple[str, str],
    values: list[Any],
    bom: bool,
) -> None:
    key, url = envelope
    path = tmp_path_factory.mktemp("vics") / "set.json"
    _write(path, json.dumps({key: url, "value": values}), bom=bom)
    try:
        info, entries, stats = open_hashset(path)
        items = list(entries)
    except HashSetError:
        return
    assert info.format in ("vics-1", "vics-2")
    for entry in items:
        _assert_valid(entry)
    assert stats.entries == len(items)
