"""Live progress of a headless notebook in the terminal.

Papermill shows one bar per cell, so a 14-minute codec training or a sweep sits on one cell with
no sign of life. Every trainer already appends its steps to its run's ``metrics.jsonl``; while a
notebook executes, `ProgressEcho` watches the runs that are written to and prints, at most every
`interval_s` per run, one line with the step, the loss, the progress towards the run's own target
(``max_steps``, or ``token_budget`` for the LM) and an ETA from the observed rate. The notebook's
output and the run files are untouched: this only reads them.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

LOSS_KEYS = ("loss", "train_loss", "valid_loss")


@dataclass
class _Seen:
    first_time: float
    first_done: float
    last_step: int = -1
    last_print: float = 0.0


def _last_record(path: Path) -> dict | None:
    """The newest complete line with a step (a torn last line is skipped)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 8192))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and any(k in record for k in LOSS_KEYS):
            return record
    return None


def _target(run_dir: Path) -> tuple[str, float] | None:
    """(metric, target) a run is heading for: steps, or tokens for a token-budget LM run."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if config.get("max_steps"):
        return "step", float(config["max_steps"])
    if config.get("token_budget"):
        return "tokens_seen", float(config["token_budget"])
    return None


def progress_line(run_dir: Path, record: dict, seen: _Seen, now: float) -> str:
    """One terminal line for `record` of the run in `run_dir`."""
    loss_key = next(k for k in LOSS_KEYS if k in record)
    text = f"{run_dir.parent.name}/{run_dir.name} step {record['step']} {loss_key} {record[loss_key]:.4g}"
    target = _target(run_dir)
    if target and target[0] in record:
        metric, total = target
        done = float(record[metric])
        text += f" ({done / total:.0%} of {total:,.0f} {'steps' if metric == 'step' else 'tokens'}"
        rate = (done - seen.first_done) / max(now - seen.first_time, 1e-9)
        if rate > 0 and done < total:
            text += f", ETA {(total - done) / rate / 60:.1f} min"
        text += ")"
    return text


class ProgressEcho:
    """A background thread printing the progress of runs under `runs_root` whose metrics change
    after `start()` (the runs a notebook's cells are training). Use as a context manager."""

    def __init__(self, label: str, runs_root: Path, *, interval_s: float = 30.0, poll_s: float = 5.0,
                 out: IO[str] | None = None) -> None:
        self.label = label
        self.runs_root = Path(runs_root)
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.out = out or sys.stderr
        self._seen: dict[Path, _Seen] = {}
        self._since = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self, now: float | None = None) -> list[str]:
        """Check every run once; print and return the lines due."""
        now = time.time() if now is None else now
        lines = []
        for path in self.runs_root.glob("*/*/metrics.jsonl"):
            try:
                if path.stat().st_mtime < self._since:
                    continue
            except OSError:
                continue
            record = _last_record(path)
            if record is None:
                continue
            run_dir = path.parent
            target = _target(run_dir)
            done = float(record.get(target[0], 0.0)) if target else 0.0
            seen = self._seen.setdefault(run_dir, _Seen(first_time=now, first_done=done))
            if record["step"] != seen.last_step and now - seen.last_print >= self.interval_s:
                line = f"[{self.label}] {progress_line(run_dir, record, seen, now)}"
                print(line, file=self.out, flush=True)
                lines.append(line)
                seen.last_step, seen.last_print = record["step"], now
        return lines

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a progress line must never break the run it watches
                pass

    def start(self) -> "ProgressEcho":
        self._since = time.time()
        self._thread = threading.Thread(target=self._loop, name=f"progress-{self.label}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 1)

    def __enter__(self) -> "ProgressEcho":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
