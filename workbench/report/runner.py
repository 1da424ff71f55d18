"""Execute a notebook headlessly with Papermill into a run directory, then render it to HTML.

Parameters are validated against the notebook's config class before a kernel starts (Papermill
itself only warns about unknown names). A failing cell leaves the executed notebook, with its
error, in the run directory, marks the run failed and raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import DEFAULT_PROFILE, config_hash, for_profile
from workbench.report.notebooks import get_notebook
from workbench.report.progress import ProgressEcho
from workbench.runs import find_runs, runs_root, start_run

RUN_KIND = "notebooks"


class NotebookFailed(RuntimeError):
    """A cell raised; the executed notebook with the traceback is at `notebook_path`."""

    def __init__(self, message: str, notebook_path: Path):
        super().__init__(message)
        self.notebook_path = notebook_path


@dataclass(frozen=True)
class NotebookRun:
    name: str
    run_dir: Path
    notebook_path: Path
    html_path: Path | None
    reused: bool = False
    reason: str = ""  # why it was reused or executed, for the pipeline's log


def library_sha() -> str:
    """Hash of the `workbench` package's code and settings (every .py and .yaml file, by path and
    content): part of the reuse key, so a library change reruns the stages instead of serving
    results the current code would not give."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


# The parts of a reuse key, in order, and how a changed part is said to the user.
_KEY_PARTS = ("notebook", "notebook code", "profile", "config and inputs", "workbench library code")


def reuse_key(name: str, profile: str, config: Any) -> str:
    """Same notebook code + profile + config + library code -> same key: the run can be reused."""
    return f"{name}:{get_notebook(name).sha()}:{profile}:{config_hash(config)}:{library_sha()}"


def _finished_runs(name: str, root: str | Path | None) -> list[tuple[Path, dict]]:
    out = []
    for run_dir in reversed(find_runs(RUN_KIND, root=root, status="finished")):  # newest first
        meta = json.loads((run_dir / "meta.json").read_text())
        if meta.get("notebook") == name and (run_dir / "notebook.ipynb").exists():
            out.append((run_dir, meta))
    return out


def find_finished(name: str, key: str, root: str | Path | None = None) -> Path | None:
    return next((run_dir for run_dir, meta in _finished_runs(name, root) if meta.get("reuse_key") == key), None)


def rerun_reason(name: str, key: str, root: str | Path | None = None) -> str:
    """Why no finished run of `name` matches `key`, in words: the parts of the key that differ
    from the newest finished run of the same notebook and profile."""
    parts = key.split(":")
    same_profile = [(d, m) for d, m in _finished_runs(name, root) if m.get("profile") == parts[2]]
    if not same_profile:
        return f"no finished run of {name} on profile {parts[2]!r} yet"
    run_dir, meta = same_profile[0]
    old = str(meta.get("reuse_key", "")).split(":")
    changed = [label for label, a, b in zip(_KEY_PARTS, old + [""] * len(parts), parts) if a != b]
    return f"{' and '.join(changed) or 'key'} changed since {run_dir.name}"


def run_notebook(name: str, params: dict[str, Any] | None = None, profile: str = DEFAULT_PROFILE,
                 *, root: str | Path | None = None, reuse: bool = False, export: bool = True,
                 progress: bool = True, timeout_s: int | None = None) -> NotebookRun:
    """Run notebook `name` with `params` (config field overrides) on `profile`.

    With `reuse`, a finished run with the same notebook code, profile and config is returned
    instead of executing again.
    """
    import papermill

    spec = get_notebook(name)
    params = dict(params or {})
    config = for_profile(spec.config_class(), profile, **params)  # raises ConfigError on bad params
    key = reuse_key(spec.name, profile, config)
    if reuse and (previous := find_finished(spec.name, key, root)) is not None:
        html = previous / "report.html"
        return NotebookRun(spec.name, previous, previous / "notebook.ipynb", html if html.exists() else None, True,
                           reason="notebook code, profile, config, inputs and workbench code unchanged")
    reason = rerun_reason(spec.name, key, root) if reuse else "reuse turned off"

    with start_run(RUN_KIND, config, root=root) as run:
        run.meta.update(notebook=spec.name, title=spec.title, profile=profile, reuse_key=key, parameters=params)
        run.set_status("running")
        output = run.dir / "notebook.ipynb"
        env_before = os.environ.get("WORKBENCH_RUN_DIR")
        os.environ["WORKBENCH_RUN_DIR"] = str(run.dir)  # the kernel inherits it: artifacts land here
        # The cells' own training progress (steps, loss, ETA) in the terminal, beside Papermill's bar.
        echo = ProgressEcho(spec.name, runs_root(root)) if progress else contextlib.nullcontext()
        try:
            with echo:
                papermill.execute_notebook(
                    str(spec.path), str(output), parameters={"profile": profile, **params},
                    kernel_name="python3", progress_bar=progress, cwd=str(Path.cwd()),
                    execution_timeout=timeout_s,
                )
        except papermill.PapermillExecutionError as error:
            if export:
                _export_quietly(output, run.dir / "report.html")
            raise NotebookFailed(
                f"notebook {spec.name} failed in cell {error.exec_count}: {error.ename}: {error.evalue}\n"
                f"executed notebook with the traceback: {output}", output) from None
        finally:
            if env_before is None:
                os.environ.pop("WORKBENCH_RUN_DIR", None)
            else:
                os.environ["WORKBENCH_RUN_DIR"] = env_before
    # Rendered after the run is marked finished, so the report's banner shows its final status.
    html_path = None
    if export:
        from workbench.report.html import export_html

        html_path = export_html(output, run.dir / "report.html")
    return NotebookRun(spec.name, run.dir, output, html_path, reason=reason)


def _export_quietly(notebook: Path, html: Path) -> None:
    """Render a failed notebook too (its error is what the reader needs); never mask the error."""
    from workbench.report.html import export_html

    try:
        if notebook.exists():
            export_html(notebook, html)
    except Exception:  # noqa: BLE001 - the notebook's own error is the one to report
        pass


@dataclass(frozen=True)
class NotebookJob:
    """One notebook run of a batch (picklable: it crosses into a worker process or a Slurm task)."""

    name: str
    params: dict[str, Any]
    profile: str
    root: str | None = None
    reuse: bool = True


def _run_job(job: NotebookJob) -> str:
    # Papermill is not thread-safe: each job runs in its own process with its own kernel.
    return str(run_notebook(job.name, job.params, job.profile, root=job.root, reuse=job.reuse,
                            progress=False).run_dir)


def run_notebook_batch(name: str, grid: list[dict[str, Any]], profile: str = DEFAULT_PROFILE, *,
                       executor: str = "local", max_workers: int | None = None, root: str | Path | None = None,
                       reuse: bool = True) -> list[Any]:
    """Run notebook `name` once per parameter set in `grid` through `workbench.executors.run_jobs`
    (local process pool, Slurm through submitit, ...). Every parameter set is validated before
    anything starts, so a typo in the last one does not surface after hours of work."""
    from workbench.executors import run_jobs
    from workbench.runs import runs_root

    spec = get_notebook(name)
    for params in grid:
        for_profile(spec.config_class(), profile, **params)  # raises ConfigError naming the bad key
    base = runs_root(root)
    jobs = [NotebookJob(spec.name, dict(params), profile, str(base), reuse) for params in grid]
    return run_jobs(_run_job, jobs, executor=executor, max_workers=max_workers,
                    folder=str(base / "batches" / spec.name / "submitit"))
