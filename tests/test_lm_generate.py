"""Generation: batched KV-cached sampling, voice cloning, chunking (workbench.lm.generate)."""

from __future__ import annotations

import pytest
import torch

from workbench.lm.generate import (
    GeneratedSpeech, SamplingConfig, generate_speech_tokens, n_chunks_for, split_text, synthesize,
)
from workbench.lm.layout import build_inference_prompt, build_tts_sequence
from workbench.lm.model import build_model
from workbench.lm.text_tokenizer import train_text_tokenizer

K = 48
UTTERANCES = {
    "the cat sat": torch.tensor([5, 9, 9, 1, 47, 0, 12, 33, 7, 7, 2, 40]),
    "a dog ran in the fog": torch.tensor([30, 31, 3, 3, 3, 44, 18, 21, 6, 11, 11, 26, 8, 15, 2, 39, 17, 4]),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core box: avoid OpenMP spinning
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def memorised():
    """A tiny LM that has memorised two utterances (so its greedy output is known exactly)."""
    lm_tok = train_text_tokenizer(list(UTTERANCES) * 4, codebook_size=K, text_vocab_size=290)
    tok, layout = lm_tok.tokenizer, lm_tok.layout
    seqs = [build_tts_sequence(tok, layout, t, c) for t, c in UTTERANCES.items()]
    width = max(len(s) for s in seqs)
    ids = torch.full((2, width), tok.pad_token_id)
    labels = torch.full((2, width), -100)
    mask = torch.zeros((2, width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s.input_ids)
        labels[row, :len(s)] = torch.tensor(s.labels)
        mask[row, :len(s)] = 1
    model = build_model("cpu-0.1m", layout, seed=1, pad_token_id=tok.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(250):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        if float(loss.detach()) < 0.01:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05, f"failed to memorise: loss {float(loss)}"
    return model.eval(), tok, layout


GREEDY = SamplingConfig(temperature=0.0)


def test_batched_greedy_generation_reproduces_memorised_codes(memorised):
    model, tok, layout = memorised
    prompts = [build_inference_prompt(tok, layout, text) for text in UTTERANCES]
    assert len(prompts[0]) != len(prompts[1])  # exercises left padding
    out = generate_speech_tokens(model, layout, prompts, GREEDY, pad_token_id=tok.pad_token_id)
    assert isinstance(out, GeneratedSpeech) and out.ended == [True, True]
    for codes, expected in zip(out.codes, UTTERANCES.values()):
        assert torch.equal(codes, expected)
    assert out.n_new_tokens == [len(c) + 1 for c in UTTERANCES.values()]
    assert out.n_tokens_generated == sum(out.n_new_tokens) and out.flops > 0
    # batched == one at a time
    single = generate_speech_tokens(model, layout, prompts[1:], GREEDY, pad_token_id=tok.pad_token_id)
    assert torch.equal(single.codes[0], out.codes[1])


def test_sampling_controls_and_multiple_returns(memorised):
    model, tok, layout = memorised
    prompt = build_inference_prompt(tok, layout, "the cat sat")
    sampling = SamplingConfig(temperature=1.0, top_k=5, top_p=0.9, repetition_penalty=1.1,
                              num_return_sequences=3, seed=0, max_new_tokens=6)
    out = generate_speech_tokens(model, layout, [prompt], sampling)
    assert len(out.codes) == 3 and all(n <= 6 for n in out.n_new_tokens)
    again = generate_speech_tokens(model, layout, [prompt], sampling)
    assert all(torch.equal(a, b) for a, b in zip(out.codes, again.codes))  # seeded
    # an untrained model still yields only decodable codes thanks to the speech-only mask
    fresh = build_model("cpu-0.1m", layout, seed=7)
    raw = generate_speech_tokens(fresh, layout, [prompt], SamplingConfig(temperature=1.5, seed=1, max_new_tokens=30))
    assert raw.n_new_tokens[0] <= 30 and bool(((raw.codes[0] >= 0) & (raw.codes[0] < K)).all())
    with pytest.raises(ValueError, match="temperature"):
        generate_speech_tokens(model, layout, [prompt], SamplingConfig(temperature=0, num_return_sequences=2))


def test_voice_cloning_continues_the_prompt_codes(memorised):
    model, tok, layout = memorised
    full = UTTERANCES["a dog ran in the fog"]
    results = synthesize(model, tok, layout, " in the fog", prompt_text="a dog ran",
                         prompt_codes=full[:7], sampling=GREEDY)
    assert len(results) == 1 and results[0].ended
    assert torch.equal(results[0].codes, full[7:])  # only the continuation, prompt excluded


def test_split_text_follows_the_paper_rule():
    short = "Hello there."
    assert n_chunks_for(short) == 1 and split_text(short) == [short]
    two = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background, "
           "then let it dry.")
    assert 100 < len(two) <= 200 and n_chunks_for(two) == 2
    pieces = split_text(two)
    assert pieces == ["The birch canoe slid on the smooth planks.",
                      "Glue the sheet to the dark blue background, then let it dry."]
    three = " ".join(["It is easy to tell the depth of a well."] * 6)
    assert len(three) > 200 and len(split_text(three)) == 3
    assert " ".join(split_text(three)) == three and all(p.endswith(".") for p in split_text(three))
    no_punct = "word " * 50
    pieces = split_text(no_punct.strip())
    assert len(pieces) == 3 and " ".join(pieces) == no_punct.strip()
    assert all(abs(len(p) - len(no_punct) / 3) < 10 for p in pieces)
    assert split_text("x" * 250) == ["x" * 83, "x" * 84, "x" * 83]  # no space anywhere: hard cut


class _ToyCodec:
    """Stands in for the codec team's object: 320 samples per frame."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        assert codes.ndim == 2 and codes.dtype == torch.long
        return codes.float().repeat_interleave(320, dim=1) / K


def test_long_text_is_chunked_and_codes_concatenated(memorised):
    model, tok, layout = memorised
    text = ("the cat sat on the mat and the dog ran in the fog, and then they both went home to "
            "rest. the cat sat again and the dog ran again until the night was over.")
    assert n_chunks_for(text) == 2
    sampling = SamplingConfig(temperature=1.0, seed=3, max_new_tokens=10, num_return_sequences=2)
    results = synthesize(model, tok, layout, text, sampling=sampling, codec=_ToyCodec())
    assert len(results) == 2
    for result in results:
        assert len(result.chunks) == 2 and len(result.chunk_codes) == 2
        assert torch.equal(result.codes, torch.cat(result.chunk_codes))
        assert result.n_tokens_generated <= 20
        assert result.wav.shape == (1, 320 * result.codes.numel())
    unchunked = synthesize(model, tok, layout, text, sampling=sampling, chunk=False)
    assert len(unchunked[0].chunks) == 1
