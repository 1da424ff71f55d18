"""torch.compile for the LM's decoder layers (`LMTrainConfig.compile`).

Each decoder layer is compiled on its own (``nn.Module.compile``, in place): the module tree,
parameter names and checkpoints stay those of the plain model, FSDP2 units (one per layer) wrap
compiled layers as PyTorch recommends, and the parts transformers builds in Python around the
layers (masks, rotary tables) stay eager, so they cause no graph breaks. Layers share one compiled
graph (identical code), so compile time does not grow with depth. Shapes: packed rows and padded
batches vary in width; ``dynamic=None`` lets Dynamo mark the sequence dimension dynamic after the
first recompilation instead of compiling every width.

Measured against eager in benchmarks/gpu_check.py (step tokens/s, same batches, same run).
"""

from __future__ import annotations

from typing import Any


def compile_layers(model: Any, *, backend: str = "inductor", mode: str | None = None) -> Any:
    """Compile every decoder layer of a `LlamaForCausalLM` in place; returns the model."""
    for layer in model.model.layers:
        layer.compile(backend=backend, mode=mode, dynamic=None)
    return model


__all__ = ["compile_layers"]
