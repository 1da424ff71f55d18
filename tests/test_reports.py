"""The rendered reports as a reader sees them: headless Chromium, no network."""

import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

AUDIO_DURATIONS_JS = """async () => Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(done => {
    if (a.readyState >= 1) return done(a.duration);
    a.addEventListener('loadedmetadata', () => done(a.duration));
    a.addEventListener('error', () => done(-1));
    a.load();
})))"""


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed: run `make setup` (apt package chromium)")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _open(browser, path: Path):
    """Load `path`; return (page, console errors, requests that tried to leave file://)."""
    page = browser.new_page()
    errors, remote = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    def guard(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            return route.continue_()
        remote.append(url)
        return route.abort()

    page.route("**/*", guard)
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, remote


def test_index_and_every_report_load_offline_with_playable_audio(browser, smoke_pipeline):
    _, _, reports = smoke_pipeline
    index = reports / "index.html"
    page, errors, remote = _open(browser, index)
    links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    page.close()
    assert not errors and not remote
    assert links, "the index links no report"
    for link in links:
        target = (reports / link).resolve()
        assert target.exists(), f"index links {link}, which does not exist"
        page, errors, remote = _open(browser, target)
        durations = page.evaluate(AUDIO_DURATIONS_JS)
        internal = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
        page.close()
        assert not errors, f"{link}: console errors {errors}"
        assert not remote, f"{link}: requests left file:// {remote}"
        assert durations and all(d > 0 for d in durations), f"{link}: audio durations {durations}"
        for href in internal:  # links inside a report: anchors or files beside it, never the web
            assert href.startswith("#") or not re.match(r"^[a-z]+://", href) or href.startswith(("file:", "data:")), href


OVERFLOW_JS = """() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll('body *')].filter(e => {
        const r = e.getBoundingClientRect();
        if (r.width === 0 || r.right <= width + 1) return false;
        // inside a box that scrolls horizontally: the box, not the page, holds it
        for (let p = e.parentElement; p; p = p.parentElement) {
            const o = getComputedStyle(p).overflowX;
            if ((o === 'auto' || o === 'scroll') && p.getBoundingClientRect().right <= width + 1) return false;
        }
        return true;
    });
    return {scroll: document.documentElement.scrollWidth, width,
            wide: wide.slice(0, 5).map(e => e.tagName + '.' + e.className)};
}"""


def test_no_report_element_overflows_a_1280_pixel_page(browser, smoke_pipeline):
    _, _, reports = smoke_pipeline
    for report in sorted(reports.glob("*-smoke.html")):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(report.as_uri(), wait_until="load")
        layout = page.evaluate(OVERFLOW_JS)
        page.close()
        assert layout["scroll"] <= layout["width"] and not layout["wide"], f"{report.name}: {layout}"


def test_the_overflow_check_catches_a_wide_table_and_the_players_box_contains_it(browser, tmp_path):
    import numpy as np

    from workbench.report.audio import player_table

    clip = np.zeros(1600, dtype=np.float32)
    rows = [{"text": "a sentence", **{f"size-{i}": clip for i in range(12)}}]
    boxed = player_table(rows, [f"size-{i}" for i in range(12)], 16000, text_columns=["text"]).body
    bare = re.sub(r"^<div[^>]*>|</div>$", "", boxed)
    for html_text, overflows in ((bare, True), (boxed, False)):
        path = tmp_path / f"page-{overflows}.html"
        path.write_text(f"<html><head><style>audio{{width:260px}}</style></head><body>{html_text}</body></html>")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(path.as_uri(), wait_until="load")
        layout = page.evaluate(OVERFLOW_JS)
        page.close()
        assert bool(layout["wide"]) == overflows, layout
