"""The workbench's own verifiers: CTC ASR (`workbench-asr`) and ECAPA speaker encoder
(`workbench-speaker`). Tiny models trained for seconds on real speech from the mirror: the loss
falls, a tiny set is overfitted, save/load and checkpoint resume are exact, finished runs are
reused, and the registered verifiers give finite scores of the right length. Lexicon beam
decoding, the word LM and codec-domain augmentation are checked on synthetic scores and a tiny
untrained codec."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from workbench import verifiers
from workbench.config import config_hash, for_profile
from workbench.data.manifest import Utterance, write_manifest
from workbench.data.readers import read_transcripts_tsv
from workbench.runs import read_metrics
from workbench.verifiers import VerifierError
from workbench.checkmodels import asr_train
import workbench.verifiers  # noqa: F401  (registers workbench-asr and workbench-speaker)
from workbench.checkmodels import asr_model as trained_asr
from workbench.checkmodels import speaker_model as trained_speaker
from workbench.checkmodels.asr_train import ASRTrainConfig, is_codec_set, load_clips, parse_set_name, train_asr
from workbench.checkmodels.speaker_train import SpeakerTrainConfig, equal_error_rate, train_speaker

DATA = Path("/work/shared/data")
pytestmark = pytest.mark.skipif(not (DATA / "kathleen" / "transcripts.tsv").exists(),
                                reason="shared speech data absent")


def _rows(corpus: str) -> list[Utterance]:
    return list(read_transcripts_tsv(DATA / corpus))


def _write_corpus(root: Path, corpus: str, rows: list[Utterance], split_of) -> None:
    """A prepared-corpus folder whose manifest points at the mirror's (16 kHz) audio in place."""
    import soundfile as sf

    utterances = []
    for u in rows:
        info = sf.info(u.audio_path)
        utterances.append(dataclasses.replace(u, duration_s=info.duration, sample_rate=info.samplerate,
                                              split=split_of(u.utterance_id, u.speaker)))
    write_manifest(root / corpus / "manifest.jsonl", utterances)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


def write_tiny_data(root: Path) -> Path:
    """Kathleen: the 6 shortest clips of the first 60 as train, 3 more as valid and test;
    VCTK: 4 speakers x 10 clips, p225 held out whole (test), 2 test clips of each other speaker."""
    kathleen = sorted(_rows("kathleen")[:60], key=lambda r: len(r.text))
    train_ids = {r.utterance_id for r in kathleen[:6]}
    valid_ids = {r.utterance_id for r in kathleen[6:9]}
    _write_corpus(root, "kathleen", kathleen[:12],
                  lambda u, s: "train" if u in train_ids else "valid" if u in valid_ids else "test")
    vctk = _rows("vctk")
    test_ids = {r.utterance_id for r in vctk if r.speaker != "p225"}
    test_ids = ({u for u in sorted(test_ids) if int(u.split("_")[1]) % 8 == 0}
                | {r.utterance_id for r in vctk if r.speaker == "p225"})
    _write_corpus(root, "vctk", vctk, lambda u, s: "test" if u in test_ids else "train")
    return root


def _asr_config(data: Path, **overrides) -> ASRTrainConfig:
    base = dict(data_dir=str(data), train_sets=("kathleen:train",), valid_set="kathleen:valid",
                eval_sets=("kathleen:test",), progress=False)
    return for_profile(ASRTrainConfig, "smoke", **{**base, **overrides})


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# ---------------------------------------------------------------------------------------------
# ASR


def test_asr_model_is_padding_invariant_and_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    spec = trained_asr.ASRModelSpec(width=32, n_blocks=2, kernel_size=5)
    model = trained_asr.CTCRecognizer(spec).eval()
    wavs = [torch.randn(16000) * 0.1, torch.randn(9000) * 0.1]
    alone = [model(*trained_asr.pad_features([trained_asr.log_mel_features(w, spec)]))[0][0] for w in wavs]
    batched, lengths = model(*trained_asr.pad_features([trained_asr.log_mel_features(w, spec) for w in wavs]))
    for i, single in enumerate(alone):
        assert torch.allclose(batched[i, :lengths[i]], single, atol=1e-5)
    trained_asr.save_model(model, tmp_path / "m.pt")
    loaded = trained_asr.load_model(tmp_path / "m.pt")
    assert loaded.spec == spec
    x, n = trained_asr.pad_features([trained_asr.log_mel_features(w, spec) for w in wavs])
    assert torch.equal(loaded(x, n)[0], model(x, n)[0])
    assert trained_asr.encode_text("it's a") == [trained_asr.ALPHABET.index(c) for c in "it's a"]
    with pytest.raises(ValueError, match="'7'"):
        trained_asr.encode_text("route 7")


