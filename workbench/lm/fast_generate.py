"""A lean sampling loop for Llama models: the same samples as `model.generate`, several times faster.

Every search arm is bounded by generation. `model.generate` on the cpu ladder spends about 2 ms
per token (cpu-1m, one thread) where the matmul work is tens of microseconds: the time goes to
Python around each of the hundred-odd small ops of a step (mask construction, cache objects,
logits-processor and stopping-criteria plumbing, per-layer module calls). This loop runs the same
arithmetic with fewer, larger ops over the model's own weights:

- q, k and v projections in one matmul, gate and up projections in one matmul (weights
  concatenated once per model and cached while the weights are unchanged);
- rotary embedding applied to q and k together, from cos / sin tables computed once exactly as
  transformers computes them (``inv_freq`` and ``attention_scaling`` are read off the model, so
  "llama3"-scaled released checkpoints work too);
- a key/value cache preallocated for prompt + `max_new_tokens` positions, written in place, and
  PyTorch's fused attention with grouped query heads;
- the sampling step of `model.generate` in its order (repetition penalty, the speech-only mask,
  temperature, top-k, top-p through transformers' own processors, then softmax and
  ``torch.multinomial`` on the global generator), so a fixed seed gives the same samples.

Left-padded batches of prompts of different lengths are supported the way `generate` handles them
(positions count real tokens only; pads are never attended). Only Llama models with a static RoPE
are handled (`supports_fast_generation`); `workbench.lm.generate.generate_speech_tokens` falls back
to `model.generate` otherwise. Measured against `model.generate` in benchmarks/lm_speed.py.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

_STATIC_ROPE = ("default", "llama3", "linear", "yarn", None)


def supports_fast_generation(model: Any) -> bool:
    """A transformers Llama causal LM with a RoPE whose frequencies do not change with length."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llama" or not hasattr(model, "model"):
        return False
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    return rope_type in _STATIC_ROPE


@dataclass
class _Layer:
    norm1: torch.Tensor
    w_qkv: torch.Tensor
    b_qkv: torch.Tensor | None
    w_o: torch.Tensor
    b_o: torch.Tensor | None
    norm2: torch.Tensor
    w_gate_up: torch.Tensor
    b_gate_up: torch.Tensor | None
    w_down: torch.Tensor
    b_down: torch.Tensor | None


@dataclass
class _Weights:
    layers: list[_Layer]
    embed: torch.Tensor
    norm: torch.Tensor
    head: torch.Tensor
    head_bias: torch.Tensor | None
    eps: float
    n_heads: int
    n_kv_heads: int
    head_dim: int
    inv_freq: torch.Tensor
    attention_scaling: float
    stamp: tuple


_CACHE: "weakref.WeakKeyDictionary[Any, _Weights]" = weakref.WeakKeyDictionary()


def _stamp(model: Any) -> tuple:
    # Changes when any weight is replaced or modified in place (training between generations).
    return tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in model.parameters())


def _cat_bias(*linears: Any) -> torch.Tensor | None:
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat([lin.bias if lin.bias is not None else torch.zeros(lin.out_features, device=lin.weight.device,
                                                                           dtype=lin.weight.dtype) for lin in linears])


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    # w is (in, out) contiguous on the CPU (measured ~30 % faster than F.linear's transposed
    # operand for these skinny matmuls), (out, in) elsewhere.
    if w.device.type == "cpu":
        y = torch.matmul(x, w)
        return y if b is None else y + b
    return F.linear(x, w, b)


def _layout(w: torch.Tensor) -> torch.Tensor:
    return w.t().contiguous() if w.device.type == "cpu" else w


