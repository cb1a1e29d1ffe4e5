"""The HTML case report: it opens in a headless browser with no console error, fetches nothing,
shows only blurred thumbnails, escapes every evidence name, and its summary agrees with the JSONL
export. The demo report's screenshot is kept under build/test-artifacts (or
``HEROES_TEST_ARTIFACTS``)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from heroes.cli import app
from heroes.config import Settings
from heroes.demo import build_demo, video_bytes
from heroes.pipeline.casereport import (
    blurred_thumbnail,
    blurred_video_thumbnail,
    build_report,
    error_kind,
)
from heroes.pipeline.labels import Label, apply_label
from heroes.pipeline.runner import triage
from heroes.search import persons
from heroes.store import CaseStore

runner = CliRunner()
ARTIFACTS = Path(
    os.environ.get("HEROES_TEST_ARTIFACTS", Path(__file__).parents[2] / "build" / "test-artifacts")
)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise RuntimeError("Chromium is not installed (make system-deps installs it)")


def open_in_chromium(
    page: Path, tmp: Path, screenshot: Path | None = None
) -> tuple[str, list[str]]:
    """(the DOM after load, console messages) of a page opened in headless Chromium."""
    base = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    if screenshot is not None:
        shot = subprocess.run(
            [
                *base,
                "--window-size=1280,2400",
                f"--screenshot={screenshot}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        console += [line for line in shot.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, console


class _Keys(HTMLParser):
    """Text of every element with a ``data-key``, plus the tags and attributes seen."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str, str | None]] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs += [(tag, k, v) for k, v in attrs]
        key = dict(attrs).get("data-key")
        if key:
            self._open = key
            self.values[key] = ""

    def handle_data(self, data: str) -> None:
        if self._open:
            self.values[self._open] += data

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def _parse(html: str) -> _Keys:
    p = _Keys()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("report")
    paths = build_demo(base / "seizure", base / "hashsets")
    hs = paths["hashsets"]
    case = base / "case"
    triage(
        paths["seizure"],
        case,
        settings=Settings(workers=1, engine="local"),
        hashsets=[hs / "known-bad.vics.json", hs / "known-bad.pdq.txt"],
        known_good=[hs / "known-good.csv"],
    )
    store = CaseStore(case, create=False)
    try:
        first = next(store.items())
        apply_label(store, [first.id], Label(1, series="demo <series>"), by="examiner")
    finally:
        store.close()
    persons(case, min_faces=2)
    report = base / "report.html"
    made = runner.invoke(app, ["report", str(case), "-o", str(report)])
    assert made.exit_code == 0, made.output
    out = base / "items.jsonl"
    exported = runner.invoke(app, ["export", str(case), "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "case-report.png"
    dom, console = open_in_chromium(report, base, shot)
    return {
        "base": base,
        "case": case,
        "report": report,
        "html": report.read_text(encoding="utf-8"),
        "records": [json.loads(line) for line in out.read_text().splitlines()],
        "dom": dom,
        "console": console,
        "screenshot": shot,
    }


def test_the_demo_report_opens_in_headless_chromium_without_console_errors(
    demo: dict[str, Any],
) -> None:
    assert demo["console"] == []
    keys = _parse(demo["dom"])
    assert {"total", "bytes", "errors", "matches", "faces", "labelled"} <= set(keys.values)
    for section in ("Summary", "Review queue", "Labels", "Identities", "Plots", "Chain of custody"):
        assert section in demo["dom"]
    with Image.open(demo["screenshot"]) as shot:
        assert shot.size == (1280, 2400)
        assert len(np.unique(np.asarray(shot.convert("L").resize((64, 64))))) > 8  # not blank


def test_the_browser_check_catches_a_page_that_reaches_the_network(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        demo_head := "<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; img-src data:\"></head>"
        "<body><img src='http://example.invalid/x.png'></body></html>"
    )
    assert demo_head
    _dom, console = open_in_chromium(bad, tmp_path)
    assert console and "example.invalid" in console[0]


def test_every_number_in_the_summary_agrees_with_the_jsonl_export(demo: dict[str, Any]) -> None:
    recs = demo["records"]
    got = _parse(demo["dom"]).values
    assert int(got["total"]) == len(recs)
    assert int(got["bytes"]) == sum(r["size"] or 0 for r in recs)
    assert int(got["errors"]) == sum(r["status"] == "error" for r in recs)
    assert int(got["matches"]) == sum(bool(r["known_match"]) for r in recs)
    originals = [r for r in recs if r["status"] != "duplicate"]
    assert int(got["faces"]) == sum(len(r["faces"]) for r in originals)
    assert int(got["labelled"]) == sum(r["label"] is not None for r in recs) > 0
    assert int(got["root-files"]) == len(recs)
    by_type = Counter(r["media_type"] for r in recs)
    by_type_status = Counter((r["media_type"], r["status"]) for r in recs)
    errors = Counter(error_kind(r["error"]) for r in recs if r["error"])
    matches = Counter(
        (
            r["known_match"]["hashset"],
            "known-good"
            if r["known_match"]["known_good"]
            else "uncategorised"
            if r["known_match"]["category"] is None
            else f"{r['known_match']['category']} {r['known_match']['category_name']}",
            r["known_match"]["method"],
        )
        for r in recs
        if r["known_match"]
    )
    shown = {k: int(v) for k, v in got.items() if ":" in k}
    assert {k: v for k, v in shown.items() if k.startswith("type:")} == {
        f"type:{t}": n for t, n in by_type.items()
    }
    assert {k: v for k, v in shown.items() if k.startswith("type-status:") and v} == {
        f"type-status:{t}:{s}": n for (t, s), n in by_type_status.items()
    }
    assert {k: v for k, v in shown.items() if k.startswith("error:")} == {
        f"error:{k}": n for k, n in errors.items()
    }
    assert {k: v for k, v in shown.items() if k.startswith("match:")} == {
        f"match:{h}:{c}:{m}": n for (h, c, m), n in matches.items()
    }
    assert len(errors) >= 3 and len(matches) >= 3  # the demo has both, so the check means something


def test_the_digests_in_the_report_can_be_recomputed_from_the_export(demo: dict[str, Any]) -> None:
    got = _parse(demo["dom"]).values
    exported = (demo["base"] / "items.jsonl").read_bytes()
    assert got["records-digest"] == hashlib.sha256(exported).hexdigest()
    lines = sorted(f"{r['path']}\t{r['sha256'] or '-'}\n" for r in demo["records"])
    assert got["listing"] == hashlib.sha256("".join(lines).encode()).hexdigest()


def test_the_report_fetches_nothing_and_embeds_only_blurred_jpegs(demo: dict[str, Any]) -> None:
    html = demo["html"]
    keys = _parse(html)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for tag, attr, value in keys.attrs:
        if attr in ("src", "href") or (attr.endswith("href") and tag in ("use", "image")):
            assert value is not None
            assert value.startswith(("data:image/jpeg;base64,", "#")), (tag, attr, value[:60])
    assert keys.tags["img"] >= 5
    clip = html.index("misc/clip.mp4</td>")  # the demo's video has its blurred first frame too
    assert html.rindex("<img", 0, clip) > html.rindex("<tr>", 0, clip)
    assert keys.tags["svg"] == 6  # six plots, all drawn from the demo's data
    assert keys.tags["script"] == 0 and "<link" not in html
    assert "demo &lt;series&gt;" in html


def _sharpness(jpeg: bytes) -> float:
    with Image.open(io.BytesIO(jpeg)) as im:
        a = np.asarray(im.convert("L"), dtype=np.float64)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float(lap.var())


def test_thumbnails_are_blurred_in_their_pixels() -> None:
    board = (np.indices((480, 480)).sum(axis=0) // 12 % 2 * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(board).convert("RGB").save(buf, "PNG")
    sharp = Image.fromarray(board).convert("RGB")
    sharp.thumbnail((96, 96))
    sharp_buf = io.BytesIO()
    sharp.save(sharp_buf, "JPEG", quality=95)
    thumb = blurred_thumbnail(buf.getvalue())
    with Image.open(io.BytesIO(thumb)) as im:
        assert max(im.size) == 96
    assert _sharpness(thumb) < 0.05 * _sharpness(sharp_buf.getvalue())
    # and the blur is the report's, not a property of JPEG: a light blur keeps the pattern
    light = sharp.filter(ImageFilter.GaussianBlur(0.5))
    light_buf = io.BytesIO()
    light.save(light_buf, "JPEG", quality=95)
    assert _sharpness(light_buf.getvalue()) > 0.05 * _sharpness(sharp_buf.getvalue())


def test_a_video_gets_a_blurred_thumbnail_of_its_first_frame() -> None:
    board = (np.indices((240, 320)).sum(axis=0) // 12 % 2 * 255).astype(np.uint8)
    clip = video_bytes([(np.stack([board] * 3, axis=-1), 1.0)], fps=5)
    thumb = blurred_video_thumbnail(clip)
    with Image.open(io.BytesIO(thumb)) as im:
        assert max(im.size) == 96
        assert float(np.asarray(im.convert("L")).std()) < 20  # the checkerboard is gone
    with pytest.raises(Exception):  # noqa: B017 - PyAV raises its own errors on garbage
        blurred_video_thumbnail(b"not a video at all")


def test_hostile_names_and_exif_text_are_escaped(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "<img src=x onerror=alert(1)>"
    exif[0x0110] = "$\\frac{1}{0}$ & </svg><script>alert(2)</script>"
    a = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    name = "<script>alert(3)</script>.jpg"  # a folder and a file: its path is this name
    (ev / "<script>alert(3)<").mkdir()
    Image.fromarray(a).save(ev / name, "JPEG", exif=exif.tobytes())
    (ev / '=cmd|\' &amp; "quoted".jpg').write_bytes((ev / name).read_bytes()[:200])
    triage(ev, tmp_path / "case", settings=Settings(workers=1, models=False))
    store = CaseStore(tmp_path / "case", create=False)
    try:
        html = build_report(store)
    finally:
        store.close()
    keys = _parse(html)
    assert keys.tags["script"] == 0
    assert not [a for a in keys.attrs if a[1].startswith("on")]
    assert "&lt;script&gt;alert(3)&lt;/script&gt;.jpg" in html
    assert "&amp;amp;" in html  # a literal "&amp;" in a name shows as typed
    assert re.search(r"&lt;img src=x onerror=alert\(1\)&gt;", html)  # in the camera plot's SVG


def test_report_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "case")
    store.close()
    result = runner.invoke(
        app, ["report", str(tmp_path / "case"), "-o", str(tmp_path / "no" / "r.html")]
    )
    assert result.exit_code == 2 and "does not exist" in result.output


def test_the_report_as_pdf_is_laid_out_without_a_browser(demo: dict[str, Any]) -> None:
    out = demo["base"] / "report.pdf"
    result = runner.invoke(app, ["report", str(demo["case"]), "--format", "pdf", "-o", str(out)])
    assert result.exit_code == 0, result.output
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert len(pdf) > 50_000  # the thumbnails and plots are in it, not only text
