"""Sharded data parallel for the 3B and 8B shapes: torch FSDP2 (``fully_shard``), and what the
training loop needs around it (gradient-sync switch, full checkpoints, a memory estimate).

Plain DDP keeps a full copy of the weights, gradients and AdamW state on every GPU: 16 bytes per
parameter, 128 GB for the 8B shape before a single activation. FSDP2 shards all three over the
processes (each decoder layer is its own unit, gathered just before it runs), so per GPU that is
16 N / world_size plus one or two gathered layers. `workbench.lm.train` uses it with
``LMTrainConfig.sharding = "fsdp"`` (the gpu-3b and gpu-8b profiles) under torchrun; one process
ignores it. The update equals DDP's and one process's gradient accumulation (tested on CPU with
gloo).

Checkpoints stay in the workbench format: the full weights are gathered to rank 0, which writes
the usual Hugging Face folder (`workbench.lm.model.save_checkpoint`); the optimizer state in
``trainer_state.pt`` is the full (unsharded) one, so a run resumes under any process count that
the data position allows. (For 8B that file holds 64 GB of AdamW moments: rank 0 needs that much
host memory at a checkpoint.)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch


def shard_model(model: Any, *, bf16: bool) -> Any:
    """Shard a `LlamaForCausalLM` in place over the default process group: each decoder layer is
    one FSDP unit, the root holds the embedding, final norm and LM head (tied or not). With
    `bf16` the gathered weights are bf16 and gradients are reduced in fp32 (master weights and
    optimizer state stay fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def is_sharded(model: Any) -> bool:
    return hasattr(model, "set_requires_gradient_sync")


def gradient_sync(model: Any, sync: bool) -> Any:
    """Context for one micro-batch's backward: gradients are reduced across processes only when
    `sync` (the last micro-batch of a step), for DDP and FSDP alike."""
    if is_sharded(model):
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if sync or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def to_float(value: Any) -> float:
    """A scalar that may be a DTensor (FSDP's gradient norm) as a Python float."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)


_FULL = dict(full_state_dict=True, cpu_offload=True)


def full_state(model: Any, optimizer: Any) -> tuple[dict | None, dict | None]:
    """(model state dict, optimizer state dict), both unsharded, on rank 0 (None elsewhere).
    A collective: every rank must call it."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
    )

    options = StateDictOptions(**_FULL)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    if dist.get_rank() != 0:
        return None, None
    return model_state, optim_state


def plain_model(model: Any, state: dict) -> Any:
    """An ordinary CPU `LlamaForCausalLM` holding `state` (what `save_pretrained` should see: the
    sharded module's class is FSDP's wrapper, its parameters DTensors)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        plain = LlamaForCausalLM(model.config)
    plain.load_state_dict(state, assign=True, strict=False)
    plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"gathered state dict lacks {missing[:3]}")
    plain.generation_config = model.generation_config
    return plain.eval()


def load_optimizer_state(model: Any, optimizer: Any, state: dict) -> None:
    """Load a full optimizer state dict (as `full_state` wrote it) into a sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


# ---------------------------------------------------------------------------------------------
# Memory estimate (printed before a launch)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU memory of one training configuration, in bytes (an estimate, see `estimate_memory`)."""

    n_params: int
    world_size: int
    sharding: str
    weights_grads_optimizer: float
    gathered_layers: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights_grads_optimizer + self.gathered_layers + self.activations + self.logits

    def describe(self) -> str:
        gb = 1e9
        return (f"per-GPU memory estimate ({self.sharding}, {self.world_size} process(es), "
                f"{self.n_params / 1e9:.2f}B parameters): weights+grads+AdamW {self.weights_grads_optimizer / gb:.1f} GB, "
                f"gathered layers {self.gathered_layers / gb:.1f} GB, activations {self.activations / gb:.1f} GB, "
                f"logits {self.logits / gb:.1f} GB; total {self.total / gb:.1f} GB")


def estimate_memory(model_config: Any, *, world_size: int, sharding: str, tokens_per_micro_batch: int,
                    bf16: bool = True) -> MemoryEstimate:
    """Per-GPU training memory of a Llama shape (`LlamaConfig`).

    - weights, gradients and AdamW moments in fp32: 16 bytes per parameter, divided by the
      process count under FSDP;
    - FSDP: two decoder layers gathered at once (the one running and the prefetched next),
      2 bytes per parameter in bf16;
    - activations kept for the backward pass, per layer and token, about
      2·(10·d + 2·d_kv + 3·d_ffn) bytes in bf16 (inputs of the norms, projections, SwiGLU and
      attention output; fused attention keeps no seq x seq matrix);
    - logits: bf16 output, its fp32 copy for the loss and its gradient, 10 bytes per token and
      vocabulary entry.

    Against the H200 measurement with the 1B shape, batch 8 x 2048 tokens, one GPU (55.5 GB
    peak): see tests."""
    from workbench.lm.flops import count_params

    n = count_params(model_config).n_params
    d, ffn, layers = model_config.hidden_size, model_config.intermediate_size, model_config.num_hidden_layers
    head_dim = getattr(model_config, "head_dim", None) or d // model_config.num_attention_heads
    d_kv = model_config.num_key_value_heads * head_dim
    state = 16.0 * n / (world_size if sharding == "fsdp" else 1)
    per_layer = (n - model_config.vocab_size * d * (1 if model_config.tie_word_embeddings else 2)) / layers
    gathered = 2 * per_layer * (2 if bf16 else 4) if sharding == "fsdp" and world_size > 1 else 0.0
    act_bytes = 2 if bf16 else 4
    activations = layers * tokens_per_micro_batch * act_bytes * (10 * d + 2 * d_kv + 3 * ffn)
    logits = tokens_per_micro_batch * model_config.vocab_size * (10 if bf16 else 12)
    return MemoryEstimate(n_params=n, world_size=world_size, sharding=sharding if world_size > 1 else "single",
                          weights_grads_optimizer=state, gathered_layers=gathered,
                          activations=float(activations), logits=float(logits))


def gpu_memory_bytes() -> float:
    """Memory of this process's GPU (math.inf without CUDA)."""
    if not torch.cuda.is_available():
        return math.inf
    return float(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)


__all__ = ["shard_model", "is_sharded", "gradient_sync", "to_float", "full_state", "plain_model",
           "load_optimizer_state", "MemoryEstimate", "estimate_memory", "gpu_memory_bytes"]