def _weights(model: Any) -> _Weights:
    stamp = _stamp(model)
    cached = _CACHE.get(model)
    if cached is not None and cached.stamp == stamp:
        return cached
    config = model.config
    layers = []
    with torch.no_grad():
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            layers.append(_Layer(
                norm1=layer.input_layernorm.weight,
                w_qkv=_layout(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])),
                b_qkv=_cat_bias(attn.q_proj, attn.k_proj, attn.v_proj),
                w_o=_layout(attn.o_proj.weight), b_o=attn.o_proj.bias,
                norm2=layer.post_attention_layernorm.weight,
                w_gate_up=_layout(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
                b_gate_up=_cat_bias(mlp.gate_proj, mlp.up_proj),
                w_down=_layout(mlp.down_proj.weight), b_down=mlp.down_proj.bias,
            ))
    rotary = model.model.rotary_emb
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    weights = _Weights(
        layers=layers, embed=model.model.embed_tokens.weight, norm=model.model.norm.weight,
        head=_layout(model.lm_head.weight), head_bias=getattr(model.lm_head, "bias", None),
        eps=float(model.model.norm.variance_epsilon), n_heads=config.num_attention_heads,
        n_kv_heads=config.num_key_value_heads, head_dim=head_dim,
        inv_freq=rotary.inv_freq.float(), attention_scaling=float(getattr(rotary, "attention_scaling", 1.0)),
        stamp=stamp,
    )
    _CACHE[model] = weights
    return weights


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # transformers' LlamaRMSNorm, op for op: normalise in fp32, cast back, then scale. (The fused
    # F.rms_norm measured slower on CPU at these sizes, and rounds differently.)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


class _Decoder:
    """Forward passes over a preallocated cache for one batch of rows."""

    def __init__(self, model: Any, batch: int, max_len: int, device: torch.device) -> None:
        self.w = _weights(model)
        w = self.w
        dtype = w.embed.dtype
        self.dtype = dtype
        self.k = [torch.zeros(batch, w.n_kv_heads, max_len, w.head_dim, device=device, dtype=dtype) for _ in w.layers]
        self.v = [torch.zeros_like(k) for k in self.k]
        positions = torch.arange(max_len, device=device, dtype=torch.float32)
        freqs = positions[:, None] * w.inv_freq.to(device)[None, :]  # as transformers computes them
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * w.attention_scaling).to(dtype)
        self.sin = (emb.sin() * w.attention_scaling).to(dtype)
        self.n_q = w.n_heads * w.head_dim
        self.n_qk_heads = w.n_heads + w.n_kv_heads
        self.scale = w.head_dim ** -0.5

    def forward(self, ids: torch.Tensor, start: int, positions: torch.Tensor | None,
                mask: torch.Tensor | None, last_only: bool, shared_position: int | None = None) -> torch.Tensor:
        """Logits (rows, vocab) of the last position of `ids` (rows, steps) written at cache
        slots start..start+steps-1; `positions` (rows, steps) are the RoPE positions (or all rows
        share `shared_position`..+steps-1); `mask`
        (rows, 1, steps, start+steps) bool or None (attend to every slot up to the current)."""
        w = self.w
        rows, steps = ids.shape
        end = start + steps
        x = F.embedding(ids, w.embed)
        if shared_position is not None:  # every row at the same positions: a view, no gather
            cos = self.cos[shared_position:shared_position + steps][None, :, None]
            sin = self.sin[shared_position:shared_position + steps][None, :, None]
        else:
            cos = self.cos[positions].unsqueeze(2)  # (rows, steps, 1, head_dim)
            sin = self.sin[positions].unsqueeze(2)
        half = w.head_dim // 2
        causal = mask is None and steps > 1
        for layer, k_cache, v_cache in zip(w.layers, self.k, self.v):
            h = _rms_norm(x, layer.norm1, w.eps)
            qkv = _linear(h, layer.w_qkv, layer.b_qkv)
            qk = qkv[..., : self.n_q + w.n_kv_heads * w.head_dim].view(rows, steps, self.n_qk_heads, w.head_dim)
            rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
            qk = qk * cos + rotated * sin
            q = qk[:, :, : w.n_heads].transpose(1, 2)
            k_cache[:, :, start:end] = qk[:, :, w.n_heads:].transpose(1, 2)
            v_cache[:, :, start:end] = qkv[..., self.n_q + w.n_kv_heads * w.head_dim:].view(
                rows, steps, w.n_kv_heads, w.head_dim).transpose(1, 2)
            attn = F.scaled_dot_product_attention(q, k_cache[:, :, :end], v_cache[:, :, :end], attn_mask=mask,
                                                  is_causal=causal, scale=self.scale, enable_gqa=True)
            x = x + _linear(attn.transpose(1, 2).reshape(rows, steps, self.n_q), layer.w_o, layer.b_o)
            h = _rms_norm(x, layer.norm2, w.eps)
            gate, up = _linear(h, layer.w_gate_up, layer.b_gate_up).chunk(2, dim=-1)
            x = x + _linear(F.silu(gate) * up, layer.w_down, layer.b_down)
        if last_only:
            x = x[:, -1:]
        x = _rms_norm(x, w.norm, w.eps)
        return _linear(x, w.head, w.head_bias)[:, -1].float()


