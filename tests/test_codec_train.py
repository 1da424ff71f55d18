"""Codec training loop: runs end to end, records the run, and resumes exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from workbench.codec.config import CodecConfig
from workbench.config import for_profile

KATHLEEN_TSV = Path("/work/shared/data/kathleen")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_corpus(folder: Path, n_train: int = 6, n_valid: int = 2, n_test: int = 2) -> Path:
    """A small manifest over Kathleen FLACs (absolute paths) with explicit splits."""
    from workbench.codec.data import corpus_utterances
    from workbench.data.manifest import write_manifest

    utterances = corpus_utterances(KATHLEEN_TSV)
    chosen = []
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        chosen += [u for u in utterances if u.split == split][:n]
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder / "manifest.jsonl", chosen)
    return folder


def tiny(**overrides) -> CodecConfig:
    base = dict(segment_s=0.2, max_steps=4, disc_warmup_steps=2, eval_every=2, checkpoint_every=2)
    base.update(overrides)
    return for_profile(CodecConfig, "smoke", **base)


def test_train_codec_records_a_run_and_a_loadable_codec(tmp_path):
    from workbench.codec import load_codec, train_codec
    from workbench.runs import read_metrics

    corpus = make_corpus(tmp_path / "corpus")
    result = train_codec(tiny(), corpus, run_id="t1", root=tmp_path / "runs", progress=False)
    assert result.steps == 4 and result.completed and result.resumed_from_step == 0
    assert result.run_dir == (tmp_path / "runs" / "codec" / "t1").resolve()
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["kind"] == "codec" and meta["status"] == "finished"
    records = read_metrics(result.run_dir)
    steps = [r for r in records if "mel_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert [r["gan"] for r in steps] == [False, False, True, True]  # warm-up of 2 steps
    assert all("disc_loss" in r for r in steps[2:])
    assert any("valid_mel_distance" in r for r in records)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["codebook_size"] == 16
    codec = load_codec(result.run_dir)
    assert codec.codebook_size == 16 and codec.frame_rate_hz == 50.0 and codec.sample_rate == 16000


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    from workbench.codec import train_codec

    corpus = make_corpus(tmp_path / "corpus")
    config = tiny(max_steps=5, checkpoint_every=1)
    whole = train_codec(config, corpus, run_id="whole", root=tmp_path / "runs", progress=False)
    first = train_codec(config, corpus, run_id="split", root=tmp_path / "runs", stop_after_steps=3,
                        progress=False)
    assert first.steps == 3 and not first.completed
    second = train_codec(config, corpus, run_id="split", root=tmp_path / "runs", progress=False)
    assert second.resumed_from_step == 3 and second.steps == 5 and second.completed
    a = torch.load(whole.run_dir / "checkpoint.pt", weights_only=False)
    b = torch.load(second.run_dir / "checkpoint.pt", weights_only=False)
    for part in ("model", "discriminators"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    assert torch.equal(a["sampler"]["generator"], b["sampler"]["generator"])
    assert a["opt_g"]["state"].keys() == b["opt_g"]["state"].keys()
    # a different seed really gives different weights (the comparison above can fail)
    other = train_codec(dataclasses.replace(config, seed=1), corpus, run_id="other", root=tmp_path / "runs",
                        progress=False)
    c = torch.load(other.run_dir / "checkpoint.pt", weights_only=False)
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])


def test_wall_time_cap_stops_with_a_checkpoint(tmp_path):
    from workbench.codec import train_codec

    corpus = make_corpus(tmp_path / "corpus")
    result = train_codec(tiny(max_steps=100, max_train_wall_s=0.0), corpus, run_id="cap",
                         root=tmp_path / "runs", progress=False)
    assert result.steps == 0 and not result.completed
    assert (result.run_dir / "checkpoint.pt").exists() and (result.run_dir / "codec.pt").exists()


def test_missing_data_fails_loudly(tmp_path):
    from workbench.codec import train_codec

    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        train_codec(tiny(), tmp_path, root=tmp_path / "runs", progress=False)


def test_wall_time_schedule_completes_the_cosine_at_the_cap():
    from workbench.codec.train import lr_lambda

    by_steps = lr_lambda(10, 1000, 0.1)
    assert by_steps(4) == pytest.approx(0.5)
    assert by_steps(505) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert by_steps(2000) == pytest.approx(0.1)
    spent = {"fraction": 0.0}
    by_wall = lr_lambda(10, 1000, 0.1, wall_fraction=lambda: spent["fraction"])
    assert by_wall(4) == pytest.approx(0.5)  # warm-up stays in steps
    assert by_wall(20) == pytest.approx(by_steps(20))  # steps ahead of the clock: steps rule
    spent["fraction"] = 0.5
    assert by_wall(20) == pytest.approx(0.55)  # clock ahead: half the cap spent, half the cosine
    spent["fraction"] = 1.3
    assert by_wall(20) == pytest.approx(0.1)


def test_regularised_training_logs_its_losses(tmp_path):
    config = tiny(code_entropy_weight=1.0, stft_loss_weight=1.0, stft_n_ffts=(128, 256),
                  schedule_on_wall_time=True, max_train_wall_s=600.0)
    from workbench.codec.train import train_codec

    result = train_codec(config, make_corpus(tmp_path / "corpus"), run_id="reg", root=tmp_path / "runs",
                         progress=False)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "code_entropy_loss" in r]
    assert logged and all(0.0 <= r["code_entropy_loss"] <= 1.0 for r in logged)
    assert all(r["stft_loss"] > 0 for r in logged)
