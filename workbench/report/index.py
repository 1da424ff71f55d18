"""reports/: the latest report of each notebook and profile, and an index page linking them."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

from workbench.atomic import atomic_write_json, atomic_write_text
from workbench.runs import find_runs, runs_root

RUN_DIR_ENV = "WORKBENCH_RUN_DIR"


def record_summary(**metrics) -> None:
    """From inside a notebook run by the runner: merge key metrics into the run's summary.json,
    which the index page shows (and later pipeline stages read). Outside a runner (plain
    Jupyter) this does nothing. Returns None so that a notebook's last line prints nothing."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return
    path = Path(run_dir) / "summary.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(metrics)
    atomic_write_json(path, current)


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def build_reports(out_dir: str | Path = "reports", root: str | Path | None = None) -> Path:
    """Copy the latest report of each (notebook, profile) into `out_dir` and write index.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    latest: dict[tuple[str, str], Path] = {}
    for run_dir in find_runs("notebooks", root=root):  # oldest first: later runs overwrite
        meta = json.loads((run_dir / "meta.json").read_text())
        if (run_dir / "report.html").exists() and meta.get("status") in ("finished", "failed"):
            latest[(meta.get("notebook", "?"), meta.get("profile", "?"))] = run_dir
    rows = []
    for (name, profile), run_dir in sorted(latest.items()):
        meta = json.loads((run_dir / "meta.json").read_text())
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        target = f"{name}-{profile}.html"
        shutil.copyfile(run_dir / "report.html", out_dir / target)
        metrics = "<br>".join(f"{html.escape(k)} = {html.escape(_format(v))}" for k, v in summary.items())
        status = meta.get("status")
        rows.append(
            f"<tr><td><a href='{html.escape(target)}'>{html.escape(meta.get('title') or name)}</a></td>"
            f"<td>{html.escape(profile)}</td><td class='{status}'>{html.escape(str(status))}</td>"
            f"<td>{html.escape(str(meta.get('end_time') or meta.get('start_time')))}</td>"
            f"<td><code>{html.escape((meta.get('commit') or '')[:10])}</code></td><td>{metrics}</td></tr>")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>workbench reports</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:6px 10px;vertical-align:top}.failed{color:#b00}"
        ".finished{color:#070}</style></head><body><h1>workbench reports</h1>"
        f"<p>Runs under <code>{html.escape(str(runs_root(root)))}</code>. Each report is self-contained and plays its audio offline.</p>"
        "<table><thead><tr><th>report</th><th>profile</th><th>status</th><th>finished</th><th>commit</th>"
        f"<th>key metrics</th></tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>\n")
    return atomic_write_text(out_dir / "index.html", page)
