"""Shared fixtures: real speech from the read-only mirror, and isolated runs/data folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("WORKBENCH_DATA_MIRROR") or REPO.parent / "shared" / "data")
os.environ.setdefault("WORKBENCH_DATA_MIRROR", str(MIRROR))
# Two cores: one intra-op thread per test process keeps timings predictable.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "kathleen" / "transcripts.tsv").exists():
        pytest.fail(f"speech mirror not found at {MIRROR}: set WORKBENCH_DATA_MIRROR")
    return MIRROR


@pytest.fixture
def workdirs(tmp_path, monkeypatch) -> Path:
    """Runs and prepared data go to a temporary folder, never into the repository."""
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    return tmp_path
