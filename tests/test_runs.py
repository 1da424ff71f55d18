import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from workbench.atomic import atomic_write_text
from workbench.runs import read_metrics, results, start_run


@dataclass(frozen=True)
class ToyConfig:
    width: int = 4
    seed: int = 1


def _meta(run_dir):
    return json.loads((run_dir / "meta.json").read_text())


def test_finished_run_writes_record(workdirs):
    with start_run("toy", ToyConfig()) as run:
        run.log(step=0, loss=2.0)
        run.log(step=1, loss=1.5)
        run.summary(final_loss=1.5)
        run.artifact("sub/a.txt").write_text("x")
    meta = _meta(run.dir)
    assert meta["status"] == "finished" and meta["end_time"] and meta["seed"] == 1
    assert meta["packages"]["torch"] and "commit" in meta and "dirty" in meta and meta["host"]
    assert (run.dir / "config.yaml").read_text().startswith("width: 4")
    assert [m["loss"] for m in read_metrics(run.dir)] == [2.0, 1.5]
    assert run.dir.parent.name == "toy"


def test_exception_marks_failed_with_error(workdirs):
    with pytest.raises(RuntimeError):
        with start_run("toy", ToyConfig()) as run:
            raise RuntimeError("diverged")
    meta = _meta(run.dir)
    assert meta["status"] == "failed" and "diverged" in meta["error"]


def test_keyboard_interrupt_marks_interrupted(workdirs):
    with pytest.raises(KeyboardInterrupt):
        with start_run("toy", ToyConfig()) as run:
            raise KeyboardInterrupt
    assert _meta(run.dir)["status"] == "interrupted"


def test_sigterm_marks_interrupted(workdirs):
    code = (
        "import time\nfrom dataclasses import dataclass\nfrom workbench.runs import start_run\n"
        "@dataclass(frozen=True)\nclass C:\n    a: int = 1\n"
        "with start_run('toy', C(), run_id='killed') as run:\n    print('ready', flush=True)\n    time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    run_dir = workdirs / "runs" / "toy" / "killed"
    assert _meta(run_dir)["status"] == "interrupted"


def test_reopening_a_run_keeps_metrics(workdirs):
    with pytest.raises(KeyboardInterrupt):
        with start_run("toy", ToyConfig(), run_id="r1") as run:
            run.log(step=0, loss=1.0)
            raise KeyboardInterrupt
    with start_run("toy", ToyConfig(), run_id="r1") as run:
        run.log(step=1, loss=0.5)
    meta = _meta(run.dir)
    assert meta["status"] == "finished" and len(meta["resumed_at"]) == 1
    assert [m["step"] for m in read_metrics(run.dir)] == [0, 1]


def test_torn_metrics_line_is_ignored(workdirs):
    with start_run("toy", ToyConfig()) as run:
        run.log(step=0, loss=1.0)
    with open(run.dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 1, "lo')  # a crash mid-write
    assert len(read_metrics(run.dir)) == 1


def test_results_table_has_config_and_metrics(workdirs):
    for width in (2, 8):
        with start_run("toy", ToyConfig(width=width)) as run:
            run.summary(loss=1.0 / width)
        time.sleep(0.01)
    with pytest.raises(ValueError):
        with start_run("other", ToyConfig()):
            raise ValueError("x")
    table = results()
    assert len(table) == 3
    toy = results(kind="toy").sort_values("config.width")
    assert list(toy["config.width"]) == [2, 8] and list(toy["loss"]) == [0.5, 0.125]
    assert set(table["status"]) == {"finished", "failed"}


def test_atomic_write_keeps_old_file_when_write_fails(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    from workbench import atomic

    with pytest.raises(ZeroDivisionError):
        atomic._atomic_write(path, lambda h: (h.write("partial"), 1 / 0), "w")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_default_folders_resolve_against_the_project_root_not_the_working_directory(tmp_path, monkeypatch):
    from workbench.data.prepare import data_root
    from workbench.paths import project_root
    from workbench.runs import runs_root

    monkeypatch.delenv("WORKBENCH_RUNS", raising=False)
    monkeypatch.delenv("WORKBENCH_DATA_DIR", raising=False)
    monkeypatch.delenv("WORKBENCH_ROOT", raising=False)
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo / "notebooks")  # where JupyterLab starts a notebook's kernel
    assert project_root() == repo
    assert runs_root() == repo / "runs" and data_root() == repo / "data"
    monkeypatch.setenv("WORKBENCH_ROOT", str(tmp_path))
    assert runs_root() == tmp_path / "runs" and data_root() == tmp_path / "data"
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "elsewhere"))
    assert runs_root() == tmp_path / "elsewhere"
