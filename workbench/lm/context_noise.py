"""Noise on the speech frames an LM reads, training only: an exposure-bias remedy.

Measured at cpu scale (docs/design.md, "Reading is not saying"): given the true past frames, a
small interleaved LM's next-frame predictions decode to speech as intelligible as the codec's own
resynthesis, yet its free-running samples are unintelligible even when the true durations are
forced. What breaks is the context: once the model's own imperfect frames are in it, a model that
learned to continue the previous frames drifts away from the text. Replacing a fraction of the
speech tokens in the *input* by random codebook entries, with the targets left true, teaches the
model that its past frames are unreliable evidence and that the text is not (the idea of scheduled
sampling, Bengio et al. 2015, with uniform noise in place of the model's own samples so that a
step costs one forward pass). Inference is unchanged: plain `generate`.

The draw depends only on (seed, optimizer step, micro-batch index), so a resumed run sees the same
noise as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from workbench.lm.layout import TokenLayout


def noise_generator(seed: int, step: int, micro_batch: int) -> torch.Generator:
    """The CPU generator of one micro-batch's noise (a function of the three numbers only)."""
    # Large odd multipliers keep nearby (step, micro_batch) pairs from sharing a seed.
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + micro_batch) % (2**63 - 1))


def corrupt_speech_inputs(input_ids: torch.Tensor, layout: TokenLayout, rate: float,
                          generator: torch.Generator) -> torch.Tensor:
    """A copy of `input_ids` where each speech token is, with probability `rate`, replaced by a
    speech token drawn uniformly from the codebook. Text, special and padding tokens are untouched."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"speech input noise rate = {rate!r}: must be in [0, 1]")
    ids_cpu = input_ids.detach().to("cpu")
    is_speech = (ids_cpu >= layout.speech_offset) & (ids_cpu < layout.speech_offset + layout.codebook_size)
    hit = (torch.rand(ids_cpu.shape, generator=generator) < rate) & is_speech
    random_codes = torch.randint(0, layout.codebook_size, ids_cpu.shape, generator=generator) + layout.speech_offset
    return torch.where(hit, random_codes, ids_cpu).to(input_ids.device)


def with_noisy_speech_inputs(batch: Any, layout: TokenLayout, rate: float, generator: torch.Generator) -> Any:
    """`batch` (a `workbench.lm.data.Batch`) with corrupted inputs and its labels unchanged (the
    model is still asked for the true frames)."""
    if rate <= 0.0:
        return batch
    return dataclasses.replace(batch, input_ids=corrupt_speech_inputs(batch.input_ids, layout, rate, generator))


__all__ = ["noise_generator", "corrupt_speech_inputs", "with_noisy_speech_inputs"]
