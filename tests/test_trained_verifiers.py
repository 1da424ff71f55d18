"""The workbench's own verifiers: CTC ASR (`workbench-asr`) and ECAPA speaker encoder
(`workbench-speaker`). Tiny models trained for seconds on real speech from the mirror: the loss
falls, a tiny set is overfitted, save/load and checkpoint resume are exact, finished runs are
reused, and the registered verifiers give finite scores of the right length."""

from __future__ import annotations

import csv
import dataclasses
import random
from pathlib import Path

import pytest
import torch

from workbench import verifiers
from workbench.config import for_profile
from workbench.data.manifest import Utterance, write_manifest
from workbench.runs import read_metrics
from workbench.verifiers import VerifierError
from workbench.verifiers import train_asr as asr_train
from workbench.verifiers import trained_asr, trained_speaker  # noqa: F401  (registers the verifiers)
from workbench.verifiers.train_asr import ASRTrainConfig, load_clips, train_asr
from workbench.verifiers.trained_speaker import SpeakerTrainConfig, equal_error_rate, train_speaker

DATA = Path("/work/shared/data")
pytestmark = pytest.mark.skipif(not (DATA / "kathleen" / "transcripts.tsv").exists(),
                                reason="shared speech data absent")


def _rows(corpus: str) -> list[list[str]]:
    with open(DATA / corpus / "transcripts.tsv", newline="") as handle:
        return [row for row in csv.reader(handle, delimiter="\t") if row]


def _write_corpus(root: Path, corpus: str, rows: list[list[str]], split_of) -> None:
    """A prepared-corpus folder whose manifest points at the mirror's (16 kHz) audio in place."""
    import soundfile as sf

    utterances = []
    for path, speaker, utterance_id, text in rows:
        audio = DATA / corpus / path
        info = sf.info(str(audio))
        utterances.append(Utterance(utterance_id, str(audio), text, speaker, info.duration, info.samplerate,
                                    split_of(utterance_id, speaker)))
    write_manifest(root / corpus / "manifest.jsonl", utterances)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Kathleen: the 6 shortest clips of the first 60 as train, 3 more as valid and test;
    VCTK: 4 speakers x 10 clips, p225 held out whole (test), 2 test clips of each other speaker."""
    root = tmp_path_factory.mktemp("data")
    kathleen = sorted(_rows("kathleen")[:60], key=lambda r: len(r[3]))
    train_ids = {r[2] for r in kathleen[:6]}
    valid_ids = {r[2] for r in kathleen[6:9]}
    _write_corpus(root, "kathleen", kathleen[:12],
                  lambda u, s: "train" if u in train_ids else "valid" if u in valid_ids else "test")
    vctk = _rows("vctk")
    test_ids = {r[2] for r in vctk if r[1] != "p225"}
    test_ids = {u for u in sorted(test_ids) if int(u.split("_")[1]) % 8 == 0} | {r[2] for r in vctk if r[1] == "p225"}
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
    # Same config again: the finished run is reused, not retrained.
    again = train_asr(config)
    assert again.reused and again.run_dir == result.run_dir and again.eval == result.eval


def test_asr_resume_matches_uninterrupted(tiny_data, workdirs) -> None:
    config = _asr_config(tiny_data, width=32, n_blocks=1, max_steps=8, checkpoint_every=100, eval_every=100,
                         log_every=2, max_eval_utterances=2)
    full = train_asr(config, run_id="full")
    with pytest.raises(KeyboardInterrupt):
        train_asr(config, run_id="split", stop_after_steps=3)
    resumed = train_asr(config, run_id="split")
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
    with pytest.raises(KeyboardInterrupt):
        train_speaker(config, run_id="split", stop_after_steps=2)
    resumed = train_speaker(config, run_id="split")
    a, b = _state(Path(full.model_path)), _state(Path(resumed.model_path))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_registered_names() -> None:
    assert {"workbench-asr", "workbench-speaker"} <= set(verifiers.available())
    assert dataclasses.is_dataclass(asr_train.ASRTrainResult)
