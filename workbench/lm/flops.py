"""Parameter and FLOP accounting for Llama models (train-time sweeps and search budgets).

Two parameter counts are recorded everywhere, because the scaling literature uses both:
Kaplan et al. (2020) fit against non-embedding parameters, Hoffmann et al. (2022) against all
parameters. With a 65k-entry speech vocabulary on a 1M-parameter CPU model the two differ by
orders of magnitude, so the choice visibly changes the fitted exponents.

Conventions (Kaplan et al. 2020, §2.1; one multiply-add = 2 FLOPs):
- forward FLOPs per token        C_fwd  = 2·N + 2·n_layer·n_ctx·d_attn
- training FLOPs per token       C_train = 3·C_fwd = 6·N + 6·n_layer·n_ctx·d_attn
  (backward = 2 x forward). d_attn = n_heads·head_dim (the width of Q·K^T and A·V), n_ctx the
  sequence's length. Per token, the full n_ctx x n_ctx products Q·K^T and A·V cost
  4·n_layer·n_ctx·d_attn forward (what a FLOP counter measures on eager attention, see tests);
  causal masking makes half of that necessary, which is Kaplan's 2·n_layer·n_ctx·d_attn.
- N is either the non-embedding count (`non_embedding`) or the count including the input
  embedding and the LM head (`with_embedding`). The embedding lookup itself is not a matmul;
  counting it in N follows Chinchilla's convention of "all parameters" rather than measuring
  work, and is what makes the two FLOP columns comparable with both papers.
- generation FLOPs per new token  C_gen = 2·N + 2·n_layer·n_ctx·d_attn with n_ctx the current
  context length (KV-cached decoding: each new token attends to everything before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class ParamCounts:
    n_params: int  # everything (embedding + blocks + final norm + untied LM head)
    n_params_non_embedding: int  # blocks + final norm
    n_embedding: int  # input embedding
    n_lm_head: int  # 0 when tied to the input embedding


@dataclass(frozen=True)
class FlopsPerToken:
    non_embedding: float  # with N = n_params_non_embedding
    with_embedding: float  # with N = n_params


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def count_params(config: Any) -> ParamCounts:
    """Parameter counts of a `LlamaForCausalLM` with this `LlamaConfig`, from the shapes alone
    (no model built; agrees with summing `model.parameters()`, see tests)."""
    d = config.hidden_size
    head_dim = _head_dim(config)
    q = d * config.num_attention_heads * head_dim
    kv = 2 * d * config.num_key_value_heads * head_dim
    o = config.num_attention_heads * head_dim * d
    attn_bias = 0
    if getattr(config, "attention_bias", False):
        attn_bias = (config.num_attention_heads + 2 * config.num_key_value_heads) * head_dim + d
    mlp = 3 * d * config.intermediate_size
    if getattr(config, "mlp_bias", False):
        mlp += 2 * config.intermediate_size + d
    norms = 2 * d
    per_layer = q + kv + o + attn_bias + mlp + norms
    non_embedding = config.num_hidden_layers * per_layer + d  # + final norm
    embedding = config.vocab_size * d
    lm_head = 0 if config.tie_word_embeddings else config.vocab_size * d
    return ParamCounts(
        n_params=non_embedding + embedding + lm_head,
        n_params_non_embedding=non_embedding,
        n_embedding=embedding,
        n_lm_head=lm_head,
    )


def _attention_flops_per_token(config: Any, n_ctx: int | float) -> float:
    """2·n_layer·n_ctx·d_attn: the forward attention term per token."""
    d_attn = config.num_attention_heads * _head_dim(config)
    return 2.0 * config.num_hidden_layers * float(n_ctx) * d_attn


def training_flops_per_token(config: Any, seq_len: int | float) -> FlopsPerToken:
    """6·N + 6·n_layer·seq_len·d_attn for both N's (see the module docstring)."""
    counts = count_params(config)
    attention = 3.0 * _attention_flops_per_token(config, seq_len)
    return FlopsPerToken(
        non_embedding=6.0 * counts.n_params_non_embedding + attention,
        with_embedding=6.0 * counts.n_params + attention,
    )


def training_flops(config: Any, seq_lens: Sequence[int]) -> FlopsPerToken:
    """Training FLOPs of one pass over sequences of these lengths (padding excluded): the sum over
    sequences of len·(6·N + 6·n_layer·len·d_attn). Returned in the FlopsPerToken shape but holding
    totals, not per-token values."""
    counts = count_params(config)
    n_tokens = float(sum(seq_lens))
    attention = sum(3.0 * _attention_flops_per_token(config, n) * n for n in seq_lens)
    return FlopsPerToken(
        non_embedding=6.0 * counts.n_params_non_embedding * n_tokens + attention,
        with_embedding=6.0 * counts.n_params * n_tokens + attention,
    )


def generation_flops_per_token(config: Any, context_len: int | float) -> FlopsPerToken:
    """Forward FLOPs of producing one token with a KV cache at this context length:
    2·N + 2·n_layer·context_len·d_attn."""
    counts = count_params(config)
    attention = _attention_flops_per_token(config, context_len)
    return FlopsPerToken(
        non_embedding=2.0 * counts.n_params_non_embedding + attention,
        with_embedding=2.0 * counts.n_params + attention,
    )


def generation_flops(config: Any, prompt_len: int, n_new_tokens: int) -> FlopsPerToken:
    """Total forward FLOPs of a prompt prefill plus `n_new_tokens` cached decoding steps: every
    position p (0-based) costs 2·N + 2·n_layer·(p+1)·d_attn (it attends to itself and what came
    before). Sums in closed form, so it is cheap inside search loops."""
    counts = count_params(config)
    total = prompt_len + n_new_tokens
    per_ctx = 2.0 * config.num_hidden_layers * config.num_attention_heads * _head_dim(config)
    attention = per_ctx * total * (total + 1) / 2.0  # Σ_{p=1..total} p
    return FlopsPerToken(
        non_embedding=2.0 * counts.n_params_non_embedding * total + attention,
        with_embedding=2.0 * counts.n_params * total + attention,
    )


__all__ = [
    "ParamCounts", "FlopsPerToken", "count_params", "training_flops_per_token", "training_flops",
    "generation_flops_per_token", "generation_flops",
]
