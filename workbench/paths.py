"""Where the workbench keeps its folders when no setting says otherwise: the project root.

A notebook opened in JupyterLab runs its kernel in `notebooks/`, while Papermill, the command line
and `make` run from the repository root; resolving `data/` and `runs/` against the working
directory made the two disagree (a live `30_search` re-prepared every corpus into
`notebooks/data/`). So defaults resolve against one root: $WORKBENCH_ROOT when set, else the
checkout this package was loaded from (the folder holding its pyproject.toml), else the working
directory (an installed, non-editable package has no checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "WORKBENCH_ROOT"


def project_root() -> Path:
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir():
        return checkout
    return Path.cwd().resolve()


def default_dir(name: str) -> Path:
    """`name` under the project root (data, runs, reports)."""
    return project_root() / name
