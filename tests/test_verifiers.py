"""Verifier library: text normalisation and WER, the registry, input handling, the offline verifiers
on real speech (expected directions), tiny random transformers/speechbrain adapters, combinations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench import verifiers
from workbench.audio import load_audio, resample
from workbench.data.manifest import Utterance
from workbench.data.readers import read_transcripts_tsv
from workbench.verifiers import VerifierError, VerifierResult
from workbench.verifiers.combined import lexicographic_scores

DATA = Path("/work/shared/data")
KATHLEEN = DATA / "kathleen"
VCTK = DATA / "vctk"

needs_data = pytest.mark.skipif(not (KATHLEEN / "transcripts.tsv").exists(), reason="shared speech data absent")


def _rows(corpus: Path) -> list[Utterance]:
    return list(read_transcripts_tsv(corpus))


def _clip(utterance: Utterance) -> torch.Tensor:
    wav, rate = load_audio(utterance.audio_path)
    assert rate == 16000
    return wav[0]


# ---------------------------------------------------------------------------------------------
# Text normaliser and WER


@pytest.mark.parametrize("raw, expected", [
    ("Lord, but I'm glad to see you again, Phil.", "lord but i'm glad to see you again phil"),
    ("For the twentieth time that evening...", "for the twentieth time that evening"),
    ('the "forty-two line Bible" of about 1455,', "the forty two line bible of about fourteen fifty five"),
    ("On the 20th, 3 men paid $1,000 (50%).", "on the twentieth three men paid one thousand fifty percent"),
    ("  Café \t au   LAIT  ", "cafe au lait"),
    ("\u2018Don\u2019t,\u2019 she said -- 'really'", "don't she said really"),
    ("In 1905 and 1900; pi is 3.14", "in nineteen oh five and nineteen hundred pi is three point one four"),
    ("", ""),
])
def test_normalize_text(raw: str, expected: str) -> None:
    assert verifiers.normalize_text(raw) == expected
    assert verifiers.normalize_text(expected) == expected  # idempotent


def test_number_words() -> None:
    from workbench.verifiers.text import cardinal_words, ordinal_words

    assert cardinal_words(0) == "zero"
    assert cardinal_words(115) == "one hundred fifteen"
    assert cardinal_words(2_000_019) == "two million nineteen"
    assert ordinal_words(1) == "first" and ordinal_words(42) == "forty second" and ordinal_words(90) == "ninetieth"


def test_wer_counts() -> None:
    assert verifiers.wer("the cat sat down", "The cat sat down!") == 0.0
    assert verifiers.wer("the cat sat down", "the bat sat down") == pytest.approx(0.25)  # 1 substitution
    assert verifiers.wer("the cat sat down", "the cat sat") == pytest.approx(0.25)  # 1 deletion
    assert verifiers.wer("a b", "a x b y z") == pytest.approx(1.5)  # insertions push WER past 1
    assert verifiers.wer("a b c", "") == 1.0
    errors = verifiers.word_errors("one two three four", "one too three for five")
    assert (errors.substitutions, errors.deletions, errors.insertions, errors.n_reference_words) == (2, 0, 1, 4)
    with pytest.raises(ValueError, match="empty reference"):
        verifiers.wer("?!", "anything")


def test_corpus_wer_weights_by_words() -> None:
    # 1 error in 1 word and 0 errors in 9 words: corpus WER 0.1, not the mean of 1.0 and 0.0.
    refs = ["hello", "one two three four five six seven eight nine"]
    hyps = ["yellow", "one two three four five six seven eight nine"]
    assert verifiers.corpus_wer(refs, hyps) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
# Registry and input handling


def test_registry_names_and_suggestion() -> None:
    names = verifiers.available()
    for name in ("pocketsphinx", "whisper", "resemblyzer", "ecapa", "wavlm", "dnsmos", "weighted", "lexicographic"):
        assert name in names
    with pytest.raises(VerifierError, match="did you mean 'pocketsphinx'"):
        verifiers.get("pocketsphix")
    verifier = verifiers.get("pocketsphinx")
    assert verifier.name == "pocketsphinx" and isinstance(verifier, verifiers.Verifier)


def test_register_rejects_a_second_factory_under_a_taken_name() -> None:
    with pytest.raises(VerifierError, match="already registered"):
        verifiers.register("dnsmos")(lambda **options: None)  # type: ignore[arg-type,return-value]


def test_bad_inputs_fail_loudly() -> None:
    asr = verifiers.get("pocketsphinx")
    stereo = torch.zeros(2, 1600)
    with pytest.raises(VerifierError, match=r"audio 0: expected a 1-D waveform.*\(2, 1600\)"):
        asr.score([stereo], 16000, texts=["x"])
    with pytest.raises(VerifierError, match="audio 1: empty"):
        asr.score([torch.zeros(100), torch.zeros(0)], 16000, texts=["x", "y"])
    with pytest.raises(VerifierError, match="NaN"):
        asr.score([torch.full((100,), float("nan"))], 16000, texts=["x"])
    with pytest.raises(VerifierError, match="needs texts"):
        asr.score([torch.zeros(100)], 16000)
    with pytest.raises(VerifierError, match="2 audios but 1 texts"):
        asr.score([torch.zeros(100), torch.zeros(100)], 16000, texts=["x"])
    with pytest.raises(VerifierError, match="list of 1-D waveforms"):
        asr.score(torch.zeros(100), 16000, texts=["x"])  # type: ignore[arg-type]
    with pytest.raises(VerifierError, match="needs prompts"):
        verifiers.get("resemblyzer").score([torch.zeros(100)], 16000)


# ---------------------------------------------------------------------------------------------
# Offline verifiers on real speech


@needs_data
def test_pocketsphinx_wer_lower_against_own_transcript() -> None:
    rows = _rows(KATHLEEN)[:5]
    clips = [_clip(r) for r in rows]
    own = [r.text for r in rows]
    other = own[1:] + own[:1]  # each clip against a different utterance's text
    asr = verifiers.get("pocketsphinx")
    own_results = asr.evaluate(clips, 16000, texts=own)
    # Same verifier, same audio at another rate: it must be resampled to 16 kHz, not misread.
    other_results = asr.evaluate([resample(c, 16000, 24000) for c in clips], 24000, texts=other)
    own_wer = [r.raw for r in own_results]
    other_wer = [r.raw for r in other_results]
    assert all(r.score == pytest.approx(1.0 - r.raw) for r in own_results)
    assert all(isinstance(r.transcript, str) and r.transcript for r in own_results)
    assert np.mean(own_wer) < 0.5, own_wer
    assert all(a < b for a, b in zip(own_wer, other_wer)), (own_wer, other_wer)
    # Resampled 24 kHz audio gives (nearly) the same transcripts as the 16 kHz originals.
    assert verifiers.corpus_wer([r.transcript for r in own_results], [r.transcript for r in other_results]) < 0.2


@needs_data
def test_resemblyzer_same_speaker_more_similar_than_other_speaker() -> None:
    kathleen = _rows(KATHLEEN)
    reference, same = _clip(kathleen[0]), _clip(kathleen[10])
    vctk = {r.speaker: r for r in _rows(VCTK)}
    males = [_clip(vctk[speaker]) for speaker in ("p226", "p227")]
    speaker = verifiers.get("resemblyzer")
    # The prompt given as a path is read and resampled the same way as an array prompt.
    results = speaker.evaluate([same, *males], 16000, prompts=Path(kathleen[0].audio_path))
    sims = [r.raw for r in results]
    assert sims[0] > max(sims[1:]) + 0.1, sims
    assert speaker.score([same], 16000, prompts=[reference]) == pytest.approx([sims[0]], abs=1e-5)
    assert speaker.similarity(reference, reference, 16000) == pytest.approx(1.0, abs=1e-5)


@needs_data
def test_dnsmos_clean_beats_noisy() -> None:
    clean = _clip(_rows(KATHLEEN)[2])
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=generator)
    # Heavy noise: 0 dB SNR.
    noisy = clean + noise * clean.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt()
    results = verifiers.get("dnsmos").evaluate([clean, noisy / noisy.abs().max()], 16000)
    clean_mos, noisy_mos = results[0].raw, results[1].raw
    assert isinstance(clean_mos, verifiers.MosScores)
    assert results[0].score == clean_mos.ovrl
    assert 1.0 <= noisy_mos.ovrl < clean_mos.ovrl - 1.0 <= 5.0, (clean_mos, noisy_mos)
    assert noisy_mos.bak < clean_mos.bak


# ---------------------------------------------------------------------------------------------
# Adapters for models whose weights cannot be downloaded here: tiny random models in the
# libraries' own save layouts, loaded through the same path a real checkpoint would take.


def _byte_level_alphabet() -> list[str]:
    # GPT-2-style byte-to-unicode map: printable bytes stand for themselves, the rest are shifted
    # above 255, so every byte has a visible one-character token and any text encodes.
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    shifted = 0
    alphabet = []
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return alphabet


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    folder = tmp_path_factory.mktemp("tiny_whisper")
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                "<|notimestamps|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>"]
    vocab = {token: i for i, token in enumerate(_byte_level_alphabet() + specials)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token="<|endoftext|>",
                                 bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    config = WhisperConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
                           max_target_positions=32, decoder_start_token_id=vocab["<|startoftranscript|>"],
                           eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
                           bos_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return folder


ECAPA_HPARAMS = """\
n_mels: 24
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [16, 16, 16, 16, 48]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 8
    lin_neurons: 12
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
"""


@pytest.fixture(scope="module")
def tiny_ecapa(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A speechbrain-layout folder (hyperparams.yaml + embedding_model.ckpt) of a random tiny ECAPA."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    folder = tmp_path_factory.mktemp("tiny_ecapa")
    (folder / "hyperparams.yaml").write_text(ECAPA_HPARAMS)
    torch.manual_seed(0)
    model = ECAPA_TDNN(input_size=24, channels=[16, 16, 16, 16, 48], kernel_sizes=[5, 3, 3, 3, 1],
                       dilations=[1, 2, 3, 4, 1], attention_channels=8, lin_neurons=12)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(state, folder / "embedding_model.ckpt")
    return folder, state


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    folder = tmp_path_factory.mktemp("tiny_wavlm")
    config = WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2, tdnn_dim=(8, 8), tdnn_kernel=(3, 1),
                         tdnn_dilation=(1, 1), xvector_output_dim=6, num_buckets=16, max_bucket_distance=50)
    torch.manual_seed(0)
    WavLMForXVector(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


def _noise_clips(seconds: tuple[float, ...], sample_rate: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [0.1 * torch.randn(int(s * sample_rate), generator=generator) for s in seconds]


def test_whisper_adapter_loads_local_tiny_model(tiny_whisper: Path) -> None:
    asr = verifiers.get("whisper", model=str(tiny_whisper), max_new_tokens=6, batch_size=2)
    clips = _noise_clips((1.0, 0.5, 0.7), 22050)  # 3 clips, 2 batches, resampled to 16 kHz
    results = asr.evaluate(clips, 22050, texts=["hello world", "a", "b c"])
    assert len(results) == 3
    for r in results:
        assert isinstance(r.transcript, str)
        assert math.isfinite(r.score) and math.isfinite(r.raw) and r.raw >= 0.0  # type: ignore[arg-type]
        assert r.score == pytest.approx(1.0 - r.raw)  # type: ignore[operator]
    # Greedy decoding is deterministic: the first clip alone gets the same transcript as in the batch.
    assert asr.transcribe(clips[:1], 22050) == [results[0].transcript]


def test_ecapa_adapter_loads_speechbrain_layout_folder(tiny_ecapa: tuple[Path, dict[str, torch.Tensor]]) -> None:
    folder, saved_state = tiny_ecapa
    speaker = verifiers.get("ecapa", source=folder)
    clips = _noise_clips((1.0, 0.6, 0.8), 16000)
    results = speaker.evaluate(clips, 16000, prompts=clips[0])
    assert len(results) == 3 and all(math.isfinite(r.score) and -1.0 <= r.score <= 1.0 + 1e-5 for r in results)
    assert results[0].raw == pytest.approx(1.0, abs=1e-4)  # a clip against itself
    # The checkpoint's weights were loaded, not a fresh random initialisation.
    from workbench.verifiers.speaker import _ecapa

    loaded = _ecapa(str(folder), None, "cpu").mods.embedding_model.state_dict()
    assert all(torch.equal(loaded[k], saved_state[k]) for k in saved_state)
    # A clip's embedding must not depend on the rest of its batch (search compares candidates
    # scored in different calls): not on other lengths, and not on equal-length batch mates.
    twin = 0.1 * torch.randn(clips[1].shape, generator=torch.Generator().manual_seed(5))
    alone = speaker.embed([clips[1]])[0]
    assert torch.allclose(alone, speaker.embed(clips)[1], atol=1e-5)
    assert torch.allclose(alone, speaker.embed([twin, clips[1]])[1], atol=1e-5)


def test_wavlm_adapter_loads_local_tiny_model(tiny_wavlm: Path) -> None:
    speaker = verifiers.get("wavlm", model=str(tiny_wavlm))
    clips = _noise_clips((1.0, 0.5, 0.8), 8000)
    scores = speaker.score(clips, 8000, prompts=[clips[0], clips[0], clips[2]])
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores[2] == pytest.approx(1.0, abs=1e-4)
    alone = speaker.embed([clips[1]])[0]
    assert torch.allclose(alone, speaker.embed(clips)[1], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Combinations


class _Fixed:
    """A verifier with given scores, to check the combination arithmetic exactly."""

    def __init__(self, name: str, values: list[float], score_range: tuple[float, float]) -> None:
        self.name, self.values, self.score_range = name, values, score_range

    def evaluate(self, audios, sample_rate, texts=None, prompts=None) -> list[VerifierResult]:  # type: ignore[no-untyped-def]
        assert len(audios) == len(self.values)
        return [VerifierResult(self.name, v, v) for v in self.values]

    def score(self, audios, sample_rate, texts=None, prompts=None) -> list[float]:  # type: ignore[no-untyped-def]
        return [r.score for r in self.evaluate(audios, sample_rate, texts, prompts)]


def test_weighted_normalises_and_weights() -> None:
    mos = _Fixed("mos", [5.0, 1.0, 3.0], (1.0, 5.0))
    sim = _Fixed("sim", [0.0, 1.0, 1.5], (0.0, 1.0))  # 1.5 is clipped to 1
    combined = verifiers.weighted([(mos, 3.0), (sim, 1.0)])
    results = combined.evaluate([torch.zeros(10)] * 3, 16000)
    assert [r.score for r in results] == pytest.approx([0.75, 0.25, 0.75 * 0.5 + 0.25])
    assert [c.verifier for c in results[0].components] == ["mos", "sim"]
    with pytest.raises(VerifierError, match="must be >= 0"):
        verifiers.weighted([(mos, -1.0)])


def test_lexicographic_breaks_near_ties_with_secondary() -> None:
    primary = [0.80, 0.795, 0.60, 0.79, 0.50]
    secondary = [0.1, 0.9, 1.0, 0.5, 0.0]
    scores = lexicographic_scores(primary, secondary, tolerance=0.02)
    order = sorted(range(5), key=lambda i: scores[i], reverse=True)
    # 0, 1, 3 are within 0.02 of the best and ordered by secondary; then 2, then 4.
    assert order == [1, 3, 0, 2, 4]
    assert lexicographic_scores(primary, secondary, tolerance=0.0) == primary
    combined = verifiers.lexicographic(_Fixed("a", primary, (0, 1)), _Fixed("b", secondary, (0, 1)), tolerance=0.02)
    assert combined.score([torch.zeros(10)] * 5, 16000) == pytest.approx(scores)


@needs_data
def test_weighted_of_real_verifiers_through_registry() -> None:
    rows = _rows(KATHLEEN)[3:5]
    clips = [_clip(r) for r in rows]
    combined = verifiers.get("weighted", weights={"pocketsphinx": 1.0, "resemblyzer": 1.0})
    results = combined.evaluate(clips, 16000, texts=[r.text for r in rows], prompts=_clip(_rows(KATHLEEN)[0]))
    for r in results:
        asr, spk = r.components
        expected = 0.5 * min(1.0, max(0.0, asr.score)) + 0.5 * min(1.0, max(0.0, spk.score))
        assert r.score == pytest.approx(expected) and 0.0 <= r.score <= 1.0
        assert asr.transcript
