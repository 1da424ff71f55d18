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