@torch.no_grad()
def fast_generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                  eos_token_id: int, pad_token_id: int, do_sample: bool,
                  processors: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None,
                  num_return_sequences: int = 1, check_every: int = 1, guidance: Any = None) -> torch.Tensor:
    """What `model.generate(input_ids, attention_mask, max_new_tokens, do_sample,
    logits_processor, num_return_sequences, eos_token_id, pad_token_id)` returns: the prompts
    (left-padded) followed by the new tokens, pad after a row's end token, as many columns as
    steps were run. `processors` are applied in order to the fp32 logits, then sampling draws
    with ``torch.multinomial`` on the global generator (greedy: argmax).

    `check_every` > 1 tests for "every row ended" only every that many steps (each test is a
    device sync on a GPU); rows that ended keep receiving pad tokens, as in `generate`.
    `guidance` (a `workbench.lm.guidance.TextGuidance`): classifier-free guidance on the text;
    every row gets a text-free twin in the same cache (the batch doubles), and the processors see
    the guided log-probabilities in place of the logits."""
    device = next(model.parameters()).device
    ids = input_ids.to(device).repeat_interleave(num_return_sequences, dim=0)
    mask = attention_mask.to(device).repeat_interleave(num_return_sequences, dim=0).bool()
    rows, width = ids.shape
    max_len = width + max_new_tokens
    sequences = torch.full((rows, max_len), pad_token_id, dtype=torch.long, device=device)
    sequences[:, :width] = ids
    if guidance is not None:  # rows 0..rows-1 with their text, rows..2 rows-1 their text-free twins
        ids, mask = torch.cat([ids, guidance.text_free(ids)]), torch.cat([mask, mask])

    def twin(tokens: torch.Tensor) -> torch.Tensor:
        return tokens if guidance is None else torch.cat([tokens, guidance.text_free(tokens)])

    def guided(logits: torch.Tensor) -> torch.Tensor:
        return logits if guidance is None else guidance.combine(logits[:rows], logits[rows:])

    decoder = _Decoder(model, ids.shape[0], max_len, device)
    padded = not bool(mask.all())
    # generate's positions for left padding: count real tokens; pads get 1 (never attended).
    prompt_positions = (mask.long().cumsum(-1) - 1).masked_fill(~mask, 1)
    n_real = mask.sum(dim=1, keepdim=True)  # (rows, 1): position of the first new token
    if padded:
        valid = torch.ones(ids.shape[0], max_len, dtype=torch.bool, device=device)
        valid[:, :width] = mask
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        # A pad query attends to itself, so no row of the mask is empty (an empty row is NaN in
        # SDPA, and NaN values in the cache would leak through zero weights).
        prefill_mask = (causal[None] & mask[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)[None]
        logits = decoder.forward(ids, 0, prompt_positions, prefill_mask[:, None], last_only=True)
    else:
        valid = None
        logits = decoder.forward(ids, 0, None, None, last_only=True, shared_position=0)
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    processors = list(processors or [])
    steps_run = 0
    for step in range(max_new_tokens):
        scores = guided(logits)
        current = sequences[:, : width + step]
        for processor in processors:
            scores = processor(current, scores)
        if do_sample:
            tokens = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            tokens = scores.argmax(dim=-1)
        tokens = torch.where(unfinished, tokens, pad_token_id)  # ended rows get pad, as in generate
        sequences[:, width + step] = tokens
        unfinished &= tokens != eos_token_id
        steps_run = step + 1
        if step + 1 == max_new_tokens or ((step + 1) % check_every == 0 and not bool(unfinished.any())):
            break
        if valid is not None:
            logits = decoder.forward(twin(tokens)[:, None], width + step, n_real + step,
                                     valid[:, None, None, : width + step + 1], last_only=False)
        else:
            logits = decoder.forward(twin(tokens)[:, None], width + step, None, None, last_only=False,
                                     shared_position=width + step)
    return sequences[:, : width + steps_run]


__all__ = ["fast_generate", "supports_fast_generation"]
