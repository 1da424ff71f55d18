import hashlib
from pathlib import Path

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


def test_pretraining_corpus_gives_each_sentence_to_exactly_one_speaker():
    from collections import Counter

    from workbench.config import for_profile
    from workbench.data.synth import PretrainSynthConfig, assign_sentences, load_sentences

    config = for_profile(PretrainSynthConfig, "cpu")
    speakers = speaker_grid(config.n_speakers, config.pitch_range, config.rate_range, config.accents, config.variants)
    sentences = load_sentences(config)
    jobs = assign_sentences(config, sentences, speakers)
    assert len(jobs) == config.total_sentences == 20_000
    readings = Counter(text for _, (_, text) in jobs)
    assert max(readings.values()) == 1  # no sentence read twice, by anyone
    per_speaker = Counter(s.speaker for s, _ in jobs)
    assert len(per_speaker) == 96 and max(per_speaker.values()) - min(per_speaker.values()) <= 1
    assert len({s.voice for s in speakers}) == 88  # 8 accents x 11 variants, all used
    # a smaller corpus with the same seed is a prefix (so growing one reuses its audio); another seed differs
    smaller = assign_sentences(for_profile(PretrainSynthConfig, "cpu", total_sentences=500), sentences, speakers)
    assert smaller == jobs[:500]
    other = assign_sentences(for_profile(PretrainSynthConfig, "cpu", total_sentences=500, seed=1), sentences, speakers)
    assert [t for _, t in other] != [t for _, t in smaller]


def test_tiny_pretraining_corpus_synthesises_identically_twice_and_resumes(tmp_path):
    from workbench.config import for_profile
    from workbench.data.synth import PretrainSynthConfig

    config = for_profile(PretrainSynthConfig, "smoke")
    first = synth_corpus(config, tmp_path / "a", progress=False)
    second = synth_corpus(config, tmp_path / "b", progress=False)
    digest = lambda u: hashlib.sha256(open(u.audio_path, "rb").read()).hexdigest()  # noqa: E731
    assert len(first) == 24 and [digest(u) for u in first] == [digest(u) for u in second]
    assert len({u.text for u in first}) == 24 and len({u.speaker for u in first}) == 6
    # resumable: a finished WAV is kept as it is, a missing one is made again, nothing half-written remains
    kept, lost = Path(first[0].audio_path), Path(first[1].audio_path)
    mtime = kept.stat().st_mtime_ns
    lost.unlink()
    again = synth_corpus(config, tmp_path / "a", progress=False)
    assert [digest(u) for u in again] == [digest(u) for u in second]
    assert kept.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "a").rglob("*.tmp.wav"))


def test_bad_text_source_and_too_many_sentences_are_named_errors(tmp_path):
    import pytest

    from workbench.config import ConfigError, for_profile
    from workbench.data.synth import PretrainSynthConfig, assign_sentences, load_sentences

    with pytest.raises(ConfigError, match="text_source = 'fortune'"):
        load_sentences(for_profile(PretrainSynthConfig, "smoke", text_source="fortune"))
    path = tmp_path / "three.txt"
    path.write_text("One two three four.\nFive six seven eight.\nNine ten eleven twelve.\n")
    config = for_profile(PretrainSynthConfig, "smoke", text_source=str(path))
    with pytest.raises(ConfigError, match="total_sentences = 24: .* only 3"):
        assign_sentences(config, load_sentences(config), speaker_grid(2, (30, 70), (140, 190)))


def test_smoke_pretraining_corpus_is_prepared_under_its_registry_name_and_reused(tmp_path):
    from workbench.data.manifest import read_manifest
    from workbench.data.synth import prepare_synth_pretrain

    report = prepare_synth_pretrain("smoke", data_dir=tmp_path)
    assert report.corpus == "synth_pretrain" and report.n_kept == 24 and not report.skipped
    folder = tmp_path / "synth_pretrain"
    utterances = read_manifest(folder)
    train_speakers = {u.speaker for u in utterances if u.split == "train"}
    held_out = {u.speaker for u in utterances} - train_speakers
    assert len(held_out) == 2 and all(u.split == "test" for u in utterances if u.speaker in held_out)
    assert "each read by one of 6 voices" in (folder / "SOURCE.md").read_text()
    wavs = sorted((tmp_path / "raw").rglob("*.wav"))
    stamps = [w.stat().st_mtime_ns for w in wavs]
    prepare_synth_pretrain("smoke", data_dir=tmp_path)  # a rerun synthesises nothing again
    assert [w.stat().st_mtime_ns for w in wavs] == stamps


def test_a_changed_sentence_list_gets_a_fresh_raw_folder_and_a_resized_corpus_the_same(tmp_path):
    from workbench.config import for_profile
    from workbench.data.synth import PretrainSynthConfig, raw_synth_dir

    path = tmp_path / "sentences.txt"
    path.write_text("One two three four.\nFive six seven eight.\n")
    config = for_profile(PretrainSynthConfig, "smoke", text_source=str(path), total_sentences=2)
    before = raw_synth_dir(config, tmp_path)
    assert raw_synth_dir(for_profile(PretrainSynthConfig, "smoke", text_source=str(path), total_sentences=1),
                         tmp_path) == before  # a prefix of the same corpus: its audio is reused
    path.write_text("One two three four.\nFive six seven nine.\n")
    assert raw_synth_dir(config, tmp_path) != before
    assert raw_synth_dir(for_profile(PretrainSynthConfig, "smoke", text_source=str(path), total_sentences=2, seed=1),
                         tmp_path) != raw_synth_dir(config, tmp_path)
