import hashlib

import torch

from workbench.audio import load_audio
from workbench.data.synth import SynthConfig, read_arctic_prompts, speaker_grid, synth_corpus


def test_arctic_prompts_parse(mirror):
    prompts = read_arctic_prompts(mirror / "cmu_arctic" / "cmuarctic.data")
    assert len(prompts) == 1132
    assert prompts[0] == ("arctic_a0001", "Author of the danger trail, Philip Steels, etc.")


def test_speaker_grid_is_distinct():
    speakers = speaker_grid(12, (30, 70), (140, 190))
    assert len({(s.voice, s.pitch, s.rate_wpm) for s in speakers}) == 12
    assert all(30 <= s.pitch <= 70 and 140 <= s.rate_wpm <= 190 for s in speakers)


def test_synth_is_deterministic_and_speakers_differ(tmp_path, mirror):
    config = SynthConfig(n_speakers=2, n_sentences=2)
    sentences = mirror / "cmu_arctic" / "cmuarctic.data"
    first = synth_corpus(config, tmp_path / "a", sentences, progress=False)
    second = synth_corpus(config, tmp_path / "b", sentences, progress=False)
    digest = lambda u: hashlib.sha256(open(u.audio_path, "rb").read()).hexdigest()  # noqa: E731
    assert [digest(u) for u in first] == [digest(u) for u in second]
    assert len({u.speaker for u in first}) == 2
    # the two voices read different sentences and sound different: compare mean pitch-ish energy spectra
    a, rate = load_audio(first[0].audio_path)
    b, _ = load_audio(first[2].audio_path)
    spectrum = lambda w: torch.fft.rfft(w[0, :rate]).abs()[: rate // 4]  # noqa: E731
    assert rate == 22050 and a.shape[-1] > rate // 2
    assert not torch.allclose(spectrum(a), spectrum(b), rtol=0.1)
    assert (tmp_path / "a" / "transcripts.tsv").read_text().count("\n") == 4
