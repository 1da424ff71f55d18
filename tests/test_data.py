import json
import shutil

import pytest
import torch

from workbench.audio import audio_info, load_audio, save_audio
from workbench.config import for_profile
from workbench.data.corpora import find_source
from workbench.data.manifest import read_manifest
from workbench.data.prepare import DataConfig, prepare_corpus
from workbench.data.readers import detect_layout, read_corpus
from workbench.data.splits import assign_splits, split_counts


def _kathleen_rows(mirror, n):
    return list(read_corpus(mirror / "kathleen", "transcripts"))[:n]


@pytest.fixture
def messy_corpus(tmp_path, mirror):
    """Five good Kathleen clips plus one corrupt file, one empty file, one missing transcript."""
    root = tmp_path / "messy"
    (root / "audio").mkdir(parents=True)
    rows = []
    for u in _kathleen_rows(mirror, 6):
        shutil.copy(u.audio_path, root / "audio" / f"{u.utterance_id}.flac")
        rows.append(f"audio/{u.utterance_id}.flac\t{u.speaker}\t{u.utterance_id}\t{u.text}")
    (root / "audio" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage garbage")
    (root / "audio" / "empty.wav").write_bytes(b"")
    rows.append("audio/corrupt.wav\tkathleen\tcorrupt\tA corrupt file.")
    rows.append("audio/empty.wav\tkathleen\tempty\tAn empty file.")
    rows[5] = rows[5].rsplit("\t", 1)[0] + "\t"  # the sixth good clip loses its transcript
    (root / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_bad_files_are_reported_and_skipped(messy_corpus, workdirs):
    config = for_profile(DataConfig, "cpu", corpus="messy", source=str(messy_corpus))
    report = prepare_corpus(config, progress=False)
    reasons = {p.utterance_id: p.reason for p in report.skipped}
    assert set(reasons) == {"corrupt", "empty", "arctic_a0006"}
    assert "unreadable" in reasons["corrupt"] or "error" in reasons["corrupt"]
    assert "empty" in reasons["empty"] and "0 bytes" in reasons["empty"]
    assert reasons["arctic_a0006"] == "empty transcript"
    assert report.n_kept == 5 and report.n_found == 8
    manifest = read_manifest(report.out_dir)
    assert [u.utterance_id for u in manifest] == [f"arctic_a000{i}" for i in range(1, 6)]
    saved = json.loads((workdirs / "data" / "messy" / "prepare_report.json").read_text())
    assert len(saved["skipped"]) == 3


def test_stereo_and_high_rate_are_converted_low_rate_and_short_skipped(tmp_path, workdirs, mirror):
    root = tmp_path / "odd"
    wav, _ = load_audio(mirror / "kathleen" / "flac16k" / "arctic_a0001.flac")
    save_audio(root / "stereo.wav", torch.cat([wav, wav]), 16000)
    save_audio(root / "rate44.wav", torch.nn.functional.interpolate(wav[None], scale_factor=2.75)[0], 44000)
    save_audio(root / "rate8.wav", wav[:, ::2], 8000)
    save_audio(root / "short.wav", wav[:, :1600], 16000)
    rows = [f"{n}.wav\tspk\t{n}\tSome words here." for n in ("stereo", "rate44", "rate8", "short")]
    (root / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    report = prepare_corpus(for_profile(DataConfig, "cpu", corpus="odd", source=str(root)), progress=False)
    converted = {p.utterance_id: p.reason for p in report.converted}
    skipped = {p.utterance_id: p.reason for p in report.skipped}
    assert "mono" in converted["stereo"] and "44000 -> 16000" in converted["rate44"]
    assert "below target" in skipped["rate8"] and "too short" in skipped["short"]
    for u in read_manifest(report.out_dir):
        info = audio_info(u.resolve(report.out_dir))
        assert (info.sample_rate, info.n_channels) == (16000, 1)
        assert abs(info.duration_s - u.duration_s) < 1e-3


@pytest.mark.slow
def test_kathleen_full_corpus(mirror, workdirs):
    report = prepare_corpus(for_profile(DataConfig, "cpu"), progress=False)
    assert report.n_found == 1132 and report.n_kept == 1132 and not report.skipped
    assert sum(report.split_counts.values()) == 1132
    assert report.split_counts["valid"] > 10 and report.split_counts["test"] > 30
    again = prepare_corpus(for_profile(DataConfig, "cpu"), progress=False)  # reuses converted files
    assert again.split_counts == report.split_counts


def test_multi_speaker_corpus_holds_out_whole_speakers(mirror, workdirs):
    report = prepare_corpus(for_profile(DataConfig, "cpu", corpus="vctk"), progress=False)
    manifest = read_manifest(report.out_dir)
    test_speakers = {u.speaker for u in manifest if u.split == "test"}
    train_speakers = {u.speaker for u in manifest if u.split == "train"}
    assert len(test_speakers - train_speakers) == 1 and len(train_speakers) == 3


def test_splits_do_not_move_when_utterances_are_added(mirror):
    utterances = list(read_corpus(mirror / "kathleen"))
    small = assign_splits(utterances[:300], 0.05, 0.05)
    large = assign_splits(utterances, 0.05, 0.05)
    by_id = {u.utterance_id: u.split for u in large}
    assert all(by_id[u.utterance_id] == u.split for u in small)
    counts = split_counts(large)
    assert 0.02 < counts["test"] / len(large) < 0.08


def test_missing_corpus_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_DATA_MIRROR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        find_source("libritts")
    message = str(error.value)
    assert str(tmp_path / "libritts") in message and "--source" in message and "CC BY 4.0" in message


def test_unknown_corpus_suggests_known_one():
    with pytest.raises(KeyError, match="did you mean 'kathleen'"):
        find_source("kathlen")


def _copy_clip(mirror, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    wav, rate = load_audio(mirror / "kathleen" / "flac16k" / "arctic_a0001.flac")
    save_audio(target, wav, rate)


def test_ljspeech_layout(tmp_path, mirror):
    root = tmp_path / "LJSpeech-1.1"
    _copy_clip(mirror, root / "wavs" / "LJ001-0001.wav")
    (root / "metadata.csv").write_text("LJ001-0001|Printing, in 1850|Printing, in eighteen fifty\n")
    assert detect_layout(root) == "ljspeech"
    [u] = read_corpus(root)
    assert u.text == "Printing, in eighteen fifty" and u.speaker == "LJ" and u.audio_path.endswith("LJ001-0001.wav")


def test_libritts_layout(tmp_path, mirror):
    folder = tmp_path / "train-clean-100" / "19" / "198"
    _copy_clip(mirror, folder / "19_198_000000_000000.wav")
    (folder / "19_198_000000_000000.normalized.txt").write_text("Some text.")
    assert detect_layout(tmp_path / "train-clean-100") == "libritts"
    [u] = read_corpus(tmp_path / "train-clean-100")
    assert (u.speaker, u.text) == ("19", "Some text.")


def test_librispeech_layout(tmp_path, mirror):
    folder = tmp_path / "test-clean" / "1089" / "134686"
    _copy_clip(mirror, folder / "1089-134686-0000.flac")
    (folder / "1089-134686.trans.txt").write_text("1089-134686-0000 HE HOPED THERE WOULD BE STEW\n")
    [u] = read_corpus(tmp_path / "test-clean")
    assert (u.utterance_id, u.speaker, u.text) == ("1089-134686-0000", "1089", "HE HOPED THERE WOULD BE STEW")


def test_generic_tsv_and_jsonl_manifests(tmp_path, mirror):
    _copy_clip(mirror, tmp_path / "clips" / "a.wav")
    (tmp_path / "m.tsv").write_text("path\ttranscript\tspeaker_id\nclips/a.wav\tHello there.\ts1\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "clips/a.wav", "text": "Hello there."}) + "\n")
    [from_tsv] = read_corpus(tmp_path / "m.tsv")
    [from_jsonl] = read_corpus(tmp_path / "m.jsonl")
    assert from_tsv.speaker == "s1" and from_jsonl.speaker == "unknown"
    assert from_tsv.audio_path == from_jsonl.audio_path == str(tmp_path / "clips" / "a.wav")
    assert from_tsv.utterance_id == "a"


def test_manifest_without_audio_column_names_accepted_columns(tmp_path):
    (tmp_path / "m.tsv").write_text("name\ttext\nx\thello\n")
    with pytest.raises(ValueError, match="no audio path column"):
        list(read_corpus(tmp_path / "m.tsv"))


def test_non_unique_ids_fall_back_to_paths(mirror):
    """FSDD's id column holds the digit; every clip must still be its own utterance."""
    utterances = list(read_corpus(mirror / "fsdd"))
    assert len(utterances) == 3000 and len({u.utterance_id for u in utterances}) == 3000
    assert utterances[0].utterance_id == "recordings_0_george_0" and utterances[0].text == "zero"
