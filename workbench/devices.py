"""Which device a run uses, and where a model's inputs must go.

Two faults that only show on a GPU (measured on an H200, see the README's performance section):
``torch.device("cuda")`` carries no index, and ``torch.cuda.set_device`` rejects it; and a function
that builds its batches on the CPU fails on a GPU model with "Expected all tensors to be on the
same device". Every function that runs a model therefore asks `model_device` where the model
lives and moves its inputs there, and every trainer resolves its configured device through
`resolve_device`.
"""

from __future__ import annotations

from typing import Any

import torch


def normalise_device(device: torch.device, default_index: int) -> torch.device:
    """An accelerator device without an index gets `default_index` (the current device, or the
    process's local rank); CPU and indexed devices are returned unchanged."""
    if device.type in ("cpu", "meta") or device.index is not None:
        return device
    return torch.device(device.type, default_index)


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device a run named `name` uses: ``"auto"`` is the local rank's GPU when CUDA is
    available, else the CPU; ``"cuda"`` without an index becomes the local rank's (or the current)
    GPU. A GPU asked for on a machine without one is an error, not a silent CPU run."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"device {name!r}: not a torch device ({error})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
        default = local_rank if local_rank is not None else torch.cuda.current_device()
        return normalise_device(device, default)
    return device


def model_device(model: Any) -> torch.device:
    """Where a module's weights live (its first parameter, else its first buffer; CPU when it
    has neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


__all__ = ["normalise_device", "resolve_device", "model_device"]
