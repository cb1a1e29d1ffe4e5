"""A list of 64-digit hashes may be SHA-256 or PDQ: the file, a FORMAT: prefix or ``--format``
settles it, and a list that could be either is never guessed silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heroes.cli import app
from heroes.pipeline.hashsets import HashSetSource, hashset_source, open_hashset
from heroes.pipeline.importsets import import_hashsets
from heroes.store.db import CaseStore

PDQ_A = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
PDQ_B = "54a977c221d14c1c43ba5e4e21d4a13989a3553f1462611cbb87fda7be83b677"

runner = CliRunner()


def _bare(tmp_path: Path) -> Path:
    path = tmp_path / "export.txt"
    path.write_text(f"{PDQ_A}\n{PDQ_B}\n")
    return path


def test_a_bare_64_digit_list_reads_as_sha256_with_a_warning(tmp_path: Path) -> None:
    info, entries, stats = open_hashset(_bare(tmp_path))
    rows = list(entries)
    assert info.format == "csv"
    assert [e.sha256 for e in rows] == [PDQ_A, PDQ_B]
    assert all(e.pdq is None for e in rows)
    assert len(stats.warnings) == 1
    assert "pdq:export.txt" in stats.warnings[0]
    assert info.meta["warning"] == stats.warnings[0]


def test_sha256sum_output_is_not_in_doubt(tmp_path: Path) -> None:
    path = tmp_path / "SHA256SUMS"
    path.write_text(f"{PDQ_A}  a.jpg\n{PDQ_B} *b.jpg\n")
    info, entries, stats = open_hashset(path)
    assert info.format == "csv"
    assert [e.sha256 for e in entries] == [PDQ_A, PDQ_B]
    assert stats.warnings == []


def test_mixed_hash_lengths_are_not_in_doubt(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_text(f"{PDQ_A}\n{'a' * 32}\n")
    _info, entries, stats = open_hashset(path)
    assert len(list(entries)) == 2
    assert stats.warnings == []


def test_a_forced_pdq_format_reads_the_bare_list_as_pdq_without_doubt(tmp_path: Path) -> None:
    info, entries, stats = open_hashset(_bare(tmp_path), fmt="pdq")
    rows = list(entries)
    assert info.format == "pdq"
    assert [e.pdq for e in rows] == [PDQ_A, PDQ_B]
    assert all(e.sha256 is None for e in rows)
    assert stats.warnings == []


def test_a_comment_naming_pdq_settles_a_bare_list(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(f"# PDQ hashes\n{PDQ_A}\n{PDQ_B}\n")
    info, entries, stats = open_hashset(path)
    assert info.format == "pdq"
    assert [e.pdq for e in entries] == [PDQ_A, PDQ_B]
    assert stats.warnings == []


@pytest.mark.parametrize("header", ["hash,quality", "Hash;Quality", "signal,hash,pdq_quality"])
def test_a_hash_column_beside_a_quality_column_holds_pdq(tmp_path: Path, header: str) -> None:
    sep = ";" if ";" in header else ","
    cells = ["x"] if header.startswith("signal") else []
    path = tmp_path / "export.csv"
    path.write_text(
        header + "\n" + "".join(sep.join([*cells, h, "90"]) + "\n" for h in (PDQ_A, PDQ_B))
    )
    _info, entries, stats = open_hashset(path)
    rows = list(entries)
    assert [e.pdq for e in rows] == [PDQ_A, PDQ_B]
    assert all(e.sha256 is None and e.meta["quality"] == 90 for e in rows)
    assert stats.warnings == []


def test_a_named_sha256_column_stays_sha256_beside_a_quality_column(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f"sha256,quality\n{PDQ_A},90\n")
    _info, entries, _stats = open_hashset(path)
    (entry,) = list(entries)
    assert (entry.sha256, entry.pdq) == (PDQ_A, None)


def test_hashset_source_reads_a_format_prefix(tmp_path: Path) -> None:
    assert hashset_source("pdq:lists/a.txt") == HashSetSource(Path("lists/a.txt"), "pdq")
    assert hashset_source("PDQ:a.txt") == HashSetSource(Path("a.txt"), "pdq")
    assert hashset_source("a.txt") == HashSetSource(Path("a.txt"), None)
    assert hashset_source("notaformat:a.txt") == HashSetSource(Path("notaformat:a.txt"), None)
    real = tmp_path / "pdq:odd name.txt"
    real.write_text(PDQ_A + "\n")
    assert hashset_source(str(real)) == HashSetSource(real, None)


def test_a_list_read_as_sha256_can_be_imported_again_as_pdq(tmp_path: Path) -> None:
    path = _bare(tmp_path)
    store = CaseStore(tmp_path / "case")
    try:
        doubts: list[str] = []
        first = import_hashsets(store, [path], warn=doubts.append)
        again = import_hashsets(store, [path], warn=doubts.append)
        as_pdq = import_hashsets(store, [HashSetSource(path, "pdq")], warn=doubts.append)
        assert [new for *_rest, new in first + again + as_pdq] == [True, False, True]
        assert len(doubts) == 2  # the first import and the repeat both say it
        formats = sorted(r.format for r in store.hashset_rows())
        assert formats == ["csv", "pdq"]
    finally:
        store.close()


def test_cli_import_takes_a_format_prefix_and_a_format_option(tmp_path: Path) -> None:
    path = _bare(tmp_path)
    case = tmp_path / "case"
    doubtful = runner.invoke(app, ["hashsets", "import", str(path), "--into", str(case)])
    assert doubtful.exit_code == 0, doubtful.output
    assert "warning" in doubtful.output and "pdq:export.txt" in doubtful.output
    prefixed = runner.invoke(app, ["hashsets", "import", f"pdq:{path}", "--into", str(case)])
    assert prefixed.exit_code == 0, prefixed.output
    assert "warning" not in prefixed.output and "imported" in prefixed.output
    other = tmp_path / "other.txt"
    other.write_text(PDQ_B + "\n")
    option = runner.invoke(
        app, ["hashsets", "import", str(other), "--format", "pdq", "--into", str(case)]
    )
    assert option.exit_code == 0, option.output
    listing = runner.invoke(app, ["hashsets", "list", str(case)])
    assert listing.output.count("pdq") >= 2
    assert "warning" in listing.stderr and "pdq:export.txt" in listing.stderr
    wrong = runner.invoke(
        app, ["hashsets", "import", str(other), "--format", "md5", "--into", str(case)]
    )
    assert wrong.exit_code == 2
    missing = runner.invoke(app, ["hashsets", "import", "pdq:nope.txt", "--into", str(case)])
    assert missing.exit_code == 2 and "nope.txt" in missing.output


def test_cli_triage_reads_a_pdq_prefixed_bare_list_as_pdq(tmp_path: Path) -> None:
    import io

    from PIL import Image
    from skimage import data

    from heroes.pipeline.decode import analyze_image

    evidence = tmp_path / "evidence"
    evidence.mkdir()
    buf = io.BytesIO()
    Image.fromarray(data.coffee()).save(buf, "JPEG", quality=90)
    (evidence / "cup.jpg").write_bytes(buf.getvalue())
    pdq = analyze_image(buf.getvalue()).pdq
    listing = tmp_path / "export.txt"
    listing.write_text(f"{pdq}\n")
    base = ["triage", str(evidence), "--no-models", "--engine", "local", "--json"]

    doubtful = runner.invoke(app, [*base, "--case", str(tmp_path / "a"), "--hashset", str(listing)])
    assert doubtful.exit_code == 0, doubtful.output
    assert "warning" in doubtful.stderr and "pdq:export.txt" in doubtful.stderr
    assert json.loads(doubtful.stdout)["matches"] == []

    sure = runner.invoke(app, [*base, "--case", str(tmp_path / "b"), "--hashset", f"pdq:{listing}"])
    assert sure.exit_code == 0, sure.output
    assert "warning" not in sure.stderr
    (match,) = json.loads(sure.stdout)["matches"]
    assert match["method"] == "pdq" and match["count"] == 1


def test_a_generic_hash_column_of_64_digit_values_is_read_as_sha256_with_a_warning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f"hash,label\n{PDQ_A},one\n{PDQ_B},two\n")
    info, entries, stats = open_hashset(path)
    assert [e.sha256 for e in entries] == [PDQ_A, PDQ_B]
    assert len(stats.warnings) == 1 and "'hash' column" in stats.warnings[0]
    forced_info, forced, forced_stats = open_hashset(path, fmt="pdq")
    rows = list(forced)
    assert forced_info.format == "pdq"
    assert [(e.pdq, e.label) for e in rows] == [(PDQ_A, "one"), (PDQ_B, "two")]
    assert forced_stats.rejected == 0 and forced_stats.warnings == []


def test_named_or_mixed_hash_columns_are_not_in_doubt(tmp_path: Path) -> None:
    named = tmp_path / "named.csv"
    named.write_text(f"sha256,label\n{PDQ_A},one\n")
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(f"hash,label\n{PDQ_A},one\n{'a' * 32},two\n")
    for path in (named, mixed):
        _info, entries, stats = open_hashset(path)
        assert len(list(entries)) >= 1
        assert stats.warnings == []
