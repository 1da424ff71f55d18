"""tokenize_corpus: shards with one code per frame, deterministic, resumable."""

from __future__ import annotations

import math

import pytest
import torch

from test_codec_train import make_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def codec(smoke_codec_model):
    from workbench.codec.interface import WorkbenchCodec

    return WorkbenchCodec(smoke_codec_model, source="tiny")


def test_tokenize_writes_shards_the_lm_reads(tmp_path, codec):
    from workbench.audio import audio_info
    from workbench.codec import tokenize_corpus
    from workbench.codec.data import corpus_utterances
    from workbench.data.token_shards import read_token_shards

    corpus = make_corpus(tmp_path / "corpus", 4, 1, 1)
    index = tokenize_corpus(codec, corpus, tmp_path / "tokens", batch_size=3, shard_size=4)
    assert index.n_utterances == 6 and len(index.shards) == 2
    info, items = read_token_shards(tmp_path / "tokens")
    assert (info.codebook_size, info.frame_rate_hz, info.sample_rate, info.codec) == (16, 50.0, 16000, "tiny")
    utterances = corpus_utterances(corpus)
    assert [i.utterance_id for i in items] == [u.utterance_id for u in utterances]
    for item, utterance in zip(items, utterances):
        n_samples = audio_info(utterance.audio_path).n_frames
        assert item.n_frames == math.ceil(n_samples / 320)
        assert item.split == utterance.split and item.text == utterance.text
        assert int(item.codes.max()) < 16
    # batching leaves codes away from the padded end unchanged (the encoder is convolutional)
    from workbench.audio import load_audio

    wav = load_audio(utterances[0].audio_path)[0]
    alone = codec.encode(wav, 16000)[0]
    assert torch.equal(alone[:-5], items[0].codes[:-5])


def test_tokenize_is_deterministic_and_skips_finished_work(tmp_path, codec):
    from workbench.codec import tokenize_corpus
    from workbench.data.token_shards import read_token_shards

    corpus = make_corpus(tmp_path / "corpus", 3, 1, 1)
    tokenize_corpus(codec, corpus, tmp_path / "a", batch_size=2)
    tokenize_corpus(codec, corpus, tmp_path / "b", batch_size=2)
    a, b = read_token_shards(tmp_path / "a")[1], read_token_shards(tmp_path / "b")[1]
    assert all(torch.equal(x.codes, y.codes) for x, y in zip(a, b))
    index_mtime = (tmp_path / "a" / "index.json").stat().st_mtime_ns
    tokenize_corpus(codec, corpus, tmp_path / "a", batch_size=2)
    assert (tmp_path / "a" / "index.json").stat().st_mtime_ns == index_mtime  # skipped
    # a different codec invalidates the folder
    with torch.no_grad():
        next(codec.model.parameters()).add_(1.0)
    tokenize_corpus(codec, corpus, tmp_path / "a", batch_size=2)
    assert (tmp_path / "a" / "index.json").stat().st_mtime_ns != index_mtime


def test_tokenize_resumes_per_shard_after_interruption(tmp_path, codec, monkeypatch):
    import workbench.codec.tokenize as T
    from workbench.data.token_shards import read_token_shards

    corpus = make_corpus(tmp_path / "corpus", 4, 1, 1)
    reference = T.tokenize_corpus(codec, corpus, tmp_path / "clean", batch_size=2, shard_size=2)
    real_encode, calls = T._encode_chunk, []

    def failing(codec_, chunk, batch_size):
        calls.append([u.utterance_id for u in chunk])
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real_encode(codec_, chunk, batch_size)

    monkeypatch.setattr(T, "_encode_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        T.tokenize_corpus(codec, corpus, tmp_path / "resumed", batch_size=2, shard_size=2)
    assert not (tmp_path / "resumed" / "index.json").exists()  # never looks finished
    calls.clear()
    monkeypatch.setattr(T, "_encode_chunk", lambda *a: (calls.append(a[1]), real_encode(*a))[1])
    index = T.tokenize_corpus(codec, corpus, tmp_path / "resumed", batch_size=2, shard_size=2)
    assert len(calls) == 2  # chunk 0 was reused; chunks 1 and 2 encoded
    assert index.n_utterances == reference.n_utterances == 6
    a, b = read_token_shards(tmp_path / "clean")[1], read_token_shards(tmp_path / "resumed")[1]
    assert all(torch.equal(x.codes, y.codes) for x, y in zip(a, b))
