"""Noise on the LM's input speech frames (LMTrainConfig.speech_input_noise, workbench.lm.context_noise)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards
from workbench.lm.context_noise import (corrupt_speech_inputs, noise_generator, replace_speech_inputs,
                                        sample_own_speech_codes, with_noisy_speech_inputs, with_own_speech_inputs)
from workbench.lm.data import Batch
from workbench.lm.layout import TokenLayout
from workbench.lm.train import LMTrainConfig, train_lm
from workbench.runs import read_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

K = 64
LAYOUT = TokenLayout(text_vocab_size=100, codebook_size=K)


def mixed_ids(n_rows: int = 8, n_cols: int = 2500, seed: int = 12345) -> torch.Tensor:
    """Rows that mix text ids, the layout's specials and speech ids, like a training batch."""
    # (not seed 0: noise_generator(0, 0, 0) would draw the very same speech codes)
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, LAYOUT.text_vocab_size, (n_rows, n_cols), generator=g)
    speech = torch.randint(0, K, (n_rows, n_cols), generator=g) + LAYOUT.speech_offset
    special = torch.full((n_rows, n_cols), LAYOUT.speech_generation_end)
    pick = torch.randint(0, 3, (n_rows, n_cols), generator=g)
    return torch.where(pick == 0, text, torch.where(pick == 1, speech, special))


def is_speech(ids: torch.Tensor) -> torch.Tensor:
    return (ids >= LAYOUT.speech_offset) & (ids < LAYOUT.speech_offset + K)


