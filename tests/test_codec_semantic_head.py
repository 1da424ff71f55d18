"""Supervised semantic objective: transcripts to CTC labels, the CTC head learns, and training
with it is recorded and resumable while the codec artifact stays head-free; off changes nothing."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from workbench.codec.config import CodecConfig
from workbench.config import ConfigError, for_profile

from test_codec_train import make_corpus, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_transcripts_become_normalised_character_ids():
    from workbench.codec.semantic_head import character_vocab, ctc_min_frames, transcript_ids

    vocab = character_vocab()
    ids = transcript_ids("Tom's 2 cats, Whittemore!")
    assert "".join(vocab[i] for i in ids) == "tom's two cats whittemore"
    assert 0 not in ids  # the blank is never a label
    assert ctc_min_frames(transcript_ids("all")) == 4  # 'l', blank, 'l'


def test_ctc_loss_is_finite_and_decreases_on_a_planted_batch():
    """A smoke codec's encoder and a CTC head, trained on two short Kathleen utterances only:
    the loss starts finite and falls well below where it began."""
    from workbench.codec.data import corpus_utterances, load_corpus_audio
    from workbench.codec.model import build_model
    from workbench.codec.semantic_head import CTCHead, TranscribedSampler, character_vocab, ctc_loss

    from test_codec_train import KATHLEEN_TSV

    torch.manual_seed(0)
    config = for_profile(CodecConfig, "smoke")
    utterances = sorted(corpus_utterances(KATHLEEN_TSV, "train")[:40], key=lambda u: len(u.text))[:2]
    audio = load_corpus_audio(utterances, config.sample_rate)
    sampler = TranscribedSampler(audio.wavs, [u.text for u in utterances], config.hop_length,
                                 max_samples=10 * config.sample_rate, batch_size=2, seed=0)
    model = build_model(config)
    head = CTCHead(config.latent_dim, 64, len(character_vocab()))
    optimiser = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=3e-3)
    batch = sampler.next_batch()
    assert batch.audio.shape[-1] == int(batch.frame_lengths.max()) * config.hop_length
    assert (batch.frame_lengths >= batch.target_lengths).all()
    losses = []
    for _ in range(12):
        loss = ctc_loss(head(model.encode(batch.audio).latents), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.6 * losses[0]


def test_training_with_ctc_logs_it_resumes_exactly_and_saves_a_head_free_codec(tmp_path):
    from workbench.codec import load_codec, train_codec

    corpus = make_corpus(tmp_path / "corpus")
    config = tiny(ctc_weight=1.0, ctc_batch_size=2, max_steps=4, checkpoint_every=1)
    whole = train_codec(config, corpus, run_id="whole", root=tmp_path / "runs", progress=False)
    rows = [json.loads(line) for line in (whole.run_dir / "metrics.jsonl").read_text().splitlines()]
    ctc = [r["ctc_loss"] for r in rows if "ctc_loss" in r]
    assert len(ctc) == 4 and all(0 < c < 1e3 for c in ctc)
    codec_state = torch.load(whole.codec_path, weights_only=False)
    assert not any("ctc" in key for key in codec_state["model"])
    codec = load_codec(whole.codec_path)
    wav = torch.randn(1, 3200) * 0.05
    assert codec.decode(codec.encode(wav, 16000)).shape[-1] == 3200
    first = train_codec(config, corpus, run_id="split", root=tmp_path / "runs", stop_after_steps=2, progress=False)
    second = train_codec(config, corpus, run_id="split", root=tmp_path / "runs", progress=False)
    assert first.steps == 2 and second.resumed_from_step == 2 and second.steps == 4
    a = torch.load(whole.run_dir / "checkpoint.pt", weights_only=False)
    b = torch.load(second.run_dir / "checkpoint.pt", weights_only=False)
    for part in ("model", "ctc_head"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"


def test_ctc_off_trains_exactly_as_without_it_and_on_changes_the_codec(tmp_path):
    """ctc_weight 0 ignores every other ctc_* setting (no head, no batch, no random draws), and
    the same codec initialisation trained with the objective ends elsewhere."""
    from workbench.codec import train_codec

    corpus = make_corpus(tmp_path / "corpus")
    base = tiny(max_steps=3, use_gan=False)
    runs = {
        name: train_codec(config, corpus, run_id=name, root=tmp_path / "runs", progress=False)
        for name, config in (("off", base),
                             ("off-other-settings", dataclasses.replace(base, ctc_batch_size=3, ctc_hidden_dim=32)),
                             ("on", dataclasses.replace(base, ctc_weight=1.0, ctc_batch_size=2)))
    }
    states = {n: torch.load(r.run_dir / "checkpoint.pt", weights_only=False)["model"] for n, r in runs.items()}
    assert all(torch.equal(states["off"][k], states["off-other-settings"][k]) for k in states["off"])
    assert not all(torch.equal(states["off"][k], states["on"][k]) for k in states["off"])


def test_ctc_config_errors_name_the_bad_value():
    with pytest.raises(ConfigError, match="ctc_weight -1"):
        for_profile(CodecConfig, "smoke", ctc_weight=-1.0)
    with pytest.raises(ConfigError, match="ctc_batch_size 0"):
        for_profile(CodecConfig, "smoke", ctc_weight=1.0, ctc_batch_size=0)
