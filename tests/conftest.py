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
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve the other core


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


def _pipeline_env(root: Path) -> dict[str, str]:
    return {"WORKBENCH_RUNS": str(root / "runs"), "WORKBENCH_DATA_DIR": str(root / "data")}


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory, mirror):
    """The whole `make demo` pipeline on the smoke profile, run twice (the second must reuse every
    stage), in a temporary folder; shared by the notebook and report tests."""
    from workbench.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("pipeline")
    saved = {k: os.environ.get(k) for k in ("WORKBENCH_RUNS", "WORKBENCH_DATA_DIR")}
    os.environ.update(_pipeline_env(root))
    try:
        first = run_pipeline("smoke", reports_dir=root / "reports")
        second = run_pipeline("smoke", reports_dir=root / "reports")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return first, second, root / "reports"


@pytest.fixture(scope="session")
def smoke_pipeline_env(smoke_pipeline) -> dict[str, str]:
    """The folder settings the smoke pipeline ran under (set only while it ran), for a process that
    must find its runs, such as a live JupyterLab."""
    _, _, reports = smoke_pipeline
    return _pipeline_env(reports.parent)


def _with_one_torch_thread():
    """One torch thread while the fixture is live, then the previous count again: tiny models on a
    shared 2-core box run faster with one thread (OpenMP threads spin against other processes)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test (a module opts in with `pytest.mark.usefixtures`)."""
    yield from _with_one_torch_thread()


@pytest.fixture(scope="module")
def one_torch_thread_per_module():
    """One torch thread for a whole module, its module-scoped fixtures included."""
    yield from _with_one_torch_thread()


@pytest.fixture
def smoke_codec_model():
    """An untrained smoke-profile workbench codec model, built after `torch.manual_seed(0)`."""
    import torch

    from workbench.codec.config import CodecConfig
    from workbench.codec.model import build_model
    from workbench.config import for_profile

    torch.manual_seed(0)
    return build_model(for_profile(CodecConfig, "smoke"))
