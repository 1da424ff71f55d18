"""Named Llama shapes: a CPU ladder for scaling curves on 2 cores, and the paper's three sizes.

A preset fixes everything but the vocabulary, which comes from the `TokenLayout` (text vocabulary
+ 8 specials + codebook size), so one preset serves any codec.

CPU ladder: non-embedding parameters from about 0.1M to about 19M, roughly x3 per rung, so a
sweep spans two decades of N. Head dim is 16-64 (smaller heads waste the matmuls), KV heads are
shared (GQA) wherever the head count allows it, and FFN width is about 8/3 d rounded to a
multiple of 64, as in Llama. Exact counts come from `workbench.lm.flops.count_params`.

Paper shapes: Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B (docs/reference.md §2). Llama-3.2 ties input and
output embeddings; Llama-3.1-8B does not. Llama-3's "llama3" RoPE frequency scaling (for >8k
contexts) is left out: sequences here are at most 2048 tokens and models train from scratch.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPreset:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ffn: int
    tie_embeddings: bool = False
    rope_theta: float = 10_000.0
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"{self.name}: d_model {self.d_model} not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{self.name}: n_heads {self.n_heads} not divisible by n_kv_heads {self.n_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


_PRESETS: tuple[ModelPreset, ...] = (
    # CPU ladder (≈ non-embedding parameters in the name)
    ModelPreset("cpu-0.1m", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ffn=192),
    ModelPreset("cpu-0.3m", n_layers=3, d_model=96, n_heads=6, n_kv_heads=2, d_ffn=256),
    ModelPreset("cpu-1m", n_layers=5, d_model=128, n_heads=4, n_kv_heads=2, d_ffn=384),
    ModelPreset("cpu-3m", n_layers=8, d_model=192, n_heads=6, n_kv_heads=2, d_ffn=512),
    ModelPreset("cpu-7m", n_layers=10, d_model=256, n_heads=8, n_kv_heads=4, d_ffn=704),
    ModelPreset("cpu-20m", n_layers=12, d_model=384, n_heads=6, n_kv_heads=2, d_ffn=1024),
    # The paper's shapes (Llama-3.2-1B / 3B, Llama-3.1-8B)
    ModelPreset("llama-3.2-1b", n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8, d_ffn=8192,
                tie_embeddings=True, rope_theta=500_000.0),
    ModelPreset("llama-3.2-3b", n_layers=28, d_model=3072, n_heads=24, n_kv_heads=8, d_ffn=8192,
                tie_embeddings=True, rope_theta=500_000.0),
    ModelPreset("llama-3.1-8b", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ffn=14336,
                tie_embeddings=False, rope_theta=500_000.0),
)

PRESETS: dict[str, ModelPreset] = {p.name: p for p in _PRESETS}
CPU_LADDER: tuple[str, ...] = tuple(p.name for p in _PRESETS if p.name.startswith("cpu-"))
PAPER_SIZES: tuple[str, ...] = ("llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b")


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model preset {name!r}{hint}; presets: {', '.join(PRESETS)}") from None


__all__ = ["ModelPreset", "PRESETS", "CPU_LADDER", "PAPER_SIZES", "get_preset"]
