"""Codec metrics against known values, and evaluate_codec on a transparent reference codec."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.codec import metrics as M

KATHLEEN = Path("/work/shared/data/kathleen")


def _speech(seconds: float = 3.0) -> tuple[torch.Tensor, int]:
    from workbench.audio import load_audio

    wav, rate = load_audio(KATHLEEN / "flac16k" / "arctic_a0001.flac")
    return wav[0, : int(seconds * rate)], rate


def _noise_like(wav: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(wav.shape, generator=g)
    noise = noise * wav.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt() / 10 ** (snr_db / 20)
    return noise


def test_stoi_and_pesq_of_clean_signal_against_itself_are_near_max():
    wav, rate = _speech()
    assert M.stoi(wav, wav, rate) > 0.999
    assert M.pesq_wb(wav, wav, rate) > 4.5  # P.862.2 ceiling is 4.64
    assert M.pesq_nb(wav, wav, rate) > 4.4  # P.862.1 ceiling is 4.55


def test_noise_lowers_stoi_and_pesq_monotonically():
    wav, rate = _speech()
    mild = wav + _noise_like(wav, 20.0)
    heavy = wav + _noise_like(wav, -5.0)
    assert M.stoi(wav, wav, rate) > M.stoi(wav, mild, rate) > M.stoi(wav, heavy, rate)
    assert M.stoi(wav, heavy, rate) < 0.75
    assert M.pesq_wb(wav, mild, rate) > M.pesq_wb(wav, heavy, rate)
    assert M.pesq_wb(wav, heavy, rate) < 1.5
    assert M.pesq_nb(wav, mild, rate) > M.pesq_nb(wav, heavy, rate)


def test_si_sdr_is_scale_invariant_and_matches_the_snr_of_added_noise():
    wav, _ = _speech()
    assert M.si_sdr(wav, wav) > 100
    assert M.si_sdr(wav, 0.3 * wav) > 100
    noisy = wav + _noise_like(wav, 10.0)
    assert M.si_sdr(wav, noisy) == pytest.approx(10.0, abs=0.3)


def test_mel_distance_is_zero_for_identical_and_grows_with_noise():
    wav, rate = _speech()
    assert M.mel_distance(wav, wav, rate) == 0.0
    assert 0 < M.mel_distance(wav, wav + _noise_like(wav, 20.0), rate) < M.mel_distance(
        wav, wav + _noise_like(wav, 0.0), rate)


def test_length_mismatch_fails_loudly():
    wav, rate = _speech(1.0)
    with pytest.raises(ValueError, match="lengths differ"):
        M.stoi(wav, wav[:-1], rate)


def test_codebook_stats_known_values():
    stats = M.codebook_stats(torch.tensor([0, 0, 1, 1]), 4)
    assert stats.usage == 0.5 and stats.n_codes_used == 2 and stats.n_frames == 4
    assert stats.perplexity == pytest.approx(2.0)
    uniform = M.codebook_stats(torch.arange(1000) % 10, 10)
    assert uniform.usage == 1.0 and uniform.perplexity == pytest.approx(10.0)
    with pytest.raises(ValueError, match="outside"):
        M.codebook_stats(torch.tensor([4]), 4)


def test_bitrate_of_the_published_codec():
    assert M.bitrate_bps(50.0, 65536) == 800.0  # X-codec2: 50 tokens/s x 16 bits
    assert M.bitrate_bps(50.0, 1000) == pytest.approx(50 * math.log2(1000))


class MuLawCodec:
    """A transparent 'codec': one 8-bit mu-law code per sample. Known answers: 128 kbit/s,
    near-perfect STOI and PESQ."""

    sample_rate = 16000
    frame_rate_hz = 16000.0
    codebook_size = 256
    source = "mu-law"

    def n_frames(self, n_samples: int) -> int:
        return n_samples

    def encode(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        import torchaudio.functional as AF

        assert sample_rate == self.sample_rate
        return AF.mu_law_encoding(wav.reshape(wav.shape[0], -1).clamp(-1, 1), 256).long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        import torchaudio.functional as AF

        return AF.mu_law_decoding(codes, 256)


def test_evaluate_codec_on_a_transparent_codec(tmp_path):
    from workbench.codec.evaluate import evaluate_codec

    result = evaluate_codec(MuLawCodec(), KATHLEEN, split="test", max_utterances=3, out_dir=tmp_path)
    assert result.n_utterances == 3
    assert result.bitrate_bps == 128000.0
    assert result.stoi > 0.99
    assert result.pesq_wb > 4.0
    assert result.si_sdr > 25
    assert 0.3 < result.codebook_usage <= 1.0
    assert result.rtf_encode > 0 and result.rtf_decode > 0
    saved = (tmp_path / "codec_eval.json").read_text()
    for key in ("stoi", "pesq_wb", "pesq_nb", "mel_distance", "si_sdr", "codebook_usage",
                "codebook_perplexity", "bitrate_bps", "rtf_encode", "rtf_decode", "n_utterances"):
        assert f'"{key}"' in saved
    assert len(list((tmp_path / "audio").glob("*.wav"))) == 6


def test_verifier_hook_adds_wer_and_similarity(tmp_path):
    """The optional hook reads workbench.verifiers lazily: ASR verifiers give WER of original and
    resynthesis, speaker verifiers the similarity of resynthesis to original."""
    import workbench.verifiers as V
    from workbench.codec.evaluate import evaluate_codec
    from workbench.verifiers.base import VerifierResult

    class FakeASR:
        name, score_range = "codec-test-asr", (0.0, 1.0)

        def evaluate(self, audios, sample_rate, texts=None, prompts=None):
            return [VerifierResult(self.name, 0.75, 0.25, transcript="x") for _ in audios]

    class FakeSpeaker:
        name, score_range = "codec-test-spk", (-1.0, 1.0)

        def similarity(self, a, b, sample_rate):
            return 0.9

        def evaluate(self, audios, sample_rate, texts=None, prompts=None):
            return [VerifierResult(self.name, 0.9, 0.9) for _ in audios]

    for name, factory in (("codec-test-asr", FakeASR), ("codec-test-spk", FakeSpeaker)):
        if name not in V.available():
            V.register(name)(factory)
    result = evaluate_codec(MuLawCodec(), KATHLEEN, split="test", max_utterances=2,
                            verifiers=["codec-test-asr", "codec-test-spk"])
    assert result.wer_original == 0.25 and result.wer_resynth == 0.25
    assert result.sim_resynth == pytest.approx(0.9)
    assert result.verifier_raw["codec-test-asr"]["kind"] == "asr"
