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


def test_two_smoke_runs_give_bit_identical_codes(tmp_path):
    """Same config, same codec: the whole smoke profile (GAN included) trained twice, then both
    codecs encode the same held-out audio to exactly the same token ids."""
    from workbench.codec import load_codec, train_codec
    from workbench.codec.data import corpus_utterances, load_corpus_audio

    corpus = make_corpus(tmp_path / "corpus")
    config = for_profile(CodecConfig, "smoke")
    runs = [train_codec(config, corpus, run_id=name, root=tmp_path / "runs", progress=False) for name in ("a", "b")]
    assert all(r.steps == config.max_steps and r.completed for r in runs)
    assert runs[0].train_wall_s > 0  # measured and reported, not a schedule input
    wav = load_corpus_audio(corpus_utterances(corpus, "test")[:1], config.sample_rate).wavs[0].unsqueeze(0)
    codes = [load_codec(r.codec_path).encode(wav, config.sample_rate) for r in runs]
    assert codes[0].numel() > 10 and torch.equal(codes[0], codes[1])
    # the comparison can fail: another seed gives other codes on the same audio
    other = train_codec(dataclasses.replace(config, seed=1), corpus, run_id="c", root=tmp_path / "runs",
                        progress=False)
    assert not torch.equal(codes[0], load_codec(other.codec_path).encode(wav, config.sample_rate))


def test_a_codec_saved_with_the_retired_wall_clock_fields_still_loads(tmp_path, smoke_codec_model):
    from workbench.codec import load_codec
    from workbench.codec.train import save_codec

    path = save_codec(tmp_path / "codec.pt", smoke_codec_model, step=3)
    state = torch.load(path, weights_only=False)
    state["config"].update(max_train_wall_s=840.0, schedule_on_wall_time=True)
    torch.save(state, path)
    assert load_codec(path).codebook_size == smoke_codec_model.codebook_size


def test_missing_data_fails_loudly(tmp_path):
    from workbench.codec import train_codec

    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        train_codec(tiny(), tmp_path, root=tmp_path / "runs", progress=False)


def test_the_schedule_is_a_function_of_the_step_alone():
    from workbench.codec.train import lr_lambda

    by_steps = lr_lambda(10, 1000, 0.1)
    assert by_steps(4) == pytest.approx(0.5)  # linear warm-up
    assert by_steps(505) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert by_steps(1000) == pytest.approx(0.1)
    assert by_steps(2000) == pytest.approx(0.1)


def test_no_profile_schedules_or_stops_on_the_wall_clock():
    import dataclasses as dc

    from workbench.codec.config import RETIRED_FIELDS

    names = {f.name for f in dc.fields(CodecConfig)}
    assert not names & set(RETIRED_FIELDS)
    for profile in CodecConfig.PROFILES:
        assert not set(CodecConfig.PROFILES[profile]) & set(RETIRED_FIELDS)
    assert for_profile(CodecConfig, "cpu").max_steps == 2500


def test_regularised_training_logs_its_losses(tmp_path):
    config = tiny(code_entropy_weight=1.0, stft_loss_weight=1.0, stft_n_ffts=(128, 256))
    from workbench.codec.train import train_codec

    result = train_codec(config, make_corpus(tmp_path / "corpus"), run_id="reg", root=tmp_path / "runs",
                         progress=False)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "code_entropy_loss" in r]
    assert logged and all(0.0 <= r["code_entropy_loss"] <= 1.0 for r in logged)
    assert all(r["stft_loss"] > 0 for r in logged)


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_a_transcripts_folder_read_for_the_codec_has_the_utterances_and_splits_of_its_prepared_corpus(
        tmp_path, profile):
    from workbench.audio import save_audio
    from workbench.codec.data import corpus_utterances
    from workbench.data.manifest import read_manifest
    from workbench.data.prepare import DataConfig, prepare_corpus

    folder = tmp_path / "tones"
    rows = []
    for i in range(24):  # three speakers, listed out of id order, a text with stray spaces
        wav = 0.3 * torch.sin(2 * torch.pi * (200 + 10 * i) * torch.arange(8000) / 16000).unsqueeze(0)
        save_audio(folder / "wav" / f"f{i:02d}.wav", wav, 16000)
        rows.append(f"wav/f{i:02d}.wav\tspk{i % 3}\tu{(i * 7) % 24:02d}\t  tone number {i} ")
    (folder / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    config = for_profile(DataConfig, profile, corpus="tones", source=str(folder), max_utterances=20)
    prepare_corpus(config, root=tmp_path / "data", progress=False)

    def described(utterances):
        return [(u.utterance_id, u.speaker, u.text, u.split) for u in utterances]

    prepared = described(read_manifest(tmp_path / "data" / config.dataset_name))
    assert described(corpus_utterances(folder, data_config=config)) == prepared
    # without a DataConfig, the cpu profile's; the smoke profile's fractions split differently
    default = described(corpus_utterances(folder, data_config=dataclasses.replace(DataConfig(), max_utterances=20)))
    assert (default == prepared) == (profile == "cpu")
    assert len(corpus_utterances(folder)) == 24
