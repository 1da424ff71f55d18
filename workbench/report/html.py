"""Self-contained HTML reports: nbconvert's lab template, images embedded, nothing fetched.

nbconvert's templates link require.js, MathJax and the widget renderer from CDNs. Reports must
work with no network at all, so every `<script src="http...">` and `<link href="http...">` is
dropped, as is every inline script that loads from a URL (the notebooks use neither LaTeX nor live widgets in their exported form: audio is plain
`<audio>` elements and plots are embedded PNGs). A provenance banner (notebook, profile, commit,
date, config) opens each report, and a size budget keeps reports shareable.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from workbench.atomic import atomic_write_text

DEFAULT_BUDGET_MB = 25.0
# Any script that names a remote URL, inline or by src: nbconvert's inline loaders fetch the widget
# renderer and mermaid from CDNs at page load.
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://(?:(?!</script>).)*?</script>",
                            re.IGNORECASE | re.DOTALL)
_REMOTE_SRC = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", re.IGNORECASE)
_REMOTE_LINK = re.compile(r"<link[^>]*\bhref=[\"']https?://[^>]*>", re.IGNORECASE)
# Widget views have no renderer offline; their saved state would only print an error.
_WIDGET_STATE = re.compile(r"<script type=\"application/vnd\.jupyter\.widget-(?:state|view)\+json\">.*?</script>",
                           re.IGNORECASE | re.DOTALL)


class ReportTooLarge(ValueError):
    pass


def strip_remote_resources(page: str) -> str:
    page = _REMOTE_SRC.sub("", page)
    page = _REMOTE_SCRIPT.sub("", page)
    page = _REMOTE_LINK.sub("", page)
    return _WIDGET_STATE.sub("", page)


def provenance_banner(run_dir: Path) -> str:
    meta_path, config_path = run_dir / "meta.json", run_dir / "config.yaml"
    if not meta_path.exists():
        return ""
    meta = json.loads(meta_path.read_text())
    commit = (meta.get("commit") or "unknown")[:10] + (" (dirty)" if meta.get("dirty") else "")
    config = html.escape(config_path.read_text()) if config_path.exists() else ""
    return (
        "<div style='font-family:sans-serif;font-size:0.85em;background:#f4f4f4;padding:8px;border-bottom:1px solid #ccc'>"
        f"<b>{html.escape(str(meta.get('title') or meta.get('notebook') or meta.get('kind')))}</b> · "
        f"profile <code>{html.escape(str(meta.get('profile')))}</code> · run <code>{html.escape(str(meta.get('run_id')))}</code> · "
        f"commit <code>{html.escape(commit)}</code> · started {html.escape(str(meta.get('start_time')))} · "
        f"status <b>{html.escape(str(meta.get('status')))}</b>"
        f"<details><summary>config</summary><pre>{config}</pre></details></div>"
    )


# Wide outputs (a players table with one column per model size, a long config) scroll inside
# their own box instead of pushing the page past a laptop's width; figures shrink to fit.
LAYOUT_CSS = (
    "<style>.jp-OutputArea-output, .jp-RenderedHTMLCommon {overflow-x:auto; max-width:100%}"
    " .jp-RenderedImage img, .jp-OutputArea-output img {max-width:100%; height:auto}"
    " .jp-OutputArea-output pre {white-space:pre-wrap; word-break:break-word}"
    " audio {max-width:260px}</style>"
)


def export_html(notebook_path: str | Path, out_path: str | Path, budget_mb: float = DEFAULT_BUDGET_MB) -> Path:
    """Render an executed notebook to one offline HTML file; raise ReportTooLarge over budget."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook_path, out_path = Path(notebook_path), Path(out_path)
    notebook = nbformat.read(notebook_path, as_version=4)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(notebook)
    body = strip_remote_resources(body)
    banner = provenance_banner(notebook_path.parent)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + banner, body, count=1)
    body = body.replace("</head>", LAYOUT_CSS + "</head>", 1)
    size_mb = len(body.encode()) / 2**20
    if size_mb > budget_mb:
        raise ReportTooLarge(
            f"{out_path}: report is {size_mb:.1f} MB, over the {budget_mb:.0f} MB budget; "
            "show fewer clips or plots, or raise the budget")
    return atomic_write_text(out_path, body)
