"""The phoneme text front-end (workbench.lm.phonemes): espeak-ng IPA, cached, used the same way at
training, in the diagnostics and at inference."""

from __future__ import annotations

import json
import random
import subprocess

import pytest
import torch

from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards
from workbench.lm import phonemes
from workbench.lm.data import encode_utterances
from workbench.lm.generate import SamplingConfig, synthesize, tts_prompt
from workbench.lm.phonemes import (frontend_text, mark_phoneme_tokenizer, phoneme_cache_file, phonemize,
                                   phonemize_all, text_frontend_of)
from workbench.lm.text_tokenizer import load_lm_tokenizer, train_text_tokenizer
from workbench.lm.train import LMTrainConfig, train_lm

K = 64
WORDS = "the a cat dog sat ran on in mat fog red big small quick brown fox jumps over lazy".split()
TEXTS = ["The cat sat on the mat.", "Is it raining, he asked. Yes it is!", "Dr. Smith paid $3.50 on 12/3/1999",
         "...", "no punctuation here", "  Spaces   and\ttabs\nand a newline ", "Whittemore apologized; then left."]

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


@pytest.fixture
def fresh_cache(workdirs):
    """A data folder of its own (so its phoneme cache starts empty) and an empty in-process cache."""
    phonemes.clear_memory_cache()
    yield workdirs
    phonemes.clear_memory_cache()


def test_phonemize_gives_the_same_ipa_every_time_and_from_the_disk_cache(fresh_cache):
    first = phonemize("The cat sat on the mat.")
    assert first == phonemize("The cat sat on the mat.")
    assert "ð" in first and "k" in first and "." not in first  # IPA, punctuation dropped
    assert phonemize("  The cat sat\non the   mat. ") == first  # whitespace does not change the key
    phonemes.clear_memory_cache()  # a new process: only the disk cache is left
    assert phonemize("The cat sat on the mat.") == first
    cached = json.loads(phoneme_cache_file().read_text())
    assert cached["The cat sat on the mat."] == first
    assert phoneme_cache_file().name == f"espeak-ng-{phonemes.espeak_version()}-en-us.json"


def test_a_cached_text_does_not_run_espeak_again(fresh_cache, monkeypatch):
    warm = phonemize_all(TEXTS[:3])
    phonemes.clear_memory_cache()

    def refuse(*args, **kwargs):
        raise AssertionError(f"espeak-ng was run for a cached text: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert phonemize_all(TEXTS[:3]) == warm
    assert phonemize(TEXTS[0]) == warm[0]
    with pytest.raises(AssertionError, match="espeak-ng was run"):
        phonemize("a sentence nobody phonemized")


def test_one_espeak_process_for_many_texts_gives_what_each_text_gives_alone(fresh_cache, tmp_path, monkeypatch):
    batch = phonemize_all(TEXTS)
    assert len(batch) == len(TEXTS) and batch[3] == "" and all(batch[i] for i in (0, 1, 2, 4, 5, 6))
    assert len(set(batch)) == len(TEXTS)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "other"))  # an empty cache again
    phonemes.clear_memory_cache()
    assert [phonemize(t) for t in TEXTS] == batch
    assert phonemize_all(["", "   "]) == ["", ""]


def test_missing_espeak_names_the_binary_and_how_to_install_it(fresh_cache, tmp_path, monkeypatch):
    phonemes.espeak_version()  # the version is known; phonemizing a new text needs the binary
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="espeak-ng.*apt-get install espeak-ng"):
        phonemize("an uncached sentence")


def test_phonemes_are_refused_with_the_interleaved_layout_and_a_tokenizer_folder():
    with pytest.raises(ValueError, match="text_frontend='phonemes' needs sequence_layout='llasa'"):
        LMTrainConfig(text_frontend="phonemes", sequence_layout="interleaved")
    with pytest.raises(ValueError, match="no tokenizer folder"):
        LMTrainConfig(text_frontend="phonemes", tokenizer="/some/llama")