def test_asr_overfits_tiny_set_and_verifier_scores(tiny_data, workdirs) -> None:
    # Six short Kathleen clips, no augmentation or dropout: the network must memorise them.
    config = _asr_config(tiny_data, width=96, n_blocks=2, max_steps=60, lr=5e-3, warmup_steps=10,
                         dropout=0.0, freq_masks=0, time_masks=0, batch_frames=20000, eval_every=1000,
                         checkpoint_every=1000, log_every=10)
    result = train_asr(config)
    losses = [m["loss"] for m in read_metrics(result.run_dir) if "loss" in m]
    assert losses[-1] < 0.3 * losses[0], losses
    assert not result.reused and result.steps == 60 and result.n_train_utterances == 6

    clips = load_clips("kathleen:train", tiny_data)
    wavs, texts = [c.wav for c in clips], [c.text for c in clips]
    verifier = verifiers.get("workbench-asr", model=result.run_dir)
    own = verifiers.corpus_wer(texts, verifier.transcribe(wavs, 16000))
    shuffled = texts[1:] + texts[:1]
    against_shuffled = verifiers.corpus_wer(shuffled, verifier.transcribe(wavs, 16000))
    assert own < 0.5 and own < against_shuffled - 0.4, (own, against_shuffled)
    scores = verifier.score(wavs, 16000, texts=texts)
    assert len(scores) == len(wavs) and all(map(torch.isfinite, torch.tensor(scores)))
    # Without model=: the newest finished asr run under $WORKBENCH_RUNS.
    default = verifiers.get("workbench-asr")
    assert default.model_path == Path(result.model_path).resolve()
    # 8 kHz input is resampled; a batch of one works.
    assert len(default.evaluate([wavs[0][::2]], 8000, texts=texts[:1])) == 1
    # Decoders: greedy and the lexicon alone also work; a model file without the run's word LM
    # beside it fails loudly with the default decoder.
    for decoder in ("greedy", "lexicon"):
        assert len(verifiers.get("workbench-asr", model=result.run_dir, decoder=decoder).transcribe(wavs, 16000)) == 6
    copy = trained_asr.save_model(trained_asr.load_model(result.run_dir), workdirs / "alone" / "m.pt")
    with pytest.raises(VerifierError, match="words.arpa"):
        verifiers.get("workbench-asr", model=copy).transcribe(wavs, 16000)
    with pytest.raises(VerifierError, match="decoder"):
        verifiers.get("workbench-asr", decoder="beam")
    # Same config again: the finished run is reused, not retrained.
    again = train_asr(config)
    assert again.reused and again.run_dir == result.run_dir and again.eval == result.eval


def test_asr_resume_matches_uninterrupted(tiny_data, workdirs) -> None:
    config = _asr_config(tiny_data, width=32, n_blocks=1, max_steps=8, checkpoint_every=100, eval_every=100,
                         log_every=2, max_eval_utterances=2)
    full = train_asr(config, run_id="full")
    partial = train_asr(config, run_id="split", stop_after_steps=3)
    assert partial.steps == 3 and not partial.completed
    resumed = train_asr(config, run_id="split")
    assert resumed.completed
    assert resumed.steps == full.steps == 8
    a, b = _state(Path(full.model_path)), _state(Path(resumed.model_path))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.final_train_loss == pytest.approx(full.final_train_loss, rel=1e-5)


def test_asr_drops_training_clips_whose_text_is_held_out(tiny_data, workdirs) -> None:
    # The test set read as a training set: every clip's text is held out, so nothing is left.
    config = _asr_config(tiny_data, train_sets=("kathleen:test",), max_steps=1)
    with pytest.raises(ValueError, match="no training utterances"):
        train_asr(config)


def test_verifiers_without_runs_fail_clearly(workdirs) -> None:
    audio = [torch.zeros(1600)]
    with pytest.raises(VerifierError, match="no finished 'asr' run"):
        verifiers.get("workbench-asr").score(audio, 16000, texts=["a"])
    with pytest.raises(VerifierError, match="no finished 'speaker' run"):
        verifiers.get("workbench-speaker").score(audio, 16000, prompts=audio[0])
    with pytest.raises(VerifierError, match="neither a model file"):
        verifiers.get("workbench-asr", model=workdirs / "nowhere").score(audio, 16000, texts=["a"])


def _spelled_log_probs(frames: list[dict[str, float]]) -> torch.Tensor:
    """(frames, vocab) log-probabilities: each frame's listed characters get their probability,
    the rest of the mass is spread over the other symbols."""
    vocab = trained_asr.ALPHABET
    rows = []
    for frame in frames:
        rest = (1.0 - sum(frame.values())) / (len(vocab) - len(frame))
        rows.append([frame.get(c, rest) for c in vocab])
    return torch.tensor(rows).log()


