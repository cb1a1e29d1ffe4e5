"""The CLI facing hostile names and bad arguments: exit 2 with a message, never a traceback;
nothing written into the evidence; names printed as they are, never as markup or escapes."""

from __future__ import annotations

import io
import os
import sqlite3
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heroes.cli import app

runner = CliRunner()
ENV = {"HEROES_MODELS": "false", "HEROES_ENGINE": "local", "HEROES_WORKERS": "1"}


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={**ENV, **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.output


def _evidence(root: Path) -> Path:
    ev = root / "ev"
    ev.mkdir()
    (ev / "a.txt").write_text("a")
    return ev


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_case_reached_through_dotdot_inside_the_evidence_is_refused(tmp_path: Path) -> None:
    ev = _evidence(tmp_path)
    (tmp_path / "other").mkdir()
    before = _listing(ev)
    code, text = _run("triage", str(ev), "--case", str(tmp_path / "other" / ".." / "ev" / "case"))
    assert code == 2 and "must not be inside the evidence" in text
    assert _listing(ev) == before


def test_a_case_reached_through_a_symlink_into_the_evidence_is_refused(tmp_path: Path) -> None:
    ev = _evidence(tmp_path)
    (tmp_path / "link").symlink_to(ev)
    before = _listing(ev)
    code, text = _run("triage", str(ev), "--case", str(tmp_path / "link" / "case"))
    assert code == 2 and "must not be inside the evidence" in text
    assert _listing(ev) == before


def test_evidence_inside_the_case_is_refused(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    ev = _evidence(case)
    code, text = _run("triage", str(ev), "--case", str(case))
    assert code == 2 and "must not be inside the case folder" in text


def test_an_empty_case_name_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev = _evidence(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, text = _run("triage", str(ev), "--case", "")
    assert code == 2 and "--case needs a folder name" in text
    assert not (tmp_path / "case.db").exists()


@pytest.mark.parametrize(
    ("args", "env", "shown"),
    [
        (["--workers", "-1"], {}, "invalid setting workers"),
        ([], {"HEROES_WORKERS": "many"}, "HEROES_WORKERS"),
        ([], {"HEROES_LIMITS__MAX_DEPTH": "-3"}, "HEROES_LIMITS__MAX_DEPTH"),
    ],
)
def test_bad_settings_are_exit_2_with_the_setting_named(
    tmp_path: Path, args: list[str], env: dict[str, str], shown: str
) -> None:
    ev = _evidence(tmp_path)
    code, text = _run("triage", str(ev), "--case", str(tmp_path / "case"), *args, env=env)
    assert code == 2 and shown in text and "Traceback" not in text


def test_a_case_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    ev = _evidence(tmp_path)
    case = tmp_path / "case"
    assert _run("triage", str(ev), "--case", str(case))[0] == 0
    with sqlite3.connect(case / "case.db") as c:
        c.execute("update store_meta set value = '1' where key = 'schema_version'")
    code, text = _run("triage", str(ev), "--case", str(case))
    assert code == 2 and "made by an older heroes (store schema 1" in text
    code, text = _run("queue", str(case))
    assert code == 2 and "store schema 1" in text
    with sqlite3.connect(case / "case.db") as c:
        c.execute("update store_meta set value = '99' where key = 'schema_version'")
    code, text = _run("export", str(case))
    assert code == 2 and "made by a newer heroes" in text


def test_a_read_only_case_store_is_exit_2(tmp_path: Path) -> None:
    ev = _evidence(tmp_path)
    case = tmp_path / "case"
    assert _run("triage", str(ev), "--case", str(case))[0] == 0
    url = f"sqlite:///file:{case / 'case.db'}?mode=ro&uri=true"
    code, text = _run("triage", str(ev), "--case", str(case), env={"HEROES_DB_URL": url})
    assert code == 2 and "read-only" in text


def test_export_into_a_missing_folder_is_exit_2(tmp_path: Path) -> None:
    ev = _evidence(tmp_path)
    case = tmp_path / "case"
    assert _run("triage", str(ev), "--case", str(case))[0] == 0
    code, text = _run("export", str(case), "-o", str(tmp_path / "nowhere" / "x.jsonl"))
    assert code == 2 and "does not exist" in text


def _hostile_names(ev: Path) -> None:
    (ev / "[").mkdir()
    (ev / "[" / "f.txt").write_text("in a bracket folder")
    (ev / "[red]shown").write_text("markup")
    (ev / "[/x]").symlink_to("/nonexistent")
    (ev / "esc\x1b]0;pwned\x07\x1b[2J.txt").write_text("escape")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[bold]m\x1b[31m", b"member")
    (ev / "z.zip").write_bytes(buf.getvalue())


def test_names_that_look_like_markup_or_escapes_print_as_they_are(tmp_path: Path) -> None:
    ev = _evidence(tmp_path)
    _hostile_names(ev)
    case = tmp_path / "case"
    code, text = _run("triage", str(ev), "--case", str(case))
    assert code == 0, text
    code, text = _run("queue", str(case), "--top", "100")
    assert code == 0, text
    flat = "".join(text.split())  # the table folds long cells over lines
    assert "[red]shown" in flat and "[/x]" in flat and "[/f.txt" in flat
    assert "\x1b" not in text and "\x07" not in text
    assert "esc\\x1b]0;pwned\\x07\\x1b[2J.txt" in flat
    assert "z.zip!/[bold]m\\x1b[31m" in flat


def test_a_finished_triage_prints_its_tables_with_hostile_names(tmp_path: Path) -> None:
    ev = _evidence(tmp_path)
    _hostile_names(ev)
    hs = tmp_path / "bad.txt"
    import hashlib

    hs.write_text(hashlib.md5(b"markup").hexdigest() + "\n")
    code, text = _run("triage", str(ev), "--case", str(tmp_path / "case"), "--hashset", str(hs))
    assert code == 0, text
    assert "\x1b" not in text
    assert "[red]shown" in "".join(text.split())


def test_control_characters_in_the_evidence_path_do_not_reach_the_terminal(
    tmp_path: Path,
) -> None:
    ev = tmp_path / "seized\x1b[2J"
    ev.mkdir()
    (ev / "a.txt").write_text("a")
    code, text = _run("triage", str(ev), "--case", str(tmp_path / "case"))
    assert code == 0, text
    assert "\x1b" not in text and "seized\\x1b[2J" in "".join(text.split())
    assert os.path.isdir(ev)