def test_only_speech_tokens_change_and_at_the_requested_rate():
    ids = mixed_ids()
    rate = 0.3
    noisy = corrupt_speech_inputs(ids, LAYOUT, rate, noise_generator(0, 0, 0))
    speech = is_speech(ids)
    assert torch.equal(noisy[~speech], ids[~speech])  # text, specials untouched
    assert bool(is_speech(noisy[speech]).all())  # a speech token stays a speech token
    # a replaced token keeps its value with probability 1/K, so it shows as changed with rate * (1 - 1/K)
    n = int(speech.sum())
    p = rate * (1 - 1 / K)
    changed = float((noisy[speech] != ids[speech]).float().mean())
    assert abs(changed - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_replacements_cover_the_codebook_uniformly():
    ids = torch.full((4, 20_000), LAYOUT.speech_offset)  # every input is code 0
    noisy = corrupt_speech_inputs(ids, LAYOUT, 1.0, noise_generator(3, 0, 0)) - LAYOUT.speech_offset
    counts = torch.bincount(noisy.flatten(), minlength=K).double()
    expected = noisy.numel() / K
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 130  # 63 degrees of freedom: p < 1e-6 beyond this


def test_the_noise_is_a_function_of_seed_step_and_micro_batch_only():
    ids = mixed_ids()
    a = corrupt_speech_inputs(ids, LAYOUT, 0.2, noise_generator(1, 7, 0))
    assert torch.equal(a, corrupt_speech_inputs(ids, LAYOUT, 0.2, noise_generator(1, 7, 0)))
    for other in (noise_generator(1, 8, 0), noise_generator(1, 7, 1), noise_generator(2, 7, 0)):
        assert not torch.equal(a, corrupt_speech_inputs(ids, LAYOUT, 0.2, other))


def test_labels_stay_true_and_rate_zero_is_the_identity():
    ids = mixed_ids(2, 50)
    batch = Batch(ids, torch.ones_like(ids), ids.clone(), [50, 50])
    noisy = with_noisy_speech_inputs(batch, LAYOUT, 0.5, noise_generator(0, 0, 0))
    assert torch.equal(noisy.labels, ids) and not torch.equal(noisy.input_ids, ids)
    assert with_noisy_speech_inputs(batch, LAYOUT, 0.0, noise_generator(0, 0, 0)) is batch


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_a_bad_noise_rate_is_named_in_the_error(value):
    with pytest.raises(ValueError, match="speech_input_noise"):
        LMTrainConfig(speech_input_noise=value)


def test_an_own_sample_at_a_position_comes_from_the_prediction_one_position_before():
    # logits at t - 1 that put all their mass on code (7 t) mod K: the draw at t must be that code
    batch, length = 3, 40
    planted = (7 * torch.arange(length)) % K
    logits = torch.full((batch, length, K), -1e4)
    logits[:, torch.arange(length - 1), planted[1:]] = 0.0
    codes = sample_own_speech_codes(logits, noise_generator(0, 0, 0))
    assert codes.shape == (batch, length)
    assert torch.equal(codes[:, 1:], planted[1:].expand(batch, -1))


def test_own_samples_follow_the_models_distribution():
    # one position's prediction, a known distribution over 8 codes, drawn 40,000 times (χ² test)
    probs = torch.tensor([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])
    logits = probs.log().view(1, 1, -1).expand(40_000, 2, -1)
    drawn = sample_own_speech_codes(logits, noise_generator(5, 0, 0))[:, 1]
    counts = torch.bincount(drawn, minlength=8).double()
    expected = probs.double() * drawn.numel()
    assert float(((counts - expected) ** 2 / expected).sum()) < 40  # 7 degrees of freedom: p < 1e-6 beyond


def test_own_samples_replace_exactly_the_speech_tokens_and_keep_the_labels():
    ids = mixed_ids(2, 300)
    codes = torch.randint(0, K, ids.shape, generator=torch.Generator().manual_seed(1))
    replaced = replace_speech_inputs(ids, LAYOUT, 1.0, codes, noise_generator(0, 0, 0))
    speech = is_speech(ids)
    assert torch.equal(replaced[~speech], ids[~speech])
    assert torch.equal(replaced[speech], codes[speech] + LAYOUT.speech_offset)
    batch = Batch(ids, torch.ones_like(ids), ids.clone(), [300, 300])
    mixed = with_own_speech_inputs(batch, LAYOUT, 0.5, noise_generator(0, 0, 0),
                                   lambda b: torch.zeros(*b.input_ids.shape, K))
    assert torch.equal(mixed.labels, ids) and not torch.equal(mixed.input_ids, ids)
    with pytest.raises(ValueError, match="shape"):
        replace_speech_inputs(ids, LAYOUT, 0.5, codes[:, :10], noise_generator(0, 0, 0))


def test_a_bad_noise_source_is_named_in_the_error():
    with pytest.raises(ValueError, match="speech_input_noise_source.*'ramdom'"):
        LMTrainConfig(speech_input_noise_source="ramdom")


# -- in training -------------------------------------------------------------------------------

WORDS = "the a cat dog sat ran on in mat fog red big small quick brown fox".split()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    rng = random.Random(0)
    utterances = []
    for i in range(32):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        codes = torch.tensor([ord(ch) % K for ch in text])
        utterances.append(TokenizedUtterance(f"u{i:03d}", "spk", text, "valid" if i % 4 == 0 else "train", codes))
    out = tmp_path_factory.mktemp("noise_shards")
    write_token_shards(out, utterances, CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    return out


def config(**overrides) -> LMTrainConfig:
    base = dict(max_steps=12, eval_every=4, eval_batches=0, lr=5e-3, checkpoint_every=4, progress=False,
                peak_flops_per_s=1e11, speech_input_noise=0.3)
    return for_profile(LMTrainConfig, "smoke", **{**base, **overrides})


def _weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_a_noisy_run_resumed_after_interruption_ends_with_the_uninterrupted_weights(shards, tmp_path):
    straight = train_lm(config(), shards, run_id="straight", root=tmp_path)
    partial = train_lm(config(), shards, run_id="resumed", root=tmp_path, stop_after_steps=6)
    assert not partial.completed and partial.steps == 6
    resumed = train_lm(config(), shards, run_id="resumed", root=tmp_path)
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    # and the noise did something: the same run without it ends elsewhere
    clean = _weights(train_lm(config(speech_input_noise=0.0), shards, run_id="clean", root=tmp_path).model_dir)
    assert any(not torch.allclose(clean[name], a[name], atol=1e-4) for name in a)


def test_validation_reads_clean_inputs(shards, tmp_path):
    from workbench.lm.data import collate, encode_utterances
    from workbench.lm.layout import IGNORE_INDEX
    from workbench.lm.model import load_lm
    from workbench.data.token_shards import read_token_shards

    result = train_lm(config(speech_input_noise=0.5), shards, run_id="v", root=tmp_path)
    logged = [m["valid_loss"] for m in read_metrics(result.run_dir) if "valid_loss" in m][-1]
    lm = load_lm(result.model_dir)
    _, utterances = read_token_shards(shards, split="valid")
    batch = collate(encode_utterances(utterances, lm.tokenizer, lm.layout, max_seq_len=10_000).sequences,
                    lm.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    targets = torch.nn.functional.pad(batch.labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    clean = float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                                    reduction="sum")) / int((targets != IGNORE_INDEX).sum())
    assert logged == pytest.approx(clean, abs=1e-5)


def test_a_run_on_its_own_samples_resumes_exactly_and_differs_from_uniform_noise(shards, tmp_path):
    own = config(speech_input_noise_source="model")
    straight = train_lm(own, shards, run_id="own", root=tmp_path)
    assert train_lm(own, shards, run_id="own-resumed", root=tmp_path, stop_after_steps=5).steps == 5
    resumed = train_lm(own, shards, run_id="own-resumed", root=tmp_path)
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    uniform = _weights(train_lm(config(), shards, run_id="uniform", root=tmp_path).model_dir)
    assert any(not torch.allclose(uniform[name], a[name], atol=1e-4) for name in a)