def test_lexicon_decoding_corrects_a_misspelling() -> None:
    # "hello world" with the o's and the space doubtful: greedy reads "hellu wurld", which no
    # dictionary holds; the lexicon search pays a little per frame and finds the words.
    frames = [{c: 0.9} for c in "hel"] + [{"_": 0.9}, {"l": 0.9}, {"u": 0.5, "o": 0.4}, {" ": 0.9}, {"w": 0.9},
                                          {"u": 0.5, "o": 0.4}] + [{c: 0.9} for c in "rld"]
    log_probs = _spelled_log_probs(frames)
    greedy = trained_asr.greedy_decode(log_probs[None], torch.tensor([len(frames)]))
    assert greedy == ["hellu wurld"]
    decode = trained_asr.lexicon_decoder()
    assert decode([log_probs]) == ["hello world"]
    assert trained_asr.lexicon_decoder() is decode  # built once per process
    words = trained_asr.lexicon_words()
    assert "hello" in words and "hellu" not in words and len(words) > 100_000
    assert not any("(" in w or "." in w for w in words)


def _read_arpa(path: Path) -> dict[tuple[str, ...], tuple[float, float]]:
    """{ngram: (log10 prob, log10 backoff)} of an ARPA file."""
    table, order = {}, 0
    for line in path.read_text().splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1:line.index("-")])
        elif order and line.strip() and not line.startswith("\\"):
            fields = line.split("\t")
            table[tuple(fields[1].split())] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
    return table


def test_word_lm_is_normalised_and_loads(tmp_path) -> None:
    texts = ["the cat sat", "the cat ran", "a dog sat", "the dog"]
    path = trained_asr.write_word_lm(texts, tmp_path / "words.arpa", order=2)
    table = _read_arpa(path)
    seen = [g[0] for g in table if len(g) == 1 and g[0] not in ("<s>", "<unk>")]
    n_unseen = len(set(trained_asr.lexicon_words()) - set(seen))
    unk = 10 ** table[("<unk>",)][0]
    # Unigrams, and each history's distribution (seen bigrams + back-off mass), sum to one.
    assert sum(10 ** table[(w,)][0] for w in seen) + n_unseen * unk == pytest.approx(1.0, abs=1e-4)
    for history in ("<s>", "the", "cat"):
        bow = 10 ** table[(history,)][1]
        total = sum(10 ** table[(history, w)][0] if (history, w) in table else bow * 10 ** table[(w,)][0]
                    for w in seen) + n_unseen * bow * unk
        assert total == pytest.approx(1.0, abs=1e-4), history
    assert 10 ** table[("the", "cat")][0] > 10 ** table[("the", "dog")][0]
    # KenLM reads it, and the LM picks the spelling that it has seen after "the".
    decode = trained_asr.lexicon_decoder(lm_path=path, settings=trained_asr.LexiconDecoding(lm_weight=2.0))
    frames = [{c: 0.9} for c in "the"] + [{" ": 0.9}, {"c": 0.9}, {"a": 0.5, "u": 0.45}, {"t": 0.9}]
    assert decode([_spelled_log_probs(frames)]) == ["the cat"]


def test_codec_set_names() -> None:
    assert parse_set_name("kathleen:test@codec") == parse_set_name("kathleen:test") == ("kathleen", "test")
    assert is_codec_set("kathleen:test@codec") and not is_codec_set("kathleen:test")
    with pytest.raises(ValueError, match="need a codec"):
        ASRTrainConfig(eval_sets=("kathleen:test@codec",))
    with pytest.raises(ValueError, match="codec_sets"):
        ASRTrainConfig(codec="x", codec_sets=("vctk:train",))
    with pytest.raises(ValueError, match="plain set names"):
        ASRTrainConfig(train_sets=("kathleen:train@codec",))
    with pytest.raises(ValueError, match="corpus:split"):
        ASRTrainConfig(eval_sets=("kathleen:tests@codec",))


def test_codec_augmentation_doubles_the_named_set(tiny_data, workdirs, smoke_codec_model) -> None:
    from workbench.codec.train import save_codec

    codec = save_codec(workdirs / "codec" / "codec.pt", smoke_codec_model, step=0)
    clips = load_clips("kathleen:train", tiny_data)[:2]
    resynthesised = asr_train.resynthesize(clips, str(codec), progress=False)
    assert [c.utterance_id for c in resynthesised] == [c.utterance_id + "@codec" for c in clips]
    assert all(r.wav.shape == c.wav.shape and not torch.equal(r.wav, c.wav) for r, c in zip(resynthesised, clips))

    config = _asr_config(tiny_data, codec=str(codec), train_sets=("kathleen:train", "vctk:train"),
                         eval_sets=("kathleen:test", "kathleen:test@codec"), width=32, n_blocks=1, max_steps=2,
                         max_eval_utterances=2, max_train_utterances=0)
    result = train_asr(config)
    start = next(m for m in read_metrics(result.run_dir) if m.get("event") == "start")
    assert result.n_codec_utterances == 6  # the 6 Kathleen training clips, not VCTK's
    n_vctk = len(load_clips("vctk:train", tiny_data))
    assert result.n_train_utterances == start["n_train_features"] == 6 + n_vctk + 6
    assert set(result.eval) == {"kathleen:valid", "kathleen:test", "kathleen:test@codec"}
    assert all(e.lexicon_lm_wer is not None for e in result.eval.values())
    assert (Path(result.run_dir) / trained_asr.WORD_LM_FILE).is_file()
    # Another codec is another run.
    assert config_hash(config) != config_hash(dataclasses.replace(config, codec=str(workdirs / "other")))


