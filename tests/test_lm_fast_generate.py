"""The lean sampling loop (workbench.lm.fast_generate) gives `model.generate`'s tokens."""

from __future__ import annotations

import random

import pytest
import torch

from workbench.lm.generate import SamplingConfig, _left_pad, _SpeechOnly, generate_speech_tokens, uses_fast_loop
from workbench.lm.fast_generate import fast_generate, supports_fast_generation
from workbench.lm.layout import build_inference_prompt
from workbench.lm.model import build_model
from workbench.lm.text_tokenizer import train_text_tokenizer

K = 200
WORDS = "the a cat dog sat ran on in mat fog red big small quick brown fox jumps over lazy".split()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def setup():
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(40)]
    lm_tok = train_text_tokenizer(texts, K, text_vocab_size=300)
    tok, layout = lm_tok.tokenizer, lm_tok.layout
    # cpu-0.3m: 3 layers, 6 query heads sharing 2 key/value heads (the grouped path)
    model = build_model("cpu-0.3m", layout, seed=0, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    with torch.no_grad():  # a sharper output distribution than at init: fewer near-ties for argmax
        model.lm_head.weight.mul_(4.0)
    prompts = [build_inference_prompt(tok, layout, t) for t in texts[:3]]
    assert len({len(p) for p in prompts}) == 3, "the prompts must differ in length (left padding)"
    return model.eval(), tok, layout, prompts


def _reference(model, ids, mask, n, end, pad, processors, **kwargs):
    from transformers import LogitsProcessorList

    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, max_length=None,
                              eos_token_id=end, pad_token_id=pad, logits_processor=LogitsProcessorList(processors),
                              **kwargs)


def test_greedy_tokens_equal_model_generate_with_left_padded_prompts(setup):
    model, tok, layout, prompts = setup
    ids, mask = _left_pad(prompts, tok.pad_token_id)
    end, pad = layout.speech_generation_end, tok.pad_token_id
    speech_only = [_SpeechOnly(layout, model.config.vocab_size)]
    want = _reference(model, ids, mask, 60, end, pad, speech_only, do_sample=False, temperature=None,
                      top_p=None, top_k=None)
    got = fast_generate(model, ids, mask, max_new_tokens=60, eos_token_id=end, pad_token_id=pad,
                        do_sample=False, processors=speech_only)
    assert got.shape == want.shape and torch.equal(got, want)
    # no mask given: the end token is allowed anywhere; the text tokens the random model picks
    # are a second check that the logits, not only the speech-only argmax, agree
    want = _reference(model, ids, mask, 30, end, pad, [], do_sample=False, temperature=None, top_p=None, top_k=None)
    got = fast_generate(model, ids, mask, max_new_tokens=30, eos_token_id=end, pad_token_id=pad, do_sample=False)
    assert torch.equal(got, want)


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (20, 0.9)])
def test_seeded_best_of_8_samples_equal_model_generate(setup, top_k, top_p):
    model, tok, layout, prompts = setup
    ids, mask = _left_pad(prompts[:1], tok.pad_token_id)
    sampling = SamplingConfig(temperature=0.8, top_k=top_k, top_p=top_p, num_return_sequences=8, seed=11,
                              max_new_tokens=50)
    fast = generate_speech_tokens(model, layout, prompts[:1], sampling, pad_token_id=tok.pad_token_id, fast=True)
    slow = generate_speech_tokens(model, layout, prompts[:1], sampling, pad_token_id=tok.pad_token_id, fast=False)
    assert [c.tolist() for c in fast.codes] == [c.tolist() for c in slow.codes]
    assert fast.ended == slow.ended and fast.n_new_tokens == slow.n_new_tokens
    assert fast.flops == pytest.approx(slow.flops)
    assert len({tuple(c.tolist()) for c in fast.codes}) > 4  # 8 different samples, not one repeated


def test_greedy_batch_of_prompts_gives_the_same_speech_as_model_generate(setup):
    model, tok, layout, prompts = setup
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=40)
    fast = generate_speech_tokens(model, layout, prompts, greedy, pad_token_id=tok.pad_token_id)
    slow = generate_speech_tokens(model, layout, prompts, greedy, pad_token_id=tok.pad_token_id, fast=False)
    assert [c.tolist() for c in fast.codes] == [c.tolist() for c in slow.codes]


def test_the_loop_is_the_default_for_llama_and_falls_back_where_it_does_not_apply(setup):
    model, tok, layout, prompts = setup
    assert supports_fast_generation(model) and uses_fast_loop(model, SamplingConfig())
    assert not uses_fast_loop(model, SamplingConfig(repetition_penalty=1.2))
    with pytest.raises(ValueError, match="fast=True"):
        generate_speech_tokens(model, layout, prompts[:1], SamplingConfig(repetition_penalty=1.2, max_new_tokens=4),
                               pad_token_id=tok.pad_token_id, fast=True)
    saved = model.generation_config.no_repeat_ngram_size
    model.generation_config.no_repeat_ngram_size = 3
    try:
        assert not uses_fast_loop(model, SamplingConfig())
    finally:
        model.generation_config.no_repeat_ngram_size = saved


def test_cached_weights_follow_training_between_generations(setup):
    """The loop's fused weights are rebuilt when the model's weights change in place."""
    model, tok, layout, prompts = setup
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=20, speech_only=False)
    before = generate_speech_tokens(model, layout, prompts[:1], greedy, pad_token_id=tok.pad_token_id)
    saved = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    saved_q = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(-3.0)
            model.model.layers[0].self_attn.q_proj.weight.mul_(5.0)
        fast = generate_speech_tokens(model, layout, prompts[:1], greedy, pad_token_id=tok.pad_token_id)
        slow = generate_speech_tokens(model, layout, prompts[:1], greedy, pad_token_id=tok.pad_token_id, fast=False)
        assert [c.tolist() for c in fast.codes] == [c.tolist() for c in slow.codes]
    finally:
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.copy_(saved)
            model.model.layers[0].self_attn.q_proj.weight.copy_(saved_q)
    again = generate_speech_tokens(model, layout, prompts[:1], greedy, pad_token_id=tok.pad_token_id)
    assert [c.tolist() for c in again.codes] == [c.tolist() for c in before.codes]
