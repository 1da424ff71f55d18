"""Run directories: one self-describing folder per run, and one table over all of them.

Layout: ``runs/<kind>/<run_id>/`` with ``config.yaml``, ``meta.json`` (provenance and status),
``metrics.jsonl`` (one JSON object per logged step, appended while running), ``summary.json``
(final metrics) and the run's artifacts. Status moves running -> finished | failed | interrupted;
a run that dies without reaching the `with` block's end is never left looking successful.

A run id stands for one config: reopening a run with a config that differs (beyond
`RESUME_FREE_FIELDS`) raises `RunConfigMismatch` listing the differences, before anything in
the run is touched. One process writes a run at a time (`workbench.run_lock`); a run whose
process died without a word (SIGKILL, power loss) shows as "stale" in `results()`. A failed run
keeps its traceback in ``error.log``. Readers of metrics.jsonl drop the records of steps that a
resume went back over (the trainer logs ``event: resumed`` at the step it resumed from).
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
from workbench.run_lock import RunLock, process_alive

RUNS_ROOT_ENV = "WORKBENCH_RUNS"
TRACKED_PACKAGES = (
    "torch", "torchaudio", "transformers", "tokenizers", "numpy", "scipy", "pandas",
    "speechbrain", "papermill", "vector-quantize-pytorch",
)
STATUSES = ("running", "finished", "failed", "interrupted")
STALE = "stale"  # shown by `results()` for a "running" run whose process is gone; never written
RESUME_FREE_FIELDS = frozenset({"progress", "num_threads"})  # may change on resume: no effect on results
ERROR_LOG = "error.log"


class RunConfigMismatch(ValueError):
    """A run id reopened with a different config."""


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
    stop_reason: str | None = None  # set by `stop_early`

    def stop_early(self, reason: str) -> None:
        """End this run ``interrupted`` (resumable, as a preemption leaves it) rather than
        ``finished`` when its block exits normally: a trainer that stopped before its end on
        purpose (`workbench.training.StopAfter`) returns its result without raising."""
        self.stop_reason = reason

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Append one line to metrics.jsonl (flushed and fsynced: survives a crash)."""
        record = {"step": step, "time": _now(), **metrics}
        line = json.dumps(record, default=float) + "\n"
        with open(self.dir / "metrics.jsonl", "a+b") as handle:
            if handle.tell() > 0:  # a line torn by a crash must not swallow this record
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode())
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
    """All complete lines of metrics.jsonl; a torn line (crash mid-write) is ignored. Records of
    steps after a checkpoint that a resume went back to (``event: resumed`` at step S drops the
    earlier records of steps > S) are dropped, so every step appears once, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if not isinstance(record, dict):
                continue
            step = record.get("step")
            if record.get("event") == "resumed" and isinstance(step, (int, float)):
                records = [r for r in records if not isinstance(r.get("step"), (int, float)) or r["step"] <= step]
            records.append(record)
    return records


def config_differences(old: dict[str, Any], new: dict[str, Any],
                       ignore: frozenset[str] = RESUME_FREE_FIELDS,
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """``key: old -> new`` for every top-level key whose value differs (YAML-plain dicts). A key
    the old config lacks is no difference while the new value is its default (`defaults`): a
    field added to the code since the run started, at the value that keeps the old behaviour."""
    missing = object()
    defaults = defaults or {}
    out = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        a, b = old.get(key, missing), new.get(key, missing)
        if a is missing and key in defaults and b == defaults[key]:
            continue
        if a != b:
            out.append(f"{key}: {'(unset)' if a is missing else repr(a)} -> {'(unset)' if b is missing else repr(b)}")
    return out


def _check_same_config(run_dir: Path, kind: str, run_id: str, config: Any, meta: dict[str, Any]) -> None:
    import yaml

    new = yaml.safe_load(to_yaml(config)) or {}
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        old = yaml.safe_load(config_path.read_text()) or {}
        differences = (config_differences(old, new, defaults=_field_defaults(config)) if isinstance(old, dict)
                       else ["config.yaml unreadable"])
    else:
        same = meta.get("config_hash") in (None, config_hash(config))
        differences = [] if same else [f"config hash {meta.get('config_hash')} -> {config_hash(config)}"]
    if meta.get("config_class") not in (None, type(config).__name__):
        differences.insert(0, f"config class {meta.get('config_class')} -> {type(config).__name__}")
    if differences:
        raise RunConfigMismatch(
            f"run {kind}/{run_id} ({run_dir}) was made with another config: {'; '.join(differences)}. "
            "A run id stands for one config: resume it with the same settings, or give the new config "
            "another run id")


def _field_defaults(config: Any) -> dict[str, Any]:
    """YAML-plain default of each field of a dataclass config (fields without one left out)."""
    import dataclasses

    import yaml

    if not dataclasses.is_dataclass(config):
        return {}
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            continue
        out[f.name] = yaml.safe_load(yaml.safe_dump(to_dict({"v": value})))["v"]
    return out


def _write_traceback(run_dir: Path, error: BaseException) -> Path | None:
    """Keep the traceback of a failed run in its error.log (best effort: the disk may be full)."""
    import traceback

    path = run_dir / ERROR_LOG
    try:
        with open(path, "a") as handle:
            handle.write(f"--- {_now()}\n")
            handle.write("".join(traceback.format_exception(error)))
    except OSError:
        return None
    return path


class _Terminated(BaseException):
    """Raised from the SIGTERM handler so that a killed run is marked interrupted."""

    signal_number = signal.SIGTERM


@contextlib.contextmanager
def start_run(
    kind: str,
    config: Any,
    *,
    root: str | Path | None = None,
    run_id: str | None = None,
    seed: int | None = None,
    bind_config: bool = True,
) -> Iterator[Run]:
    """Create (or reopen, when `run_id` names an existing run) ``runs/<kind>/<run_id>/``.

    Inside the block the status is ``running``; leaving it normally marks ``finished``, an
    exception ``failed`` (with the error; the traceback goes to error.log), Ctrl-C, SIGTERM or
    `Run.stop_early` ``interrupted``. Reopening an existing run keeps its metrics and artifacts so that training can
    resume from checkpoints; its config must be the same (`RunConfigMismatch` otherwise), and only
    one process may hold it (`workbench.run_lock.RunLockedError` otherwise). Either error is raised
    before the run's files are touched. An exception leaving the block carries ``run_dir``.
    `bind_config=False` lets a run be reopened with another config (for runs that key their
    results by what they computed, like the search ablation's rows).
    """
    run_id = run_id or new_run_id(config)
    run_dir = runs_root(root) / kind / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    try:
        resumed = (run_dir / "meta.json").exists()
        meta = json.loads((run_dir / "meta.json").read_text()) if resumed else {}
        if resumed and bind_config:
            _check_same_config(run_dir, kind, run_id, config, meta)
        if lock.taken_over is not None:
            import sys

            print(f"[runs] {kind}/{run_id}: taking over the stale lock of {lock.taken_over}, which ended "
                  "without releasing it", file=sys.stderr, flush=True)
            meta["took_over_from"] = str(lock.taken_over)
        atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    except BaseException:
        lock.release()
        raise
    meta.update(
        kind=kind,
        run_id=run_id,
        config_class=type(config).__name__,
        config_hash=config_hash(config),
        seed=seed if seed is not None else getattr(config, "seed", None),
        host=socket.gethostname(),
        pid=os.getpid(),
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
    try:
        run.set_status("running")
    except BaseException:
        lock.release()
        raise

    previous = None
    with contextlib.suppress(ValueError):  # signal handlers only work in the main thread

        def on_term(signum, frame):  # noqa: ARG001
            raise _Terminated(f"signal {signum}")

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield run
    except (KeyboardInterrupt, _Terminated) as error:
        _mark(error, run_dir, None)
        run.set_status("interrupted", error=repr(error))
        raise
    except BaseException as error:
        _mark(error, run_dir, _write_traceback(run_dir, error))
        with contextlib.suppress(OSError):  # a full disk must not replace the error with another
            run.set_status("failed", error=f"{type(error).__name__}: {error}")
        raise
    else:
        if run.stop_reason is not None:
            run.set_status("interrupted", error=run.stop_reason)
        else:
            run.set_status("finished")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        lock.release()


def _mark(error: BaseException, run_dir: Path, log: Path | None) -> None:
    """Tell the command line which run an error left (and where its traceback is)."""
    with contextlib.suppress(AttributeError, TypeError):
        if getattr(error, "run_dir", None) is None:  # the innermost run is the one to name
            error.run_dir = run_dir  # type: ignore[attr-defined]
            error.run_log = log  # type: ignore[attr-defined]


def display_status(meta: dict[str, Any]) -> str | None:
    """The status to show: "stale" for a run marked running whose process (on this host) is gone."""
    status = meta.get("status")
    if status == "running" and meta.get("host") == socket.gethostname() and isinstance(meta.get("pid"), int):
        if not process_alive(meta["pid"]):
            return STALE
    return status


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
            "kind": meta.get("kind"), "run_id": meta.get("run_id"), "status": display_status(meta),
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
    "config_of", "to_dict", "RunConfigMismatch", "config_differences", "display_status",
]
