"""Token layout, sequence builders and tokenizers (workbench.lm.layout / text_tokenizer)."""

from __future__ import annotations

import pytest
import torch

from workbench.lm.layout import (
    IGNORE_INDEX, SPECIAL_TOKENS, TokenLayout, build_asr_sequence, build_inference_prompt,
    build_tts_sequence, check_tokenizer, codes_from_text, layout_from_tokenizer,
    parse_asr_sequence, parse_tts_sequence, speech_token,
)
from workbench.lm.text_tokenizer import (
    extend_pretrained_tokenizer, load_lm_tokenizer, train_text_tokenizer,
)

CORPUS = [
    "Printing, in the only sense with which we are at present concerned, differs from most arts.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
] * 5

# A Llama-3-like chat template (same header/eot structure, no date system prompt).
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] }}"
    "{% if not loop.last %}{{ '<|eot_id|>' }}{% endif %}{% endfor %}"
)


def test_llama3_ids_match_published_table():
    layout = TokenLayout(text_vocab_size=128256, codebook_size=65536)
    assert layout.vocab_size == 193800
    assert [layout.text_generation_start, layout.text_generation_end,
            layout.text_understanding_start, layout.text_understanding_end,
            layout.speech_generation_start, layout.speech_generation_end,
            layout.speech_understanding_start, layout.speech_understanding_end] == list(range(128256, 128264))
    assert layout.special_ids() == {t: 128256 + i for i, t in enumerate(SPECIAL_TOKENS)}
    assert layout.speech_offset == 128264
    assert layout.speech_ids([0, 1, 65535]).tolist() == [128264, 128265, 193799]
    assert layout.token_strings()[4] == "<|SPEECH_GENERATION_START|>"
    assert layout.token_strings()[8 + 123] == "<|s_123|>"


def test_speech_id_round_trip_and_range_checks():
    layout = TokenLayout(text_vocab_size=300, codebook_size=1000)
    codes = torch.randint(0, 1000, (3, 50))
    ids = layout.speech_ids(codes)
    assert ids.shape == codes.shape and bool(layout.is_speech(ids).all())
    assert torch.equal(layout.codes_from_ids(ids), codes)
    with pytest.raises(ValueError, match="1000"):
        layout.speech_ids([999, 1000])
    with pytest.raises(ValueError, match="not speech tokens"):
        layout.codes_from_ids([layout.speech_generation_end])
    assert TokenLayout.from_dict(layout.to_dict()) == layout
    assert codes_from_text("<|s_3|>x<|s_17|><|SPEECH_GENERATION_END|>") == [3, 17]


@pytest.fixture(scope="module")
def small_tokenizer():
    return train_text_tokenizer(CORPUS, codebook_size=256, text_vocab_size=320)


def test_trained_tokenizer_vocabulary_order(small_tokenizer, tmp_path):
    tok, layout = small_tokenizer.tokenizer, small_tokenizer.layout
    assert layout.codebook_size == 256
    assert len(tok) == layout.vocab_size == layout.text_vocab_size + 8 + 256
    check_tokenizer(tok, layout)
    assert tok.encode("<|s_0|><|s_255|><|SPEECH_GENERATION_END|>", add_special_tokens=False) == [
        layout.speech_offset, layout.speech_offset + 255, layout.speech_generation_end]
    # AutoTokenizer round trip keeps every id
    small_tokenizer.save(tmp_path / "tok")
    reloaded = load_lm_tokenizer(tmp_path / "tok")
    assert reloaded.layout == layout
    text = "The fox sells wood. Zebra-quartz ünïcode!"
    assert reloaded.tokenizer.encode(text) == tok.encode(text)
    assert reloaded.tokenizer.decode(tok.encode(text, add_special_tokens=False)) == text


def test_tts_sequence_round_trip_and_labels(small_tokenizer):
    tok, layout = small_tokenizer.tokenizer, small_tokenizer.layout
    codes = torch.randint(0, 256, (37,))
    text = "How much wood would a woodchuck chuck?"
    seq = build_tts_sequence(tok, layout, text, codes)
    assert len(seq.labels) == len(seq.input_ids)
    start = seq.input_ids.index(layout.speech_generation_start)
    assert seq.input_ids[-1] == layout.speech_generation_end
    assert seq.input_ids[-38:-1] == (codes + layout.speech_offset).tolist()
    # loss only from SPEECH_GENERATION_START through SPEECH_GENERATION_END
    assert all(label == IGNORE_INDEX for label in seq.labels[:start])
    assert seq.labels[start:] == seq.input_ids[start:]
    assert sum(label != IGNORE_INDEX for label in seq.labels) == 37 + 2
    parsed = parse_tts_sequence(tok, layout, seq.input_ids)
    assert parsed.text == text and parsed.ended and torch.equal(parsed.codes, codes)
    # the plain-concatenation prompt spells exactly what the reference gives
    assert tok.decode(seq.input_ids[:start + 1]) == (
        "<|begin_of_text|>Convert the text to speech:<|TEXT_UNDERSTANDING_START|>"
        f"{text}<|TEXT_UNDERSTANDING_END|><|SPEECH_GENERATION_START|>")


