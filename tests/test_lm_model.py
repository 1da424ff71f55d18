"""Presets, parameter/FLOP accounting, checkpoint format (workbench.lm.presets/model/flops)."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.data.token_shards import CodecInfo
from workbench.lm.flops import (
    count_params, generation_flops, generation_flops_per_token, training_flops,
    training_flops_per_token,
)
from workbench.lm.layout import TokenLayout, build_inference_prompt, build_tts_sequence
from workbench.lm.model import WORKBENCH_LM_FILE, build_llama_config, build_model, load_lm, save_checkpoint
from workbench.lm.presets import CPU_LADDER, PAPER_SIZES, get_preset
from workbench.lm.text_tokenizer import train_text_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


TEXTS = ["the cat sat on the mat", "a dog ran in the fog", "speech tokens follow the text"] * 4


def test_ladder_spans_two_decades_and_counts_match_torch():
    layout = TokenLayout(text_vocab_size=300, codebook_size=128)
    counts = []
    from transformers import LlamaForCausalLM

    for name in CPU_LADDER:
        with torch.device("meta"):  # shapes only: initialising 20M weights is slow and not tested here
            model = LlamaForCausalLM(build_llama_config(name, layout))
        n_torch = sum(p.numel() for p in model.parameters())
        c = count_params(model.config)
        assert c.n_params == n_torch, name
        n_embed = model.get_input_embeddings().weight.numel()
        n_head = 0 if model.config.tie_word_embeddings else model.get_output_embeddings().weight.numel()
        assert c.n_params_non_embedding == n_torch - n_embed - n_head, name
        counts.append(c.n_params_non_embedding)
    assert counts == sorted(counts)
    assert 0.08e6 <= counts[0] <= 0.15e6 and 15e6 <= counts[-1] <= 25e6
    ratios = [b / a for a, b in zip(counts, counts[1:])]
    assert all(2.0 <= r <= 4.0 for r in ratios), ratios


def test_paper_shapes_match_published_llama_sizes():
    # With Llama-3's own 128,256-entry vocabulary the presets must give Meta's published totals.
    llama_vocab = TokenLayout(text_vocab_size=128000, codebook_size=248)  # 128000 + 8 + 248
    assert llama_vocab.vocab_size == 128256
    published = {"llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824,
                 "llama-3.1-8b": 8_030_261_248}
    for name in PAPER_SIZES:
        assert count_params(build_llama_config(name, llama_vocab)).n_params == published[name], name
    llasa = build_llama_config("llama-3.2-1b", TokenLayout(128256, 65536))
    assert llasa.vocab_size == 193800 and llasa.eos_token_id == 128261
    preset = get_preset("llama-3.1-8b")
    assert (preset.n_layers, preset.d_model, preset.n_heads, preset.n_kv_heads, preset.d_ffn) == (32, 4096, 32, 8, 14336)
    with pytest.raises(ValueError, match="did you mean 'cpu-1m'"):
        get_preset("cpu-1M")


def test_training_flops_formula_and_measured_forward():
    from torch.utils.flop_counter import FlopCounterMode

    layout = TokenLayout(text_vocab_size=300, codebook_size=64)
    model = build_model("cpu-0.3m", layout).eval()
    model.set_attn_implementation("eager")  # FlopCounterMode sees eager matmuls, not fused SDPA
    cfg, c = model.config, count_params(model.config)
    seq = 48
    per_token = training_flops_per_token(cfg, seq)
    attn = 6 * cfg.num_hidden_layers * seq * cfg.num_attention_heads * cfg.head_dim
    assert per_token.non_embedding == 6 * c.n_params_non_embedding + attn
    assert per_token.with_embedding == 6 * c.n_params + attn
    total = training_flops(cfg, [seq, seq])
    assert total.non_embedding == pytest.approx(2 * seq * per_token.non_embedding)
    # Measured forward matmul FLOPs = 2·(matmul params)·s + full QK^T and AV (4·L·s²·d_attn):
    # checks the parameter shapes and the attention term against what the model really does.
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randint(0, layout.vocab_size, (1, seq)))
    norms = (2 * cfg.num_hidden_layers + 1) * cfg.hidden_size
    full_attention = 4 * cfg.num_hidden_layers * seq * seq * cfg.num_attention_heads * cfg.head_dim
    assert counter.get_total_flops() == 2 * (c.n_params_non_embedding - norms + c.n_lm_head) * seq + full_attention


def test_generation_flops_closed_form_equals_loop():
    cfg = build_llama_config("cpu-1m", TokenLayout(300, 1024))
    prompt, new = 17, 40
    loop = sum(generation_flops_per_token(cfg, p + 1).with_embedding for p in range(prompt + new))
    assert generation_flops(cfg, prompt, new).with_embedding == pytest.approx(loop, rel=1e-12)


def _overfit(model, ids: list[int], labels: list[int], steps: int = 150) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.tensor([ids]), torch.tensor([labels])
    for _ in range(steps):
        loss = model(input_ids=x, labels=y).loss
        if float(loss.detach()) < 0.02:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


@pytest.fixture(scope="module")
def overfit_checkpoint(tmp_path_factory):
    """A tiny model that has memorised one utterance, saved as a workbench checkpoint."""
    lm_tok = train_text_tokenizer(TEXTS, codebook_size=64, text_vocab_size=300)
    tok, layout = lm_tok.tokenizer, lm_tok.layout
    codes = torch.tensor([5, 9, 9, 1, 63, 0, 12, 33, 7, 7, 2, 40])
    seq = build_tts_sequence(tok, layout, "the cat sat", codes)
    model = build_model("cpu-0.1m", layout, seed=3, pad_token_id=tok.pad_token_id)
    loss = _overfit(model, seq.input_ids, seq.labels)
    assert loss < 0.05, f"tiny model failed to overfit one sequence: loss {loss}"
    out = tmp_path_factory.mktemp("ckpt") / "model"
    codec = CodecInfo(codebook_size=64, frame_rate_hz=50.0, sample_rate=16000, codec="toy")
    save_checkpoint(out, model, tok, layout, codec=codec, extra={"preset": "cpu-0.1m"})
    return out, model, layout, codes


def test_checkpoint_generates_with_plain_transformers(overfit_checkpoint):
    path, trained, layout, codes = overfit_checkpoint
    # Only transformers below: a user without the workbench can load and sample.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|SPEECH_GENERATION_END|>")
    for name, tensor in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    prompt = ("<|begin_of_text|>Convert the text to speech:<|TEXT_UNDERSTANDING_START|>the cat sat"
              "<|TEXT_UNDERSTANDING_END|><|SPEECH_GENERATION_START|>")
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=40)  # checkpoint's own sampling defaults
    new = out[0, inputs["input_ids"].shape[1]:]
    assert int(new[-1]) == model.generation_config.eos_token_id  # stopped at end of speech
    decoded = tokenizer.decode(new, skip_special_tokens=True)
    assert decoded == "".join(f"<|s_{k}|>" for k in codes.tolist())
    meta = json.loads((path / WORKBENCH_LM_FILE).read_text())
    assert meta["layout"] == layout.to_dict() and meta["codec"]["codebook_size"] == 64


def test_load_lm_restores_layout_and_codec(overfit_checkpoint):
    path, trained, layout, _ = overfit_checkpoint
    loaded = load_lm(path)
    assert loaded.layout == layout and loaded.codec.frame_rate_hz == 50.0
    assert loaded.meta["preset"] == "cpu-0.1m"
    x = torch.randint(0, layout.vocab_size, (2, 9))
    torch.testing.assert_close(loaded.model(x).logits, trained(x).logits, rtol=0, atol=0)


def test_llasa_style_folder_loads_and_layout_is_detected(tmp_path):
    # Llasa's release: LlamaForCausalLM + tokenizer with specials/speech added, no workbench json,
    # eos left at the text eos, embedding padded beyond the tokenizer.
    from transformers import LlamaConfig, LlamaForCausalLM

    lm_tok = train_text_tokenizer(TEXTS, codebook_size=96, text_vocab_size=290)
    layout = lm_tok.layout
    config = LlamaConfig(vocab_size=layout.vocab_size + 24, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         eos_token_id=lm_tok.tokenizer.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llasa")
    lm_tok.tokenizer.save_pretrained(tmp_path / "llasa")
    loaded = load_lm(tmp_path / "llasa")
    assert loaded.layout == layout and loaded.codec is None
    assert loaded.model.generation_config.eos_token_id == layout.speech_generation_end
    prompt = build_inference_prompt(loaded.tokenizer, loaded.layout, "a dog")
    assert prompt.input_ids[-1] == layout.speech_generation_start
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_lm(tmp_path / "missing")


def test_save_checkpoint_replaces_atomically(tmp_path):
    lm_tok = train_text_tokenizer(TEXTS, codebook_size=16, text_vocab_size=280)
    model = build_model("cpu-0.1m", lm_tok.layout, seed=0)
    out = tmp_path / "ckpt"
    save_checkpoint(out, model, lm_tok.tokenizer, lm_tok.layout)
    with pytest.raises(RuntimeError, match="boom"):
        def fail(_path):
            raise RuntimeError("boom")
        save_checkpoint(out, build_model("cpu-0.1m", lm_tok.layout, seed=1), lm_tok.tokenizer,
                        lm_tok.layout, extra_files={"state.pt": fail})
    # the failed write left the old checkpoint intact and no temporary folders behind
    reloaded = load_lm(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.model.state_dict()[name], tensor)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
