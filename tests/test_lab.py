"""Interactive use as a researcher meets it: JupyterLab started the way `make lab` starts it, in
headless Chromium, after a smoke pipeline. 20_lm_scaling and 30_search run on their defaults (only
the profile set to smoke, in an unsaved cell) on the project's kernel, take their upstream inputs
from the pipeline's runs and say so, their widgets answer in the browser, the console stays clean,
and nothing is written under notebooks/."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Checked here, before any fixture: without a browser the smoke pipeline would run for nothing.
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: run `make setup`")
if not CHROMIUM.exists():
    pytest.skip(f"Chromium not found at {CHROMIUM}: run `make setup` (apt package chromium)", allow_module_level=True)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KERNEL = "workbench"
RUN_TIMEOUT_MS = 600_000  # a notebook's Run All on the smoke profile takes about a minute on 2 cores

# JupyterLab settings for the test's server (its own settings folder, nothing of the user's):
LAB_SETTINGS = {
    # The tracked notebooks are opened in place, so no save may happen behind the test's back.
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # Every cell stays in the page, so that outputs below the fold can be read.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # No news or update checks: the machine may be offline and the test must not depend on it.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}

# A healthy planted sweep (test_scaling_study's) whose allocation the fit identifies: on the smoke
# sweep the slider is rightly disabled, so this cell is what shows a live slider answering.
PLANTED_ALLOCATION_CELL = """import numpy as np
import pandas as pd
n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e5, 1e9, 6), np.geomspace(1e6, 1e10, 5)))
planted = pd.DataFrame({"n_params": n, "tokens_seen": d, "flops": 6 * n * d, "token_budget": d, "final_valid_loss": 1.7 + 400.0 * n ** -0.34 + 410.0 * d ** -0.28, "preset": [f"size-{int(x)}" for x in n]})
display(study.allocation_widget(study.fit_sweep(planted, n_bootstrap=20, seed=0), 1e15, 1e21))"""

# The notebook's kernel has started (the toolbar names it) and is idle.
KERNEL_READY_JS = """() => {
    const name = document.querySelector('.jp-NotebookPanel-toolbar .jp-Toolbar-kernelName');
    const state = document.querySelector('.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator');
    return name && !/^(No Kernel|Kernel)?$/.test(name.textContent.trim()) && state && state.dataset.status === 'idle';
}"""

DONE_JS = """() => {
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
    if (prompts.some(p => p.includes('*'))) return false;
    const failed = [...document.querySelectorAll('.jp-OutputArea-output')].some(o => o.textContent.includes('Traceback (most recent call last)'));
    return failed || prompts.every(p => /^\\[\\d+\\]:$/.test(p));
}"""

CELLS_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')].map(c => ({
    source: [...c.querySelectorAll('.jp-InputArea .cm-line')].map(l => l.textContent).join('\\n'),
    prompt: c.querySelector('.jp-InputPrompt').textContent.trim(),
    outputs: [...c.querySelectorAll('.jp-OutputArea-output')].map(o => ({mime: o.getAttribute('data-mime-type'), text: o.textContent})),
}))"""

# What a player table shows: its text and the length of each clip it plays. The clips' bytes differ
# from one encoding to the next (an Ogg stream carries a random serial number), their lengths do not.
PLAYERS_JS = """el => ({text: el.textContent.replace(/\\s+/g, ' ').trim(),
                        clips: [...el.querySelectorAll('audio')].map(a => (a.src || (a.querySelector('source') || {}).src || '').length)})"""


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebooks_state() -> dict[str, tuple[str, int]]:
    """Every file and folder under notebooks/, ignored ones included, with content hash and mtime:
    a save that rewrote identical bytes still counts as a write."""
    folder = REPO / "notebooks"
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


