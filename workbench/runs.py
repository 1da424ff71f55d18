"""Run directories: one self-describing folder per run, and one table over all of them.

Layout: ``runs/<kind>/<run_id>/`` with ``config.yaml``, ``meta.json`` (provenance and status),
``metrics.jsonl`` (one JSON object per logged step, appended while running), ``summary.json``
(final metrics) and the run's artifacts. Status moves running -> finished | failed | interrupted;
a run that dies without reaching the `with` block's end is never left looking successful.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from workbench.atomic import atomic_write_json, atomic_write_text
from workbench.config import config_hash, to_dict, to_yaml
from workbench.paths import default_dir

RUNS_ROOT_ENV = "WORKBENCH_RUNS"
TRACKED_PACKAGES = (
    "torch", "torchaudio", "transformers", "tokenizers", "numpy", "scipy", "pandas",
    "speechbrain", "papermill", "vector-quantize-pytorch",
)
STATUSES = ("running", "finished", "failed", "interrupted")


def runs_root(root: str | Path | None = None) -> Path:
    """`root`, else $WORKBENCH_RUNS, else runs/ under the project root (`workbench.paths`)."""
    return Path(root or os.environ.get(RUNS_ROOT_ENV) or default_dir("runs")).resolve()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the repository holding `cwd` (or of this package)."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def _package_versions() -> dict[str, str | None]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["gpu"] = None
    try:  # torch is already imported by any run that could use a GPU; don't import it otherwise
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - provenance must never kill a run
        info["gpu"] = "unknown"
    return info


def new_run_id(config: Any) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{config_hash(config, 6)}-{os.getpid() % 10000:04d}"


@dataclass
class Run:
    """A live run. Use `start_run(...)` as a context manager rather than building one directly."""

    kind: str
    run_id: str
    dir: Path
    config: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Append one line to metrics.jsonl (flushed and fsynced: survives a crash)."""
        record = {"step": step, "time": _now(), **metrics}
        with open(self.dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def summary(self, **final_metrics: Any) -> None:
        """Merge final metrics into summary.json (what `results()` shows)."""
        current = self.read_summary()
        current.update(final_metrics)
        atomic_write_json(self.dir / "summary.json", current)

    def read_summary(self) -> dict[str, Any]:
        path = self.dir / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def artifact(self, name: str) -> Path:
        """Path for an artifact inside the run directory (parent folders created)."""
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def set_status(self, status: str, **extra: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        self.meta.update(status=status, **extra)
        if status != "running":
            self.meta["end_time"] = _now()
        atomic_write_json(self.dir / "meta.json", self.meta)

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete lines of metrics.jsonl; a torn last line (crash mid-write) is ignored."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


class _Terminated(BaseException):
    """Raised from the SIGTERM handler so that a killed run is marked interrupted."""


@contextlib.contextmanager
def start_run(
    kind: str,
    config: Any,
    *,
    root: str | Path | None = None,
    run_id: str | None = None,
    seed: int | None = None,
) -> Iterator[Run]:
    """Create (or reopen, when `run_id` names an existing run) ``runs/<kind>/<run_id>/``.

    Inside the block the status is ``running``; leaving it normally marks ``finished``, an
    exception ``failed`` (with the error), Ctrl-C or SIGTERM ``interrupted``. Reopening an
    existing run keeps its metrics and artifacts so that training can resume from checkpoints.
    """
    run_id = run_id or new_run_id(config)
    run_dir = runs_root(root) / kind / run_id
    resumed = (run_dir / "meta.json").exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    meta = json.loads((run_dir / "meta.json").read_text()) if resumed else {}
    meta.update(
        kind=kind,
        run_id=run_id,
        config_class=type(config).__name__,
        config_hash=config_hash(config),
        seed=seed if seed is not None else getattr(config, "seed", None),
        host=socket.gethostname(),
        hardware=_hardware(),
        packages=_package_versions(),
        python=platform.python_version(),
        start_time=_now() if not resumed else meta.get("start_time", _now()),
        end_time=None,
        **git_state(),
    )
    if resumed:
        meta["resumed_at"] = meta.get("resumed_at", []) + [_now()]
    run = Run(kind=kind, run_id=run_id, dir=run_dir, config=config, meta=meta)
    run.set_status("running")

    previous = None
    with contextlib.suppress(ValueError):  # signal handlers only work in the main thread

        def on_term(signum, frame):  # noqa: ARG001
            raise _Terminated(f"signal {signum}")

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield run
    except (KeyboardInterrupt, _Terminated) as error:
        run.set_status("interrupted", error=repr(error))
        raise
    except BaseException as error:
        run.set_status("failed", error=f"{type(error).__name__}: {error}")
        raise
    else:
        run.set_status("finished")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def find_runs(kind: str, *, root: str | Path | None = None, status: str | None = None,
              config_hash_value: str | None = None) -> list[Path]:
    """Run directories of `kind`, oldest first, optionally filtered by status and config hash."""
    base = runs_root(root) / kind
    found = []
    for meta_path in sorted(base.glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            continue
        if status and meta.get("status") != status:
            continue
        if config_hash_value and meta.get("config_hash") != config_hash_value:
            continue
        found.append(meta_path.parent)
    return found


def results(root: str | Path | None = None, kind: str | None = None):
    """One pandas DataFrame over all runs: identity, status, config fields and final metrics.

    Config fields are prefixed ``config.``; summary metrics keep their names.
    """
    import pandas as pd
    import yaml

    base = runs_root(root)
    pattern = f"{kind}/*/meta.json" if kind else "*/*/meta.json"
    rows = []
    for meta_path in sorted(base.glob(pattern)):
        run_dir = meta_path.parent
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            continue
        row: dict[str, Any] = {
            "kind": meta.get("kind"), "run_id": meta.get("run_id"), "status": meta.get("status"),
            "start_time": meta.get("start_time"), "end_time": meta.get("end_time"),
            "commit": meta.get("commit"), "dirty": meta.get("dirty"), "path": str(run_dir),
        }
        config_path = run_dir / "config.yaml"
        if config_path.exists():
            config = yaml.safe_load(config_path.read_text()) or {}
            for key, value in config.items():
                row[f"config.{key}"] = value if not isinstance(value, (list, dict)) else json.dumps(value)
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            with contextlib.suppress(json.JSONDecodeError):
                row.update(json.loads(summary_path.read_text()))
        rows.append(row)
    return pd.DataFrame(rows)


def config_of(run_dir: str | Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}


__all__ = [
    "Run", "start_run", "results", "find_runs", "read_metrics", "runs_root", "git_state",
    "config_of", "to_dict",
]