def test_config_rejects_bad_set_names() -> None:
    with pytest.raises(ValueError, match="corpus:split"):
        ASRTrainConfig(eval_sets=("kathleen-test",))
    with pytest.raises(ValueError, match="speed_factors"):
        ASRTrainConfig(speed_factors=(3.0,))


# ---------------------------------------------------------------------------------------------
# Speaker


def test_equal_error_rate() -> None:
    assert equal_error_rate([0.9, 0.8, 0.7], [0.1, 0.2, 0.3]) == 0.0
    assert equal_error_rate([0.1, 0.2], [0.8, 0.9]) == 1.0
    rng = random.Random(0)
    same = [rng.random() for _ in range(2000)]
    assert abs(equal_error_rate(same, [rng.random() for _ in range(2000)]) - 0.5) < 0.05
    assert equal_error_rate([0.6, 0.9], [0.5, 0.7]) == pytest.approx(0.5)


def _speaker_config(data: Path, **overrides) -> SpeakerTrainConfig:
    base = dict(data_dir=str(data), corpora=("kathleen", "vctk", "synth"), progress=False)
    return for_profile(SpeakerTrainConfig, "smoke", **{**base, **overrides})


def test_speaker_training_learns_resumes_and_scores(tiny_data, workdirs, tmp_path) -> None:
    # "synth" is not prepared in tiny_data: skipped, and listed as not used.
    config = _speaker_config(tiny_data, max_steps=30, lr=3e-3, margin_ramp_steps=15, log_every=5,
                             checkpoint_every=100)
    result = train_speaker(config)
    assert result.corpora_used == ("kathleen", "vctk")
    assert result.n_train_speakers == 4 and result.unseen_speakers == ("vctk/p225",)
    metrics = [m for m in read_metrics(result.run_dir) if "loss" in m]
    # Early logs run with a small margin, later ones with the full one, so compare accuracy too.
    assert metrics[-1]["loss"] < metrics[0]["loss"] and metrics[-1]["accuracy"] >= 0.75, metrics
    assert set(result.eval) >= {"all", "seen", "unseen", "within_corpus"}
    assert all(0.0 <= stats.eer <= 1.0 for stats in result.eval.values())
    # Held-out clips of trained speakers; unseen speakers need more than 30 steps on 4 voices.
    assert result.eval["seen"].mean_same_cosine > result.eval["seen"].mean_different_cosine

    # Save/load round trip: the same embeddings.
    model = trained_speaker.load_model(result.run_dir)
    clips = load_clips("vctk:test", tiny_data)[:4]
    wavs = [c.wav for c in clips]
    trained_speaker.save_model(model, tmp_path / "copy.pt")
    copy = trained_speaker.load_model(tmp_path / "copy.pt")
    assert torch.equal(model.embed(wavs), copy.embed(wavs))

    verifier = verifiers.get("workbench-speaker", model=result.run_dir)
    scores = verifier.score(wavs, 16000, prompts=wavs[0])
    assert len(scores) == 4 and all(map(torch.isfinite, torch.tensor(scores)))
    assert scores[0] == pytest.approx(1.0, abs=1e-5)  # a clip against itself
    assert verifiers.get("workbench-speaker").model_path == Path(result.model_path).resolve()
    assert train_speaker(config).reused


def test_speaker_resume_matches_uninterrupted(tiny_data, workdirs) -> None:
    config = _speaker_config(tiny_data, max_steps=4, checkpoint_every=100, log_every=1,
                             max_eval_clips_per_speaker=1)
    full = train_speaker(config, run_id="full")
    partial = train_speaker(config, run_id="split", stop_after_steps=2)
    assert partial.steps == 2 and not partial.completed
    resumed = train_speaker(config, run_id="split")
    assert resumed.completed
    a, b = _state(Path(full.model_path)), _state(Path(resumed.model_path))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_registered_names() -> None:
    assert {"workbench-asr", "workbench-speaker"} <= set(verifiers.available())
    assert dataclasses.is_dataclass(asr_train.ASRTrainResult)
