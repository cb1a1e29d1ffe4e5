"""The investigators' page in a real headless browser (Debian's chromium driven by Playwright),
against the real server (``heroes serve`` on 127.0.0.1) over a triaged benign demo case.

Screenshots go to ``$HEROES_TEST_ARTIFACTS`` (else a pytest temporary folder); with
``HEROES_DOCS_IMG=docs/img`` the ones the README shows are copied there as well.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("HEROES_CHROMIUM", "/usr/bin/chromium"))
HOSTILE = '<img src=x onerror="window.__pwned=1">.jpg'
REPO = Path(__file__).resolve().parents[2]


def _load_bench() -> Any:
    """benchmarks/load_serving.py: the case, key and server helpers the load test uses too."""
    spec = importlib.util.spec_from_file_location(
        "load_serving", REPO / "benchmarks" / "load_serving.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["load_serving"] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


@dataclass
class Site:
    base: str
    key: str
    secret: str
    root: Path
    artifacts: Path
    query: Path

    def api(self, path: str) -> Any:
        r = httpx.get(f"{self.base}{path}", headers={"Authorization": f"Bearer {self.key}"})
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("browser")
    root = work / "cases"
    seizure = work / "seizure"
    from heroes.demo import build_demo

    build_demo(seizure, work / "seizure-hashsets")
    # an evidence name written to attack the page: it must come back as text, never as HTML
    shutil.copy(seizure / "DCIM" / "100DEMO" / "IMG_0000_astronaut.jpg", seizure / HOSTILE)
    from heroes.config import Settings
    from heroes.pipeline.runner import triage

    hs = work / "seizure-hashsets"
    triage(
        seizure,
        root / bench.CASE,
        settings=Settings(workers=2, engine="local"),
        hashsets=[hs / "known-bad.vics.json", hs / "known-bad.pdq.txt"],
        known_good=[hs / "known-good.csv"],
    )
    secret = secrets.token_urlsafe(32)
    key = bench.grant_key(root, secret, [bench.CASE])
    env_art = os.environ.get("HEROES_TEST_ARTIFACTS")
    artifacts = Path(env_art) if env_art else work / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    query = work / "query.jpg"
    query.write_bytes(bench.astronaut_jpeg())
    with bench.serve(root, secret, bench.free_port(), work / "server.log") as base:
        yield Site(base, key, secret, root, artifacts, query)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    yield pg
    context.close()
    assert not problems, problems


def shot(pg: Any, site: Site, name: str, *, docs: bool = False, full: bool = False) -> Path:
    out = site.artifacts / f"{name}.png"
    pg.screenshot(path=str(out), full_page=full)
    docs_dir = os.environ.get("HEROES_DOCS_IMG")
    if docs and docs_dir:
        Path(docs_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(docs_dir) / out.name)
    return out


def sign_in(pg: Any, site: Site, key: str | None = None) -> None:
    pg.goto(f"{site.base}/")
    pg.fill("#key", key or site.key)
    pg.press("#key", "Enter")


def open_queue(pg: Any, site: Site) -> None:
    sign_in(pg, site)
    pg.get_by_role("link", name=bench.CASE, exact=True).click()
    pg.wait_for_selector(".grid .tile")
    # the thumbnails arrive as blobs fetched with the key (waits use locators: the page's CSP
    # forbids the string evaluation that wait_for_function needs)
    pg.locator(".grid .tile img[src^='blob:']").nth(3).wait_for()


def audit_rows(site: Site, action_part: str) -> list[Any]:
    from heroes.serving.db import AuditRow, ServiceDB
    from heroes.serving.settings import ServeSettings

    db = ServiceDB(ServeSettings(root=site.root).service_db_url())
    try:
        with db.session() as s:
            return list(
                s.execute(select(AuditRow).where(AuditRow.action.contains(action_part))).scalars()
            )
    finally:
        db.close()


def test_a_refused_key_stays_on_the_sign_in_form(page: Any, site: Site) -> None:
    sign_in(page, site, key="hk_0000000000000000_not-a-key")
    page.wait_for_selector(".status.error")
    assert "refused" in page.inner_text("#status")
    assert page.is_visible("#key")
    assert page.evaluate("sessionStorage.getItem('heroes.key')") is None


def test_the_key_lives_in_session_storage_only_and_sign_out_forgets_it(
    page: Any, site: Site
) -> None:
    sign_in(page, site)
    page.locator("h1", has_text="Cases").wait_for()
    assert page.evaluate("sessionStorage.getItem('heroes.key')") == site.key
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    page.click("#signout")
    page.locator("#key").wait_for()
    assert page.evaluate("sessionStorage.getItem('heroes.key')") is None


def test_queue_shows_blurred_thumbnails_priorities_and_reasons(page: Any, site: Site) -> None:
    open_queue(page, site)
    total = site.api(f"/api/v1/cases/{bench.CASE}/queue?limit=1")["total"]
    tiles = page.locator(".grid .tile")
    assert tiles.count() == min(total, 60)
    first = site.api(f"/api/v1/cases/{bench.CASE}/queue?limit=1")["items"][0]
    assert tiles.first.get_attribute("data-item") == str(first["item_id"])
    assert "priority" in tiles.first.inner_text()
    # nothing is shown clear until asked for
    assert page.locator(".thumb.revealed").count() == 0
    assert page.locator(".thumb.blurred img[src^='blob:']").count() >= 4
    shot(page, site, "queue")


def test_the_status_filter_shows_only_those_items(page: Any, site: Site) -> None:
    errors = site.api(f"/api/v1/cases/{bench.CASE}/queue?status=error&limit=500")["items"]
    assert errors, "the demo seizure has broken files"
    open_queue(page, site)
    page.select_option("select[name=status]", "error")
    page.click("form.filters button")
    # "of 3" must not be taken for the unfiltered "of 32"
    page.locator(".pager", has_text=re.compile(rf"of {len(errors)}\b")).wait_for()
    shown = page.locator(".grid .tile").evaluate_all("(ts) => ts.map((t) => t.dataset.item)")
    assert shown == [str(r["item_id"]) for r in errors]


def test_evidence_names_are_shown_as_text_never_as_html(page: Any, site: Site) -> None:
    open_queue(page, site)
    link = page.locator(".grid .path", has_text="onerror")
    assert link.count() == 1
    assert link.inner_text() == HOSTILE
    assert page.locator(".grid img[src='x']").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_reveal_is_audited_and_label_by_key_is_stored(page: Any, site: Site) -> None:
    before = site.api("/api/v1/me")["exposure"]["reveals_today"]
    open_queue(page, site)
    page.keyboard.press("j")  # the second item of the queue
    tile = page.locator(".grid .tile").nth(1)
    item_id = int(tile.get_attribute("data-item"))
    page.keyboard.press("r")
    page.wait_for_selector(".grid .tile >> nth=1 >> .thumb.revealed")
    shot(page, site, "revealed")
    assert site.api("/api/v1/me")["exposure"]["reveals_today"] == before + 1
    page.locator("#exposure", has_text=f"Today: {before + 1} reveals").wait_for()
    rows = [r for r in audit_rows(site, "reveal") if str(item_id) in (r.target or "")]
    assert rows, "the reveal left no audit row"
    page.keyboard.press("2")
    page.wait_for_selector(".grid .tile >> nth=1 >> .label.cat2")
    stored = site.api(f"/api/v1/cases/{bench.CASE}/items/{item_id}")["label"]
    assert stored["category"] == 2
    # moving on blurs the revealed thumbnail again
    page.keyboard.press("j")
    page.locator(".grid .tile").nth(1).locator(".thumb.blurred").wait_for()
    assert page.locator(".thumb.revealed").count() == 0
    shot(page, site, "labelled", docs=True)


def test_a_reveal_past_the_daily_cap_is_refused_and_said_so(page: Any, site: Site) -> None:
    key = bench.grant_key(site.root, site.secret, [bench.CASE], "capped", daily_reveal_cap=0)
    sign_in(page, site, key=key)
    page.get_by_role("link", name=bench.CASE, exact=True).click()
    page.locator(".grid .tile img[src^='blob:']").first.wait_for()
    page.keyboard.press("r")
    page.locator(".status.error", has_text="Daily reveal limit reached").wait_for()
    assert page.locator(".thumb.revealed").count() == 0
    assert page.locator(".thumb.blurred").count() >= 1


def test_search_by_upload_lists_the_astronaut_with_scores(page: Any, site: Site) -> None:
    open_queue(page, site)
    page.keyboard.press("/")
    page.wait_for_selector("#search-file")
    page.set_input_files("#search-file", str(site.query))
    page.wait_for_selector("#results-title")
    results = page.locator(".grid .tile")
    assert results.count() >= 1
    # the photo itself (or its copy under the hostile name) comes first
    top = results.first.locator(".path").inner_text()
    assert "astronaut" in top or top == HOSTILE
    assert "score" in results.first.inner_text()
    page.wait_for_selector(".preview .boxes rect")  # the query's face, boxed
    shot(page, site, "search", docs=True)
    results.first.locator("a.path").click()
    page.wait_for_selector("h1:has-text('Item')")


def test_dropping_an_image_searches_the_same_scene(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.locator("h1", has_text="Cases").wait_for()
    page.goto(f"{site.base}/#/case/{bench.CASE}/search")
    page.check("input[name=kind][value=scenes]")
    data = base64.b64encode(site.query.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """(b64) => {
            const bin = atob(b64);
            const bytes = new Uint8Array(bin.length);
            for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            return dt;
        }""",
        data,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.locator("#results-title").wait_for()
    results = page.locator(".grid .tile")
    assert results.count() >= 1
    top = results.first.locator(".path").inner_text()
    assert "astronaut" in top or top == HOSTILE
    assert audit_rows(site, "search.scenes"), "the scene search left no audit row"


def test_item_page_draws_face_boxes_hashes_and_exif(page: Any, site: Site) -> None:
    items = site.api(f"/api/v1/cases/{bench.CASE}/queue?limit=500")["items"]
    astro = next(r for r in items if r["path"].endswith("IMG_0000_astronaut.jpg"))
    sign_in(page, site)
    page.wait_for_selector("h1:has-text('Cases')")
    page.goto(f"{site.base}/#/case/{bench.CASE}/item/{astro['item_id']}")
    page.wait_for_selector(".thumb.big img[src^='blob:']")
    assert page.locator(".thumb.big .boxes .box.face").count() == len(
        [f for f in astro["faces"] if f.get("frame_time") is None]
    )
    assert astro["sha256"] in page.inner_text("main")
    page.keyboard.press("r")
    page.wait_for_selector(".thumb.big.revealed")
    shot(page, site, "item", docs=True, full=True)
    page.keyboard.press("u")
    page.wait_for_selector(".grid .tile")


def test_enter_opens_the_item_j_steps_to_the_next_and_u_goes_back(page: Any, site: Site) -> None:
    open_queue(page, site)
    ids = page.locator(".grid .tile").evaluate_all("(ts) => ts.map((t) => t.dataset.item)")
    page.keyboard.press("Enter")
    page.locator("h1", has_text=re.compile(f"^Item {ids[0]}$")).wait_for()
    page.keyboard.press("j")
    page.locator("h1", has_text=re.compile(f"^Item {ids[1]}$")).wait_for()
    page.keyboard.press("u")
    page.locator(".grid .tile").first.wait_for()
    assert page.evaluate("document.activeElement.dataset.item") == ids[1]


def test_keyboard_help_and_greyscale_toggle(page: Any, site: Site) -> None:
    open_queue(page, site)
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    page.check("#pref-grey")
    page.locator("body.greyscale").wait_for(state="attached")
    assert site.api("/api/v1/me")["prefs"]["greyscale"] is True
    page.uncheck("#pref-grey")
    page.locator("body.greyscale").wait_for(state="detached")


def test_persons_of_the_case_link_to_their_faces(page: Any, site: Site) -> None:
    persons = site.api(f"/api/v1/cases/{bench.CASE}/persons")
    sign_in(page, site)
    page.wait_for_selector("h1:has-text('Cases')")
    page.goto(f"{site.base}/#/case/{bench.CASE}/persons")
    page.wait_for_selector("h1:has-text('Persons')")
    assert page.locator("main tbody tr").count() == len(persons)
    if persons:
        page.locator("main tbody a").first.click()
        page.wait_for_selector(".grid .tile")


def test_five_clients_search_for_five_seconds_without_errors(site: Site) -> None:
    coro = bench.load(
        site.base, site.key, bench.CASE, site.query.read_bytes(), clients=5, duration=5.0
    )
    # on a thread of its own: the module's browser keeps Playwright's event loop on this one
    with ThreadPoolExecutor(1) as pool:
        res = pool.submit(asyncio.run, coro).result()
    assert res.requests >= 5
    assert res.errors == 0, res.error_samples
