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

Measured, uniform noise multiplies the text gain but leaves free-running WER where it was: random
codes are not the errors the model makes. `speech_input_noise_source = "model"` replaces the chosen
tokens by the model's own samples instead, the parallel scheduled sampling of Mihaylova & Martins
(2019): a first forward pass without gradients on the true inputs gives, at every speech position,
a code sampled from the model's prediction for it; the chosen positions take those codes, and the
ordinary forward and backward pass runs on the mix (targets true). One extra forward pass without
gradients: measured 0.70x the tokens/s of uniform noise (benchmarks/lm_speed.py, row 6).
Measured at cpu scale it lowers validation loss and leaves free-running WER where uniform noise
left it (docs/design.md, "Two more levers against exposure bias").

The draw depends only on (seed, optimizer step, micro-batch index) and, for the model's samples, on
the weights, which a resumed run restores exactly: it sees the same inputs as an uninterrupted one.
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


def _is_speech(ids: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    return (ids >= layout.speech_offset) & (ids < layout.speech_offset + layout.codebook_size)


def corrupt_speech_inputs(input_ids: torch.Tensor, layout: TokenLayout, rate: float,
                          generator: torch.Generator) -> torch.Tensor:
    """A copy of `input_ids` where each speech token is, with probability `rate`, replaced by a
    speech token drawn uniformly from the codebook. Text, special and padding tokens are untouched."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"speech input noise rate = {rate!r}: must be in [0, 1]")
    ids_cpu = input_ids.detach().to("cpu")
    hit = (torch.rand(ids_cpu.shape, generator=generator) < rate) & _is_speech(ids_cpu, layout)
    random_codes = torch.randint(0, layout.codebook_size, ids_cpu.shape, generator=generator) + layout.speech_offset
    return torch.where(hit, random_codes, ids_cpu).to(input_ids.device)


def sample_own_speech_codes(speech_logits: torch.Tensor, generator: torch.Generator,
                            temperature: float = 1.0) -> torch.Tensor:
    """Codes (0 .. K-1, shape (B, L)) where position t holds a draw from the model's prediction
    for position t, that is from `speech_logits[:, t - 1]` (shape (B, L, K): the logits restricted
    to the codebook); position 0 has no prediction and gets code 0 (never a speech position)."""
    if not temperature > 0:
        raise ValueError(f"own-sample temperature = {temperature!r}: must be > 0")
    batch, length, codebook = speech_logits.shape
    probs = torch.softmax(speech_logits.detach().float().to("cpu") / temperature, dim=-1)
    drawn = torch.multinomial(probs[:, :-1].reshape(-1, codebook), 1, generator=generator).view(batch, length - 1)
    return torch.cat([torch.zeros(batch, 1, dtype=torch.long), drawn], dim=1)


def replace_speech_inputs(input_ids: torch.Tensor, layout: TokenLayout, rate: float, codes: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """A copy of `input_ids` where each speech token is, with probability `rate`, replaced by the
    code `codes` holds at its position (0 .. K-1, same shape). Other tokens are untouched."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"speech input noise rate = {rate!r}: must be in [0, 1]")
    if codes.shape != input_ids.shape:
        raise ValueError(f"replacement codes of shape {tuple(codes.shape)} for inputs of shape {tuple(input_ids.shape)}")
    ids_cpu = input_ids.detach().to("cpu")
    hit = (torch.rand(ids_cpu.shape, generator=generator) < rate) & _is_speech(ids_cpu, layout)
    return torch.where(hit, codes.to("cpu") + layout.speech_offset, ids_cpu).to(input_ids.device)


def with_own_speech_inputs(batch: Any, layout: TokenLayout, rate: float, generator: torch.Generator,
                           speech_logits: Any) -> Any:
    """`batch` with a `rate` share of its input speech tokens replaced by the model's own samples,
    labels unchanged. `speech_logits(batch)` runs the model without gradients on the true inputs
    and returns its logits over the codebook, shape (B, L, K)."""
    if rate <= 0.0:
        return batch
    codes = sample_own_speech_codes(speech_logits(batch), generator)
    return dataclasses.replace(batch, input_ids=replace_speech_inputs(batch.input_ids, layout, rate, codes, generator))


def with_noisy_speech_inputs(batch: Any, layout: TokenLayout, rate: float, generator: torch.Generator) -> Any:
    """`batch` (a `workbench.lm.data.Batch`) with corrupted inputs and its labels unchanged (the
    model is still asked for the true frames)."""
    if rate <= 0.0:
        return batch
    return dataclasses.replace(batch, input_ids=corrupt_speech_inputs(batch.input_ids, layout, rate, generator))


__all__ = ["noise_generator", "corrupt_speech_inputs", "with_noisy_speech_inputs", "sample_own_speech_codes",
           "replace_speech_inputs", "with_own_speech_inputs"]
