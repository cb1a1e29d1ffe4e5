"""The CLI around labels and exports: label, queue, export csv/vics, and their errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from heroes.cli import app
from heroes.config import Settings
from heroes.pipeline.report import RECORD_FIELDS, safe_cell
from heroes.pipeline.runner import triage

runner = CliRunner()


def jpeg(seed: int) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=80)
    return buf.getvalue()


HOSTILE = ["=HYPERLINK(x).jpg", "+1.jpg", "-2.jpg", "@SUM(A1).jpg", "\tt.jpg", "plain.jpg"]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli-reports")
    ev = base / "ev"
    ev.mkdir()
    for i, name in enumerate(HOSTILE):
        (ev / name).write_bytes(jpeg(i))
    (ev / "copy.jpg").write_bytes(jpeg(0))
    triage(ev, base / "case", settings=Settings(workers=1, models=False))
    return base / "case"


def _queue(case: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["queue", str(case), "--json"])
    assert result.exit_code == 0, result.output
    return {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        (3, 3),
        (None, None),
    ],
)
def test_a_cell_that_starts_like_a_formula_is_neutralised(cell: Any, shown: Any) -> None:
    assert safe_cell(cell) == shown


def test_csv_export_is_utf8_with_bom_and_shows_hostile_names_as_text(
    case: Path, tmp_path: Path
) -> None:
    out = tmp_path / "items.csv"
    result = runner.invoke(app, ["export", str(case), "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with open(out, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(HOSTILE) + 1
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    paths = {r["path"] for r in rows}
    # a tab in a name is already escaped in the evidence path (docs/records.md)
    assert "'=HYPERLINK(x).jpg" in paths and "\\x09t.jpg" in paths and "plain.jpg" in paths


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "vics"])
def test_export_into_a_missing_folder_is_a_clear_error(
    case: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "no" / "such" / "items.out"
    result = runner.invoke(app, ["export", str(case), "--format", fmt, "-o", str(out)])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "no").exists()


def test_label_command_labels_copies_and_shows_in_queue_and_jsonl(
    case: Path, tmp_path: Path
) -> None:
    q = _queue(case)
    item = q["=HYPERLINK(x).jpg"]["item_id"]
    result = runner.invoke(
        app,
        ["label", str(case), str(item), "--category", "2", "--victim-identified"]
        + ["--series", "S-1", "--note", "[bold]x[/bold]", "--by", "ana", "--json"],
    )
    assert result.exit_code == 0, result.output
    labelled = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["item_id"] for r in labelled} == {item, q["copy.jpg"]["item_id"]}
    q = _queue(case)
    lab = q["copy.jpg"]["label"]
    assert lab["category"] == 2 and lab["victim_identified"] and lab["series"] == "S-1"
    assert lab["by"] == "ana" and q["plain.jpg"]["label"] is None
    table = runner.invoke(app, ["queue", str(case)])
    assert table.exit_code == 0 and "[bold]x[/bold]" in table.output
    out = tmp_path / "items.jsonl"
    assert runner.invoke(app, ["export", str(case), "-o", str(out)]).exit_code == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    # fields come in the contract's order, label added after members (docs/records.md)
    assert all(list(r) == list(RECORD_FIELDS) for r in recs)
    assert RECORD_FIELDS.index("label") == RECORD_FIELDS.index("members") + 1
    assert {r["path"]: r["label"] for r in recs}["copy.jpg"]["category"] == 2
    vics = tmp_path / "case.vics.json"
    result = runner.invoke(app, ["export", str(case), "--format", "vics", "-o", str(vics)])
    assert result.exit_code == 0, result.output
    media = json.loads(vics.read_text())["value"][0]["Media"]
    assert [m["Category"] for m in media if "Category" in m] == [2]


@pytest.mark.parametrize(
    "args",
    [["--category", "5"], ["--category", "-1"], []],
)
def test_label_refuses_bad_categories_and_unknown_items(case: Path, args: list[str]) -> None:
    item = "999999" if not args else "1"
    result = runner.invoke(app, ["label", str(case), item, *args, "--by", "ana"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_labelling_a_read_only_case_is_a_clear_error(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///file:{case / 'case.db'}?mode=ro&uri=true"
    monkeypatch.setenv("HEROES_DB_URL", url)
    result = runner.invoke(app, ["label", str(case), "1", "--category", "0", "--by", "ana"])
    assert result.exit_code == 2 and "readonly" in result.output
    assert "Traceback" not in result.output
