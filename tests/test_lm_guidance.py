"""Classifier-free guidance on the text and the text dropout that trains for it (workbench.lm.guidance)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards
from workbench.lm.context_noise import noise_generator
from workbench.lm.data import Batch
from workbench.lm.generate import SamplingConfig, generate_speech_tokens, tts_prompt
from workbench.lm.guidance import (guidance_for, record_text_dropout, text_dropout_rows, text_guidance,
                                   with_text_dropout)
from workbench.lm.interleaved import end_of_unit_id, interleaved_processor, unit_ids
from workbench.lm.model import build_model, load_lm
from workbench.lm.text_tokenizer import CHARACTERS, char_tokenizer
from workbench.lm.train import LMTrainConfig, train_lm

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

K = 32


def _interleaved_model(seed: int = 0, dropout: float = 0.1):
    tok = char_tokenizer(K)
    tok.tokenizer.init_kwargs["sequence_layout"] = "interleaved"
    model = build_model("cpu-0.1m", tok.layout, seed=seed, max_position_embeddings=512)
    model.config.sequence_layout = "interleaved"
    model.config.end_of_unit_token_id = end_of_unit_id(tok.tokenizer)
    if dropout:
        record_text_dropout(model.config, text_guidance(tok.tokenizer), dropout)
    return model.eval(), tok


def test_the_text_free_twin_blanks_every_unit_and_nothing_else():
    model, tok = _interleaved_model()
    prompt = tts_prompt(tok.tokenizer, tok.layout, "a cat's hat")
    ids = torch.tensor(prompt.input_ids + tok.layout.speech_ids(torch.tensor([3, 4])).tolist()
                       + [end_of_unit_id(tok.tokenizer)] + unit_ids(tok.tokenizer, "b"))
    guidance = text_guidance(tok.tokenizer, 2.0)
    free = guidance.text_free(ids)
    units = torch.isin(ids, torch.tensor(unit_ids(tok.tokenizer, CHARACTERS)))
    assert int(units.sum()) == len(" a cat's hat ") + 1  # the prompt's units and the one after the frames
    assert bool((free[units] == tok.tokenizer.unk_token_id).all())
    assert torch.equal(free[~units], ids[~units])  # BOS, markers, speech, end-of-unit kept
    assert guidance_for(model, 2.0).blank_id == guidance.blank_id


def test_scale_one_is_the_conditional_and_scale_zero_the_text_free_distribution():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(3, 50, generator=g), torch.randn(3, 50, generator=g)
    tok = char_tokenizer(K)
    for scale, expected in ((1.0, cond), (0.0, uncond)):
        guided = text_guidance(tok.tokenizer, scale).combine(cond, uncond)
        torch.testing.assert_close(torch.softmax(guided, -1), torch.softmax(expected, -1))
    # w = 3 on log-probabilities: u + 3 (c - u)
    guided = text_guidance(tok.tokenizer, 3.0).combine(cond, uncond)
    c, u = torch.log_softmax(cond, -1), torch.log_softmax(uncond, -1)
    torch.testing.assert_close(guided, u + 3 * (c - u))


def _reference_guided_greedy(model, layout, prompt_ids, guidance, n_steps):
    """Guided greedy decoding the slow way: full forward passes of the sequence and its twin."""
    processor = interleaved_processor(model, layout)
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        for _ in range(n_steps):
            cond = model(input_ids=ids).logits[:, -1]
            uncond = model(input_ids=guidance.text_free(ids)).logits[:, -1]
            scores = processor(ids, guidance.combine(cond, uncond))
            token = scores.argmax(-1, keepdim=True)
            ids = torch.cat([ids, token], dim=1)
            if int(token) == layout.speech_generation_end:
                break
    return ids[0, len(prompt_ids):]


def test_guided_lean_loop_equals_full_forward_passes_of_the_sequence_and_its_twin():
    model, tok = _interleaved_model(seed=2)
    prompt = tts_prompt(tok.tokenizer, tok.layout, "on a mat")
    guidance = guidance_for(model, 2.5)
    expected = _reference_guided_greedy(model, tok.layout, prompt.input_ids, guidance, 120)
    out = generate_speech_tokens(model, tok.layout, [prompt],
                                 SamplingConfig(temperature=0.0, max_new_tokens=120, guidance_scale=2.5))
    got = out.codes[0]
    want = tok.layout.codes_from_ids(expected[tok.layout.is_speech(expected)])
    assert torch.equal(got, want[: got.numel()]) and got.numel() > 10
    # guidance changes what is drawn (the twin's prediction differs from the conditional one)
    plain = generate_speech_tokens(model, tok.layout, [prompt], SamplingConfig(temperature=0.0, max_new_tokens=120))
    assert not torch.equal(plain.codes[0], got)
    from workbench.lm.flops import generation_flops

    one_pass = generation_flops(model.config, out.prompt_lengths[0], out.n_new_tokens[0]).with_embedding
    assert out.flops == pytest.approx(2 * one_pass)  # every token paid twice: the sequence and its twin


def test_the_searchs_guided_decoding_follows_each_rows_own_twin_after_forking():
    from workbench.search.decoding import Sampler, extend, prefill

    model, tok = _interleaved_model(seed=3)
    prompt = tts_prompt(tok.tokenizer, tok.layout, "a red fog")
    guidance = guidance_for(model, 2.0)
    state = prefill(model, prompt.input_ids, guidance)
    sampled = Sampler(model, tok.layout, SamplingConfig(temperature=1.0, guidance_scale=2.0), seed=0)
    state = extend(model, state.select([0, 0, 0]), sampled, 12)  # three beams that differ
    assert len({tuple(state.sequences[r].tolist()) for r in range(3)}) > 1
    state = state.select([2, 0])  # reorder: each twin's cache row must follow its row
    greedy = Sampler(model, tok.layout, SamplingConfig(temperature=0.0, guidance_scale=2.0), seed=0)
    state = extend(model, state, greedy, 40)
    for row in range(2):
        history = state.sequences[row, : prompt.input_ids.__len__() + 12].tolist()
        want = _reference_guided_greedy(model, tok.layout, history, guidance, 40)
        got = state.sequences[row, len(history):len(history) + want.numel()]
        assert torch.equal(got, want), row


def test_guidance_on_a_model_trained_without_text_dropout_is_refused_by_name():
    model, tok = _interleaved_model(dropout=0.0)
    prompt = tts_prompt(tok.tokenizer, tok.layout, "a cat")
    with pytest.raises(ValueError, match="guidance_scale = 2.0 needs a model trained with text_dropout"):
        generate_speech_tokens(model, tok.layout, [prompt], SamplingConfig(guidance_scale=2.0, max_new_tokens=20))
    with pytest.raises(ValueError, match="guidance_scale"):
        text_guidance(tok.tokenizer, -1.0)


def test_text_dropout_blanks_whole_rows_at_the_requested_rate_and_keeps_labels():
    drop = text_dropout_rows(20_000, 0.15, noise_generator(0, 0, 1_000_000))
    p = 0.15
    assert abs(float(drop.float().mean()) - p) < 5 * math.sqrt(p * (1 - p) / drop.numel())
    tok = char_tokenizer(K)
    guidance = text_guidance(tok.tokenizer)
    prompt = torch.tensor(tts_prompt(tok.tokenizer, tok.layout, "the big dog").input_ids)
    ids = prompt.repeat(64, 1)
    batch = Batch(ids, torch.ones_like(ids), ids.clone(), [ids.shape[1]] * 64)
    out = with_text_dropout(batch, guidance, 0.5, noise_generator(1, 2, 3))
    blanked = (out.input_ids != ids).any(dim=1)
    assert 10 < int(blanked.sum()) < 54
    assert torch.equal(out.input_ids[blanked], guidance.text_free(ids[blanked]))  # all of a row, or none
    assert torch.equal(out.input_ids[~blanked], ids[~blanked])
    assert torch.equal(out.labels, ids)


def test_text_dropout_needs_the_character_front_end():
    with pytest.raises(ValueError, match="text_dropout = 0.1 needs text_frontend='chars'"):
        LMTrainConfig(text_dropout=0.1, text_frontend="bpe")
    with pytest.raises(ValueError, match="text_dropout"):
        LMTrainConfig(text_dropout=1.0, text_frontend="chars")


WORDS = "the a cat dog sat ran on in mat fog red big".split()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from workbench.align.forced import UnitAlignment, save_alignments, text_units

    rng = random.Random(0)
    utterances, alignments = [], {}
    for i in range(24):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        units = text_units(text)
        frames = [rng.randint(1, 3) for _ in units]
        codes = torch.tensor([(ord(u) + j) % K for u, n in zip(units, frames) for j in range(n)])
        uid = f"u{i:03d}"
        utterances.append(TokenizedUtterance(uid, "spk", text, "valid" if i % 4 == 0 else "train", codes))
        alignments[uid] = UnitAlignment(uid, units, tuple(frames))
    out = tmp_path_factory.mktemp("guidance_shards")
    write_token_shards(out, utterances, CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    save_alignments(out / "alignments.json", alignments, {}, {})
    return out


def test_a_run_with_text_dropout_resumes_exactly_and_its_model_can_be_guided(shards, tmp_path):
    from safetensors.torch import load_file

    config = for_profile(LMTrainConfig, "smoke", max_steps=10, eval_every=5, eval_batches=0, lr=5e-3,
                         checkpoint_every=5, progress=False, peak_flops_per_s=1e11, sequence_layout="interleaved",
                         text_frontend="chars", text_dropout=0.3)
    straight = train_lm(config, shards, run_id="straight", root=tmp_path)
    assert train_lm(config, shards, run_id="resumed", root=tmp_path, stop_after_steps=5).steps == 5
    resumed = train_lm(config, shards, run_id="resumed", root=tmp_path)
    a = load_file(str(Path(straight.model_dir) / "model.safetensors"))
    b = load_file(str(Path(resumed.model_dir) / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    lm = load_lm(straight.model_dir)
    assert lm.model.config.text_dropout == 0.3
    prompt = tts_prompt(lm.tokenizer, lm.layout, "the red cat")
    out = generate_speech_tokens(lm.model, lm.layout, [prompt],
                                 SamplingConfig(temperature=0.8, max_new_tokens=60, guidance_scale=2.0, seed=0))
    assert out.codes[0].numel() > 0
