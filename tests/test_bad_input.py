"""Bad input is named, never silently replaced (issue 11, cases 3-7 and 11-12): a missing --source,
non-positive counts and rates, a changed source file, repeated ids, empty splits, a lost stage
summary, and the one-line errors of the command line."""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.cli import main
from workbench.config import ConfigError, for_profile
from workbench.data.prepare import DataConfig, prepare_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tone(seconds: float, hz: float, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return 0.3 * torch.sin(2 * math.pi * hz * t).unsqueeze(0)


def _corpus(folder: Path, n: int = 4, ids: list[str] | None = None) -> Path:
    """A transcripts.tsv corpus of `n` short tones (ids `ids` or u00, u01, ...)."""
    from workbench.audio import save_audio

    ids = ids or [f"u{i:02d}" for i in range(n)]
    rows = []
    for i, utterance_id in enumerate(ids):
        save_audio(folder / "wav" / f"f{i:02d}.wav", _tone(0.5 + 0.01 * i, 200 + 20 * i), 16000)
        rows.append(f"wav/f{i:02d}.wav\tspk\t{utterance_id}\tsentence number {i}")
    (folder / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    return folder


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


# -- prepare (cases 3-7) -------------------------------------------------------------------------


def test_a_source_that_does_not_exist_is_an_error_not_the_mirror(workdirs, capsys):
    assert main(["data", "prepare", "--corpus", "kathleen", "--source", str(workdirs / "nope")]) == 2
    assert str(workdirs / "nope") in _one_error_line(capsys)
    assert not (workdirs / "data").exists()


@pytest.mark.parametrize("field,value", [("max_utterances", -5), ("sample_rate_hz", 0), ("valid_fraction", 1.5)])
def test_data_config_rejects_a_bad_count_or_rate_naming_it(field, value):
    with pytest.raises(ConfigError, match=rf"DataConfig.{field} = {value}: must be"):
        for_profile(DataConfig, "smoke", **{field: value})


def test_cli_rejects_non_positive_values_before_any_work(workdirs, capsys):
    assert main(["run", "00_data", "--profile", "smoke", "-p", "max_utterances", "-5"]) == 2
    assert "max_utterances = -5" in _one_error_line(capsys)
    assert main(["data", "prepare", "--corpus", "kathleen", "--sample-rate", "0"]) == 2
    assert "sample_rate_hz = 0" in _one_error_line(capsys)
    assert main(["codec", "train", "--data", str(workdirs), "--profile", "smoke", "--set", "batch_size=0"]) == 2
    assert "CodecConfig.batch_size = 0: must be >= 1" in _one_error_line(capsys)
    assert not (workdirs / "runs").exists()


def test_a_replaced_source_file_is_converted_again(tmp_path):
    from workbench.audio import load_audio, save_audio
    from workbench.data.manifest import read_manifest

    source = _corpus(tmp_path / "src", n=3)
    config = for_profile(DataConfig, "cpu", corpus="tones", source=str(source), valid_fraction=0.0,
                         test_fraction=0.0)
    first = prepare_corpus(config, root=tmp_path / "data", progress=False)
    before = {u.utterance_id: u.duration_s for u in read_manifest(first.out_dir)}
    save_audio(source / "wav" / "f01.wav", _tone(1.25, 900), 16000)  # the user fixes one recording
    second = prepare_corpus(config, root=tmp_path / "data", progress=False)
    after = {u.utterance_id: u.duration_s for u in read_manifest(second.out_dir)}
    assert after["u01"] == pytest.approx(1.25) and before["u01"] != after["u01"]
    assert after["u00"] == before["u00"] and after["u02"] == before["u02"]
    wav, _ = load_audio(Path(second.out_dir) / "wav" / "u01.wav", 16000)
    assert wav.shape[-1] == 20000


def test_a_repeated_id_is_reported_and_the_other_ids_are_kept(tmp_path, capsys):
    source = _corpus(tmp_path / "src", ids=["arctic_a0001", "arctic_a0002", "arctic_a0002", "arctic_a0003"])
    report = prepare_corpus(for_profile(DataConfig, "cpu", corpus="dup", source=str(source)),
                            root=tmp_path / "data", progress=False)
    from workbench.data.manifest import read_manifest

    assert sorted(u.utterance_id for u in read_manifest(report.out_dir)) == ["arctic_a0001", "arctic_a0002",
                                                                              "arctic_a0003"]
    assert [p.utterance_id for p in report.skipped] == ["arctic_a0002"]
    assert "duplicate utterance id" in report.skipped[0].reason
    assert any("'arctic_a0002'" in w and "repeated" in w for w in report.warnings)
    saved = json.loads((Path(report.out_dir) / "prepare_report.json").read_text())
    assert saved["warnings"] == report.warnings
    assert "warning" in capsys.readouterr().err


def test_an_id_column_that_is_not_ids_still_takes_file_paths(tmp_path):
    from workbench.data.readers import read_corpus

    source = _corpus(tmp_path / "src", ids=["0", "0", "1", "1"])  # FSDD: the column holds the digit
    assert [u.utterance_id for u in read_corpus(source)] == ["wav_f00", "wav_f01", "wav_f02", "wav_f03"]


def test_empty_valid_and_test_splits_are_warned_about(tmp_path, capsys):
    source = _corpus(tmp_path / "src", n=15)
    report = prepare_corpus(for_profile(DataConfig, "cpu", corpus="small", source=str(source),
                                        valid_fraction=0.01, test_fraction=0.01),
                            root=tmp_path / "data", progress=False)
    assert report.split_counts == {"train": 15, "valid": 0, "test": 0}
    assert [w.split(":")[0] for w in report.warnings] == ["the valid split is empty", "the test split is empty"]
    assert "the valid split is empty" in capsys.readouterr().err


# -- the command line's one-line errors (case 12) --------------------------------------------------


def test_a_non_utf8_transcript_names_the_file_and_line(workdirs, capsys):
    source = _corpus(workdirs / "src", n=3)
    tsv = source / "transcripts.tsv"
    lines = tsv.read_bytes().split(b"\n")
    lines[1] = lines[1] + b" caf\xe9"
    tsv.write_bytes(b"\n".join(lines))
    assert main(["data", "prepare", "--corpus", "latin1", "--source", str(source)]) == 2
    assert f"{tsv}:2: not UTF-8 (byte 0xe9" in _one_error_line(capsys)


def _shards(folder: Path) -> Path:
    from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards

    utterances = [TokenizedUtterance(f"u{i}", "s", "a b", "train", torch.arange(6) % 8) for i in range(4)]
    write_token_shards(folder, utterances, CodecInfo(8, 50.0, 16000, "toy"), shard_size=2)
    return folder


def test_a_bad_shard_index_or_a_truncated_shard_names_the_file(workdirs, capsys):
    from workbench.data.token_shards import read_token_shards

    shards = _shards(workdirs / "shards")
    index = json.loads((shards / "index.json").read_text())
    shard = shards / index["shards"][0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{shard}: token shard is truncated or corrupt"):
        read_token_shards(shards)
    del index["codec"]
    (shards / "index.json").write_text(json.dumps(index))
    assert main(["lm", "train", str(shards), "--profile", "smoke", "--run-id", "bad"]) == 2
    err = _one_error_line(capsys)
    assert f"{shards / 'index.json'}: not a token-shard index: no 'codec' entry" in err
    log = workdirs / "runs" / "lm" / "bad" / "error.log"
    assert f"traceback in {log}" in err and "Traceback" in log.read_text()


def test_a_read_only_runs_root_is_one_line(workdirs, capsys, monkeypatch):
    if os.geteuid() == 0:  # root writes through permission bits; /sys refuses even root
        runs = Path("/sys/workbench-test-runs")
    else:
        (workdirs / "ro").mkdir(mode=0o555)
        runs = workdirs / "ro" / "runs"
    monkeypatch.setenv("WORKBENCH_RUNS", str(runs))
    assert main(["lm", "train", str(_shards(workdirs / "shards")), "--profile", "smoke"]) == 2
    assert "cannot write" in _one_error_line(capsys)


def test_a_full_disk_while_codec_training_is_one_line_and_the_traceback_is_kept(tmp_path, workdirs, capsys):
    from test_codec_train import make_corpus

    corpus = make_corpus(tmp_path / "corpus", n_train=2, n_valid=0, n_test=0)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, hard))  # checkpoints are larger; logs are not
    try:
        status = main(["codec", "train", "--data", str(corpus), "--profile", "smoke", "--run-id", "full",
                       "--set", "max_steps=1", "--set", "checkpoint_every=1", "--set", "eval_every=1"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert status == 2
    run_dir = workdirs / "runs" / "codec" / "full"
    err = capsys.readouterr().err.strip().splitlines()[-1]
    err = err[err.index("error: "):]  # after the progress bar, on its line
    assert err.startswith(f"error: file size limit reached writing {run_dir / 'checkpoint.pt'}"), err
    assert "traceback in" in err
    assert "Traceback" in (run_dir / "error.log").read_text()
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "failed"


def test_sigterm_ends_a_training_command_with_one_line(workdirs):
    shards = _shards(workdirs / "shards")
    command = [sys.executable, "-m", "workbench.cli", "lm", "train", str(shards), "--profile", "smoke",
               "--run-id", "term", "--set", "max_steps=1000000", "--set", "progress=false",
               "--set", "checkpoint_every=1000000", "--set", "peak_flops_per_s=100000000000.0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    metrics = workdirs / "runs" / "lm" / "term" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "--run-id term" in lines[0], err
    meta = json.loads((workdirs / "runs" / "lm" / "term" / "meta.json").read_text())
    assert meta["status"] == "interrupted"


# -- a lost stage summary (case 11) ----------------------------------------------------------------


@pytest.mark.slow  # two executions of the data notebook (about 30 s)
def test_a_finished_stage_whose_summary_was_lost_is_run_again(workdirs):
    from workbench.pipeline import Stage, run_pipeline

    stages = (Stage("00_data"),)
    first = run_pipeline("smoke", stages=stages, reports_dir=workdirs / "reports")
    (first.stages[0].run_dir / "summary.json").unlink()
    second = run_pipeline("smoke", stages=stages, reports_dir=workdirs / "reports")
    again = second.stages[0]
    assert not again.reused and again.run_dir != first.stages[0].run_dir
    assert "dataset" in json.loads((again.run_dir / "summary.json").read_text())
    third = run_pipeline("smoke", stages=stages, reports_dir=workdirs / "reports")
    assert third.stages[0].reused and third.stages[0].run_dir == again.run_dir