def test_inference_prompt_and_voice_cloning(small_tokenizer):
    tok, layout = small_tokenizer.tokenizer, small_tokenizer.layout
    training = build_tts_sequence(tok, layout, "the sea", [5, 6, 7])
    plain = build_inference_prompt(tok, layout, "the sea")
    assert plain.labels is None and plain.input_ids[-1] == layout.speech_generation_start
    assert training.input_ids[:len(plain.input_ids)] == plain.input_ids  # prompt is a prefix
    prompt_codes = torch.tensor([9, 8, 7, 6])
    clone = build_inference_prompt(tok, layout, " shells.", prompt_text="She sells",
                                   prompt_codes=prompt_codes)
    parsed = parse_tts_sequence(tok, layout, clone.input_ids)
    assert parsed.text == "She sells shells." and not parsed.ended
    assert torch.equal(parsed.codes, prompt_codes)
    with pytest.raises(ValueError, match="both"):
        build_inference_prompt(tok, layout, "x", prompt_text="y")


def test_asr_layout_round_trip(small_tokenizer):
    tok, layout = small_tokenizer.tokenizer, small_tokenizer.layout
    codes = torch.randint(0, 256, (20,))
    seq = build_asr_sequence(tok, layout, codes, "quick brown fox")
    ids = seq.input_ids
    a0 = ids.index(layout.speech_understanding_start)
    assert ids[a0 + 21] == layout.speech_understanding_end
    assert ids[a0 + 22] == layout.text_generation_start and ids[-1] == layout.text_generation_end
    g0 = ids.index(layout.text_generation_start)
    assert all(label == IGNORE_INDEX for label in seq.labels[:g0]) and seq.labels[g0:] == ids[g0:]
    got_codes, transcript = parse_asr_sequence(tok, layout, ids)
    assert torch.equal(got_codes, codes) and transcript == "quick brown fox"
    prompt = build_asr_sequence(tok, layout, codes, None)
    assert prompt.labels is None and ids[:len(prompt.input_ids)] == prompt.input_ids


def _fake_llama3_dir(path, n_text: int = 400):
    """A small tokenizer saved like Llama-3's: BPE text + reserved specials + chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"] + [f"<|reserved_special_token_{i}|>" for i in range(11)]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=n_text - len(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    core.add_special_tokens(specials)  # after the BPE entries, like Llama-3's 128000..128255
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|begin_of_text|>",
                                  eos_token="<|end_of_text|>")
    tok.chat_template = LLAMA3_TEMPLATE
    tok.save_pretrained(path)
    return len(tok)


def test_extend_llama3_style_tokenizer_with_chat_template(tmp_path):
    n_text = _fake_llama3_dir(tmp_path / "llama3")
    ext = extend_pretrained_tokenizer(tmp_path / "llama3", codebook_size=128)
    layout = ext.layout
    assert layout.text_vocab_size == n_text and layout.speech_offset == n_text + 8
    assert ext.tokenizer.convert_tokens_to_ids("<|SPEECH_GENERATION_END|>") == n_text + 5
    assert ext.tokenizer.convert_tokens_to_ids(speech_token(127)) == n_text + 8 + 127
    codes = torch.arange(10)
    seq = build_tts_sequence(ext.tokenizer, layout, "the lazy dog", codes)
    rendered = ext.tokenizer.decode(seq.input_ids)
    assert rendered.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                               "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>the lazy dog")
    assert "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|SPEECH_GENERATION_START|><|s_0|>" in rendered
    assert rendered.endswith("<|s_9|><|SPEECH_GENERATION_END|>")
    parsed = parse_tts_sequence(ext.tokenizer, layout, seq.input_ids)
    assert parsed.text == "the lazy dog" and torch.equal(parsed.codes, codes)
    # saving and re-extending is idempotent (a Llasa tokenizer is detected, not extended twice)
    ext.save(tmp_path / "ext")
    again = extend_pretrained_tokenizer(tmp_path / "ext", codebook_size=128)
    assert again.layout == layout and layout_from_tokenizer(again.tokenizer) == layout
    with pytest.raises(ValueError, match="codebook_size"):
        extend_pretrained_tokenizer(tmp_path / "ext", codebook_size=64)