def test_a_phoneme_tokenizer_saves_its_front_end_and_prompts_carry_the_ipa_tokens(fresh_cache, tmp_path):
    lm_tok = train_text_tokenizer(phonemize_all(TEXTS), K, 300)
    mark_phoneme_tokenizer(lm_tok.tokenizer, "en-us")
    lm_tok.save(tmp_path / "tok")
    loaded = load_lm_tokenizer(tmp_path / "tok")
    tok, layout = loaded.tokenizer, loaded.layout
    assert text_frontend_of(tok) == "phonemes" and text_frontend_of(train_text_tokenizer(TEXTS, K, 300).tokenizer) == "bpe"
    text = "The quick brown fox jumps."
    ipa_ids = tok(phonemize(text), add_special_tokens=False)["input_ids"]
    assert tok.decode(ipa_ids) == phonemize(text) == frontend_text(tok, text)
    prompt = tts_prompt(tok, layout, text).input_ids
    start = prompt.index(layout.text_understanding_start) + 1
    assert prompt[start:start + len(ipa_ids)] == ipa_ids
    assert prompt[start + len(ipa_ids)] == layout.text_understanding_end
    # voice cloning: the prompt transcript is phonemized too, then the target
    cloned = tts_prompt(tok, layout, text, prompt_text="Red fog.", prompt_codes=torch.tensor([1, 2, 3])).input_ids
    both = tok(phonemize("Red fog.") + " " + phonemize(text), add_special_tokens=False)["input_ids"]
    assert cloned[start:start + len(both)] == both
    # training sequences read the same IPA
    utterance = TokenizedUtterance("u0", "spk", text, "train", torch.tensor([5, 6, 7]))
    [seq] = encode_utterances([utterance], tok, layout).sequences
    assert seq.input_ids[:len(prompt)] == prompt


def _utterances(n: int, seed: int = 0) -> list[TokenizedUtterance]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        codes = [v for ch in text for v in (ord(ch) % K, (ord(ch) * 7) % K)]
        out.append(TokenizedUtterance(f"u{i:04d}", "spk", text, "valid" if i % 10 == 0 else "train",
                                      torch.tensor(codes)))
    return out


def test_training_with_the_phoneme_front_end_saves_a_checkpoint_that_synthesizes(fresh_cache, tmp_path):
    from workbench.data.token_shards import read_token_shards
    from workbench.lm.diagnostics import lm_text_gain
    from workbench.lm.model import load_lm

    shards = tmp_path / "shards"
    write_token_shards(shards, _utterances(80), CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    config = for_profile(LMTrainConfig, "smoke", progress=False, peak_flops_per_s=1e11, token_budget=3_000,
                         lr=5e-3, text_frontend="phonemes")
    result = train_lm(config, shards, run_id="ph", root=tmp_path / "runs")
    lm = load_lm(result.model_dir)
    assert text_frontend_of(lm.tokenizer) == "phonemes" and lm.tokenizer.init_kwargs["phoneme_voice"] == "en-us"
    _, valid = read_token_shards(shards, split="valid")
    # the BPE was trained on IPA: its merges compress IPA (per UTF-8 byte) far more than spelling
    def tokens_per_byte(texts):
        return sum(len(lm.tokenizer.tokenize(t)) for t in texts) / sum(len(t.encode()) for t in texts)

    texts = [u.text for u in valid]
    assert tokens_per_byte(phonemize_all(texts)) < 0.6 * tokens_per_byte(texts)
    [said] = synthesize(lm.model, lm.tokenizer, lm.layout, "the red fox", chunk=False,
                        sampling=SamplingConfig(temperature=0.0, max_new_tokens=20))
    assert said.n_tokens_generated >= 1 and said.codes.numel() <= 20
    gain = lm_text_gain(lm, valid)
    assert gain.n_utterances == len(valid) and gain.loss_right == gain.loss_right  # finite, measured on IPA