def _api(base: str, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def make_lab_command() -> tuple[dict[str, str], list[str]]:
    """`make lab`'s own command line, read from a dry run: the settings it puts in the environment
    and the options it gives `jupyter lab`, so that the test starts JupyterLab as a user does."""
    dry_run = subprocess.run(["make", "--dry-run", "--no-print-directory", "lab", "LAB_ARGS="], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    line = next(line for line in dry_run.replace("\\\n", " ").splitlines() if re.search(r"/jupyter lab\b", line))
    words = shlex.split(line)
    program = next(i for i, word in enumerate(words) if word.endswith("/jupyter"))
    assert words[program + 1] == "lab" and all("=" in word for word in words[:program]), line
    return dict(word.split("=", 1) for word in words[:program]), words[program + 2:]


def test_make_lab_serves_the_repository_root_with_the_project_root_set():
    env, options = make_lab_command()
    assert env["WORKBENCH_ROOT"] == str(REPO)
    assert f"--ServerApp.root_dir={REPO}" in options and "--FileContentsManager.preferred_dir=notebooks" in options
    # a folder argument would replace the root (jupyter_server turns it into root_dir)
    assert all(option.startswith("--") for option in options), options
    assert ("--allow-root" in options) == (os.geteuid() == 0)


@contextmanager
def jupyterlab(folder: Path, env: dict[str, str]):
    """JupyterLab started with `make lab`'s command line, headless on a free port with a token,
    its checkpoints, settings and workspaces in `folder`. Yields (base url, token)."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = folder / "settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    make_env, make_options = make_lab_command()
    command = [sys.executable, "-m", "jupyterlab", *make_options,  # this venv's jupyter, whatever its folder
               "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--LabApp.user_settings_dir={settings}",
               f"--LabApp.workspaces_dir={folder / 'workspaces'}",
               f"--FileCheckpoints.checkpoint_dir={folder / 'checkpoints'}"]
    env = {**os.environ, **env, **make_env,
           "JUPYTER_CONFIG_DIR": str(folder / "config"), "JUPYTER_RUNTIME_DIR": str(folder / "runtime")}
    log_path = folder / "lab.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    _api(base, token, "/api/status")
                    break
                except (urllib.error.URLError, ConnectionError):
                    if time.monotonic() > deadline:
                        pytest.fail(f"JupyterLab did not answer on {base} within 120 s:\n{log_path.read_text()[-3000:]}")
                    time.sleep(0.5)
            yield base, token
        finally:
            for kernel in (_api(base, token, "/api/kernels") if server.poll() is None else []):
                _api(base, token, f"/api/kernels/{kernel['id']}", method="DELETE")
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


class LiveNotebook:
    """One notebook open in JupyterLab in its own browser page, with the page's console errors and
    any request that tried to leave the server."""

    def __init__(self, browser, base: str, token: str, name: str):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.remote: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def guard(route):
            if route.request.url.startswith((base, "data:", "blob:")):
                return route.continue_()
            self.remote.append(route.request.url)
            return route.abort()

        self.page.route("**/*", guard)
        # ?reset: a fresh workspace, so that only this notebook is open
        self.page.goto(f"{base}/lab/tree/notebooks/{name}?reset&token={token}")
        self.page.wait_for_function(KERNEL_READY_JS, timeout=120_000, polling=500)

    def kernel_name(self) -> str:
        return self.page.locator(".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName").inner_text().strip()

    def add_cell(self, code: str, *, after: str) -> None:
        """Type `code` into a new cell below the first (`after="first"`) or last code cell: the
        notebook changes only in the browser (autosave is off and nothing saves it)."""
        cells = self.page.locator(".jp-Notebook .jp-CodeCell")
        (cells.first if after == "first" else cells.last).locator(".jp-InputPrompt").click()
        for key in ("Escape", "b", "Enter"):
            self.page.keyboard.press(key)
        self.page.keyboard.insert_text(code)  # no key events: no auto-indent or bracket closing
        self.page.keyboard.press("Escape")

    def run_all(self) -> list[dict]:
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            self.page.wait_for_function(DONE_JS, timeout=RUN_TIMEOUT_MS, polling=1000)
        except playwright.TimeoutError:
            state = [(c["prompt"], c["source"].splitlines()[:1], [o["text"][-300:] for o in c["outputs"]][-1:])
                     for c in self.cells()]
            pytest.fail(f"Run All did not finish within {RUN_TIMEOUT_MS / 1000:.0f} s: {state}")
        return self.cells()

    def cells(self) -> list[dict]:
        return self.page.evaluate(CELLS_JS)

    def cell(self, source_part: str):
        """The code cell whose source contains `source_part` (exactly one)."""
        matches = [i for i, c in enumerate(self.cells()) if source_part in c["source"]]
        assert len(matches) == 1, f"{len(matches)} cells contain {source_part!r}"
        return self.page.locator(".jp-Notebook .jp-CodeCell").nth(matches[0])


def _all_cells_ran_cleanly(cells: list[dict]) -> str:
    """The notebook's whole output text, after checking that every code cell ran and that stderr
    holds only the workbench's own tagged notices ("[search ablate] ..."): no traceback, library
    warning or stray progress bar."""
    not_run = [c["source"].splitlines()[0] for c in cells if not re.fullmatch(r"\[\d+\]:", c["prompt"])]
    stderr = [line for c in cells for o in c["outputs"] if o["mime"] == "application/vnd.jupyter.stderr"
              for line in o["text"].splitlines() if line.strip() and not re.match(r"\[[\w .-]+\] ", line)]
    assert not not_run and not stderr, f"cells not run: {not_run}; stderr: {stderr[:20]}"
    text = "\n".join(o["text"] for c in cells for o in c["outputs"])
    assert "Traceback" not in text
    # transformers' per-checkpoint bar (a widget in a live kernel) says nothing a reader needs
    assert not re.search(r"Loading[\s\u2007]+weights", text), "a stray 'Loading weights' progress bar"
    return text


def _check_allocation_sliders(notebook: LiveNotebook) -> None:
    # The smoke sweep's own slider: this sweep does not identify the allocation, so the slider is
    # disabled and the reason is shown in words instead of numbers.
    smoke = notebook.cell("allocation_widget(fits")
    reason = smoke.locator(".widget-html-content").inner_text()
    if smoke.locator(".widget-slider .noUi-target[disabled]").count():
        assert reason.startswith("compute-optimal allocation withheld:") and "not identified" in reason, reason
        value = smoke.locator(".widget-readout").inner_text()
        smoke.locator(".noUi-handle").focus()
        notebook.page.keyboard.press("ArrowRight")
        notebook.page.wait_for_timeout(1000)
        assert smoke.locator(".widget-readout").inner_text() == value, "a disabled slider moved"
    else:
        assert reason.startswith("C = "), reason
    # The planted healthy sweep: the slider moves in 0.1-decade steps from 1e18 and reaches 1e19
    # exactly; the kernel answers each move with that budget's allocation. One key at a time: the
    # kernel's echo of a move re-renders the slider, which may drop a key pressed meanwhile.
    planted = notebook.cell("study.fit_sweep(planted")
    handle, readout = planted.locator(".noUi-handle"), planted.locator(".widget-readout")
    shown = planted.locator(".widget-html-content")
    assert readout.inner_text() == "1.0e+18" and shown.inner_text().startswith("C = 1e+18 FLOPs"), shown.inner_text()
    allocations = [shown.inner_text()]
    for step in range(1, 11):
        handle.focus()
        notebook.page.keyboard.press("ArrowRight")
        expected = f"C = {10 ** (18 + step / 10):.3g} FLOPs"
        notebook.page.wait_for_function("([el, text]) => el.textContent.startsWith(text)",
                                        arg=[shown.element_handle(), expected], timeout=30_000)
        allocations.append(shown.inner_text())
    assert readout.inner_text() == "1.0e+19" and float(handle.get_attribute("aria-valuenow")) == 19
    sizes = [float(re.search(r"optimal N ≈ ([\d,]+)", a).group(1).replace(",", "")) for a in allocations]
    assert all(b > a for a, b in zip(sizes, sizes[1:])), sizes  # more compute, a larger optimal model


def _check_arm_picker(notebook: LiveNotebook) -> None:
    """Picking each strategy in the dropdown shows that arm's clips: the same sentences, scores and
    clips as the static table the notebook printed for that strategy above the picker."""
    picker = notebook.cell("arm_picker(")
    static, title = {}, None
    for output in picker.locator(".jp-OutputArea-output").all():
        heading = re.fullmatch(r"\s*(\w+), budget \d+\s*", output.inner_text())
        if heading:
            title = heading.group(1)
        elif title and output.locator("table").count() and not output.locator(".widget-dropdown").count():
            static[title] = output.evaluate(PLAYERS_JS)
    strategy = picker.locator(".widget-dropdown select").first
    shown = picker.locator(".widget-html-content")
    options = strategy.locator("option").all_inner_texts()
    assert len(options) >= 2 and set(options) <= set(static), (options, sorted(static))
    assert len({json.dumps(static[o]) for o in options}) > 1, "the arms' tables are alike: the check would prove nothing"
    assert strategy.input_value() == options[0] and shown.evaluate(PLAYERS_JS) == static[options[0]]
    for option in [*options[1:], options[0]]:
        before = shown.inner_html()
        strategy.select_option(option)
        notebook.page.wait_for_function("([el, old]) => el.innerHTML !== old", arg=[shown.element_handle(), before],
                                        timeout=30_000)
        assert shown.evaluate(PLAYERS_JS) == static[option], option


def test_jupyterlab_runs_20_and_30_live_on_the_workbench_kernel_with_answering_widgets_and_writes_nothing_under_notebooks(
        browser, smoke_pipeline_env, tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        kernel_title = KernelSpecManager().get_kernel_spec(KERNEL).display_name
    except NoSuchKernel:
        pytest.fail(f"no Jupyter kernel named {KERNEL!r}: run `make setup` (scripts/bootstrap.sh installs it)")
    before, status_before = _notebooks_state(), _git_status()
    with jupyterlab(tmp_path, smoke_pipeline_env) as (base, token):
        notebook = LiveNotebook(browser, base, token, "20_lm_scaling.ipynb")
        assert notebook.kernel_name() == kernel_title  # the notebook's own kernelspec, no dialog
        notebook.add_cell('profile = "smoke"', after="first")
        notebook.add_cell(PLANTED_ALLOCATION_CELL, after="last")
        sources = [c["source"] for c in notebook.cells()]
        assert sources[1] == 'profile = "smoke"' and sources[-1] == PLANTED_ALLOCATION_CELL
        text = _all_cells_ran_cleanly(notebook.run_all())
        assert "tokens_dir = " in text and "(not set: taken from 10_codec run" in text
        assert "codec = " in text and "the newest finished on profile 'smoke'" in text
        _check_allocation_sliders(notebook)
        assert not notebook.errors and not notebook.remote, (notebook.errors, notebook.remote)
        notebook.page.close()

        notebook = LiveNotebook(browser, base, token, "30_search.ipynb")
        assert notebook.kernel_name() == kernel_title
        notebook.add_cell('profile = "smoke"', after="first")
        assert notebook.cells()[1]["source"] == 'profile = "smoke"'
        text = _all_cells_ran_cleanly(notebook.run_all())
        for param, stage in (("lm_path", "20_lm_scaling"), ("codec_path", "10_codec"), ("corpus", "00_data")):
            assert f"{param} = " in text and f"(not set: taken from {stage} run" in text, param
        _check_arm_picker(notebook)
        assert not notebook.errors and not notebook.remote, (notebook.errors, notebook.remote)
        notebook.page.close()

    assert not (REPO / "notebooks" / "data").exists() and not (REPO / "notebooks" / "runs").exists()
    assert _notebooks_state() == before, "JupyterLab or a kernel wrote under notebooks/"
    assert _git_status() == status_before
