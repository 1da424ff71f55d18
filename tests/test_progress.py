"""Live progress in the terminal: a run's newest logged step, its loss, its share of the run's own
target and an ETA from the observed rate, printed at most once per interval per run."""

from __future__ import annotations

import io
import json

import yaml

from workbench.report.progress import ProgressEcho


def _log(run_dir, **record):
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def test_progress_lines_show_step_loss_share_and_eta_and_respect_the_interval(tmp_path):
    codec = tmp_path / "codec" / "cpu-kathleen-1"
    lm = tmp_path / "lm" / "cpu-1m-2"
    for run_dir, config in ((codec, {"max_steps": 1000}), (lm, {"token_budget": 400_000, "max_steps": 0})):
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    out = io.StringIO()
    echo = ProgressEcho("10_codec", tmp_path, interval_s=30, out=out)
    _log(codec, step=100, loss=5.0)
    _log(lm, step=10, train_loss=6.5, tokens_seen=40_000)
    first = echo.poll(now=1000.0)
    assert sorted(first) == ["[10_codec] codec/cpu-kathleen-1 step 100 loss 5 (10% of 1,000 steps)",
                             "[10_codec] lm/cpu-1m-2 step 10 train_loss 6.5 (10% of 400,000 tokens)"]
    _log(codec, step=200, loss=4.0)
    assert echo.poll(now=1010.0) == []  # within the interval: quiet
    _log(codec, step=300, loss=3.5)
    with open(codec / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 310, "lo')  # a torn line mid-write is skipped
    [line] = echo.poll(now=1100.0)
    # 200 steps in 100 s -> 700 steps left take 350 s.
    assert line == "[10_codec] codec/cpu-kathleen-1 step 300 loss 3.5 (30% of 1,000 steps, ETA 5.8 min)"
    assert out.getvalue().count("\n") == 3


def test_runs_finished_before_the_notebook_started_are_not_echoed(tmp_path):
    old = tmp_path / "codec" / "old"
    old.mkdir(parents=True)
    _log(old, step=5, loss=1.0)
    echo = ProgressEcho("10_codec", tmp_path, out=io.StringIO())
    echo._since = (old / "metrics.jsonl").stat().st_mtime + 10
    assert echo.poll() == []
