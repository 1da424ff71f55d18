"""A run id means one config, one process writes a run, a killed run is seen as such, and a resume
never leaves duplicated steps or resumes from a damaged checkpoint (issue 11, cases 2, 8, 9, 10)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from workbench.run_lock import RunLockedError
from workbench.runs import RunConfigMismatch, read_metrics, results, start_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KATHLEEN = Path(os.environ.get("WORKBENCH_DATA_MIRROR", "/work/shared/data")) / "kathleen"


@dataclass(frozen=True)
class ToyConfig:
    width: int = 4
    seed: int = 1
    progress: bool = True


def _meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "meta.json").read_text())


# -- a run id is one config (case 2) ----------------------------------------------------------------


def test_reopening_a_run_with_another_config_is_refused_and_leaves_it_as_it_was(workdirs):
    with start_run("toy", ToyConfig(), run_id="r") as run:
        run.summary(loss=1.0)
    config_before = (run.dir / "config.yaml").read_text()
    with pytest.raises(RunConfigMismatch, match=r"toy/r .*width: 4 -> 8.*another run id"):
        with start_run("toy", ToyConfig(width=8), run_id="r"):
            pytest.fail("the block must not run")
    assert _meta(run.dir)["status"] == "finished" and (run.dir / "config.yaml").read_text() == config_before
    # a setting that does not change results (the progress bar) may differ
    with start_run("toy", ToyConfig(progress=False), run_id="r"):
        pass


def _tiny_shards(folder: Path) -> Path:
    from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards

    rng = random.Random(0)
    words = "the a cat dog sat ran on in mat fog red big".split()
    utterances = []
    for i in range(80):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 5)))
        codes = torch.tensor([ord(ch) % 64 for ch in text])
        utterances.append(TokenizedUtterance(f"u{i:03d}", "spk", text, "valid" if i % 10 == 0 else "train", codes))
    write_token_shards(folder, utterances, CodecInfo(64, 50.0, 16000, "toy"), shard_size=40)
    return folder


@pytest.fixture
def shards(tmp_path) -> Path:
    return _tiny_shards(tmp_path / "shards")


LM_ARGS = ["--profile", "smoke", "--set", "max_steps=2", "--set", "progress=false", "--set", "peak_flops_per_s=100000000000.0"]


def test_lm_train_with_a_used_run_id_and_another_preset_says_what_differs(workdirs, shards, capsys):
    from workbench.cli import main

    assert main(["lm", "train", str(shards), "--run-id", "x", *LM_ARGS]) == 0
    run_dir = workdirs / "runs" / "lm" / "x"
    summary = (run_dir / "summary.json").read_text()
    capsys.readouterr()
    assert main(["lm", "train", str(shards), "--run-id", "x", *LM_ARGS, "--set", "preset=cpu-0.3m"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "preset: 'cpu-0.1m' -> 'cpu-0.3m'" in err
    assert main(["lm", "train", str(shards), "--run-id", "x", *LM_ARGS[:-2], "--set", "max_steps=5"]) == 2
    assert "max_steps: 2 -> 5" in capsys.readouterr().err
    assert _meta(run_dir)["status"] == "finished" and (run_dir / "summary.json").read_text() == summary
    assert "preset: cpu-0.1m" in (run_dir / "config.yaml").read_text()


def test_codec_run_id_with_another_config_is_refused_before_the_finished_run_is_touched(tmp_path):
    from test_codec_train import make_corpus, tiny

    from workbench.codec import train_codec

    corpus = make_corpus(tmp_path / "corpus", n_train=2, n_valid=1, n_test=0)
    config = tiny(max_steps=1, eval_every=1, checkpoint_every=1)
    first = train_codec(config, corpus, run_id="c", root=tmp_path / "runs", progress=False)
    weights = (first.run_dir / "checkpoint.pt").read_bytes()
    with pytest.raises(RunConfigMismatch, match="fsq_levels"):
        train_codec(tiny(max_steps=1, eval_every=1, checkpoint_every=1, fsq_levels=(4, 4, 4)), corpus, run_id="c",
                    root=tmp_path / "runs", progress=False)
    assert _meta(first.run_dir)["status"] == "finished"
    assert (first.run_dir / "checkpoint.pt").read_bytes() == weights


# -- one writer per run (case 8) ----------------------------------------------------------------


def test_a_second_writer_of_a_live_run_is_refused_naming_the_holder(workdirs, shards):
    from workbench.lm.train import LMTrainConfig, train_lm
    from workbench.config import for_profile

    config = for_profile(LMTrainConfig, "smoke", max_steps=2, progress=False, peak_flops_per_s=1e11)
    with start_run("lm", config, run_id="busy") as first:
        with pytest.raises(RunLockedError, match=rf"in use by pid {os.getpid()} on "):
            train_lm(config, shards, run_id="busy")
        assert _meta(first.dir)["status"] == "running"
        assert not (first.dir / "tokenizer").exists() and not (first.dir / "checkpoints").exists()
    assert _meta(first.dir)["status"] == "finished"


_HOLD = (
    "import sys, time\nfrom dataclasses import dataclass\nfrom workbench.runs import start_run\n"
    "@dataclass(frozen=True)\nclass C:\n    a: int = 1\n"
    "with start_run('toy', C(), run_id='held') as run:\n    run.log(1, loss=1.0)\n"
    "    print('ready', flush=True)\n    time.sleep(120)\n"
)


@dataclass(frozen=True)
class C:  # the config _HOLD uses: same class name and fields, so the same config
    a: int = 1


def test_a_sigkilled_run_shows_as_stale_and_its_lock_is_taken_over(workdirs, capsys):
    process = subprocess.Popen([sys.executable, "-c", _HOLD], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert process.stdout.readline().strip() == "ready"
        with pytest.raises(RunLockedError, match=rf"pid {process.pid} on"):
            with start_run("toy", C(), run_id="held"):
                pass
        assert list(results(kind="toy")["status"]) == ["running"]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    run_dir = workdirs / "runs" / "toy" / "held"
    assert _meta(run_dir)["status"] == "running"  # nothing could write otherwise...
    assert list(results(kind="toy")["status"]) == ["stale"]  # ...but the table tells
    with start_run("toy", C(), run_id="held") as run:
        run.log(2, loss=0.5)
    assert f"stale lock of pid {process.pid}" in capsys.readouterr().err
    assert str(process.pid) in _meta(run_dir)["took_over_from"] and _meta(run_dir)["status"] == "finished"


# -- metrics after a kill (case 10) -------------------------------------------------------------


def test_a_torn_last_line_does_not_swallow_the_next_record(workdirs):
    with start_run("toy", ToyConfig(), run_id="t") as run:
        run.log(1, loss=1.0)
    with open(run.dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "lo')  # killed mid-write
    with start_run("toy", ToyConfig(), run_id="t") as run:
        run.log(2, loss=0.5)
    assert [(m["step"], m["loss"]) for m in read_metrics(run.dir)] == [(1, 1.0), (2, 0.5)]


def test_steps_replayed_after_a_resume_are_read_once(workdirs):
    with start_run("toy", ToyConfig(), run_id="m") as run:
        for step in (5, 10, 15):  # checkpoint at 10, killed after logging 15
            run.log(step, loss=float(step))
        run.log(10, valid_loss=9.0)
        run.log(10, event="resumed")
        for step in (15, 20):
            run.log(step, loss=step + 0.5)
    steps = [(m["step"], m.get("loss"), m.get("event")) for m in read_metrics(run.dir)]
    assert steps == [(5, 5.0, None), (10, 10.0, None), (10, None, None), (10, None, "resumed"),
                     (15, 15.5, None), (20, 20.5, None)]


# -- a damaged checkpoint (case 9) with the replay it causes (case 10) -----------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damaged", ["trainer_state.pt", "model.safetensors"])
def test_lm_resume_skips_a_truncated_latest_checkpoint_and_logs_each_step_once(workdirs, shards, capsys, damaged):
    from workbench.config import for_profile
    from workbench.lm.train import LMTrainConfig, train_lm

    config = for_profile(LMTrainConfig, "smoke", max_steps=8, checkpoint_every=3, log_every=1, eval_every=100,
                         progress=False, peak_flops_per_s=1e11)
    train_lm(config, shards, run_id="d", stop_after_steps=5)
    run_dir = workdirs / "runs" / "lm" / "d"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-0000003", "step-0000005"]
    _truncate(run_dir / "checkpoints" / "step-0000005" / damaged)
    result = train_lm(config, shards, run_id="d")
    assert result.steps == 8
    err = capsys.readouterr().err
    assert f"step-0000005: {damaged}: checksum differs" in err and "resuming from step-0000003" in err
    train_steps = [m["step"] for m in read_metrics(run_dir) if "train_loss" in m]
    assert train_steps == list(range(1, 9))


def test_codec_resume_skips_a_truncated_checkpoint_for_the_previous_one(tmp_path, capsys):
    from test_codec_train import make_corpus, tiny

    from workbench.codec import train_codec

    corpus = make_corpus(tmp_path / "corpus", n_train=2, n_valid=1, n_test=0)
    config = tiny(max_steps=4, eval_every=10, checkpoint_every=2, log_every=1)
    train_codec(config, corpus, run_id="k", root=tmp_path / "runs", stop_after_steps=3, progress=False)
    run_dir = tmp_path / "runs" / "codec" / "k"
    _truncate(run_dir / "checkpoint.pt")
    resumed = train_codec(config, corpus, run_id="k", root=tmp_path / "runs", progress=False)
    assert resumed.resumed_from_step == 2 and resumed.steps == 4
    assert "checkpoint.pt: checksum differs" in capsys.readouterr().err
    assert [m["step"] for m in read_metrics(run_dir) if "mel_loss" in m] == [1, 2, 3, 4]


def test_a_field_added_to_the_code_since_the_run_started_is_no_difference_at_its_default(workdirs):
    with start_run("toy", ToyConfig(), run_id="old") as run:
        pass
    (run.dir / "config.yaml").write_text("width: 4\n")  # written before `seed` and `progress` existed
    with start_run("toy", ToyConfig(), run_id="old"):  # both at their defaults: the same run
        pass
    (run.dir / "config.yaml").write_text("width: 4\n")
    with pytest.raises(RunConfigMismatch, match=r"seed: \(unset\) -> 2"):
        with start_run("toy", ToyConfig(seed=2), run_id="old"):
            pass
