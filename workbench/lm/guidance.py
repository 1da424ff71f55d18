"""Classifier-free guidance on the text: sample speech that leans harder on its words.

Measured at cpu scale (docs/design.md, "Reading is not saying"), a small interleaved LM's frames
say their words when the past frames are true and lose them once the past is its own output: the
model falls back on continuing the sound it has made instead of the unit it is on. Guidance
(Ho & Salimans 2022; used in TTS LMs such as Koel-TTS) measures that fallback and subtracts it.
The same network is trained to predict both with its text and without it (`text_dropout`: a
share of training rows have every text unit replaced by a blank token), and at inference each
step runs both and samples from

    log p_guided = log p(x | text, past) + (w - 1) * (log p(x | text, past) - log p(x | past)),

that is ``u + w (c - u)`` on log-probabilities, with ``w = guidance_scale``: 1 is plain
sampling, larger values push each frame towards what the text adds. The text-free twin of a
sequence keeps its length and every position, so both run in one batch of the same cache layout.

Only the character front-end has a spare entry for the blank (its unknown token, which no
normalised text produces); it serves both layouts. Training-time dropout changes inputs only:
text positions carry no loss in either layout, so the labels stay true.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TextGuidance:
    """What guidance needs of a tokenizer: the ids of its text units and the blank that replaces
    them in the text-free twin, and the scale (1 = off)."""

    unit_ids: torch.Tensor  # (n,) long, the character units' ids
    blank_id: int
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale >= 0:  # also rejects NaN
            raise ValueError(f"guidance_scale = {self.scale!r}: must be >= 0 (1 = no guidance)")

    def text_free(self, ids: torch.Tensor) -> torch.Tensor:
        """`ids` with every text unit replaced by the blank (same shape; speech, specials and
        end-of-unit tokens untouched)."""
        return torch.where(torch.isin(ids, self.unit_ids.to(ids.device)), torch.full_like(ids, self.blank_id), ids)

    def combine(self, with_text: torch.Tensor, without_text: torch.Tensor) -> torch.Tensor:
        """Guided log-probabilities from the two passes' logits (same shape, last axis the vocab)."""
        cond = torch.log_softmax(with_text.float(), dim=-1)
        if self.scale == 1.0:
            return cond
        uncond = torch.log_softmax(without_text.float(), dim=-1)
        return uncond + self.scale * (cond - uncond)


def text_guidance(tokenizer: Any, scale: float = 1.0) -> TextGuidance:
    """The guidance of a character-front-end tokenizer; a clear error for any other."""
    from workbench.lm.text_tokenizer import CHARACTERS

    unk = getattr(tokenizer, "unk_token_id", None)
    ids = tokenizer.convert_tokens_to_ids(list(CHARACTERS))
    if unk is None or any(i is None or i == unk for i in ids):
        raise ValueError("text guidance and text dropout need the character front-end (text_frontend='chars'): "
                         "its unknown token is the blank that replaces the text")
    return TextGuidance(unit_ids=torch.tensor(sorted(ids), dtype=torch.long), blank_id=int(unk), scale=scale)


def record_text_dropout(model_config: Any, guidance: TextGuidance, rate: float) -> None:
    """Write what guided sampling needs into a model's config (saved in its config.json)."""
    model_config.text_dropout = float(rate)
    model_config.text_blank_token_id = int(guidance.blank_id)
    model_config.text_unit_token_ids = [int(i) for i in guidance.unit_ids]


def guidance_for(model: Any, scale: float) -> TextGuidance | None:
    """Guidance at `scale` for sampling `model`, None at scale 1. Refuses a model that never saw
    text-free rows in training (its text-free predictions would be meaningless)."""
    if scale == 1.0:
        return None
    config = getattr(model, "config", None)
    dropout = float(getattr(config, "text_dropout", 0.0) or 0.0)
    if dropout <= 0 or getattr(config, "text_blank_token_id", None) is None:
        raise ValueError(f"guidance_scale = {scale!r} needs a model trained with text_dropout > 0 (this one: "
                         f"{dropout}): without text-free rows in training it has no text-free prediction to "
                         "guide against")
    return TextGuidance(unit_ids=torch.tensor(config.text_unit_token_ids, dtype=torch.long),
                        blank_id=int(config.text_blank_token_id), scale=scale)


def text_dropout_rows(n_rows: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """(n_rows,) bool: which rows of a micro-batch lose their text (each with probability `rate`)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"text dropout rate = {rate!r}: must be in [0, 1]")
    return torch.rand(n_rows, generator=generator) < rate


def with_text_dropout(batch: Any, guidance: TextGuidance, rate: float, generator: torch.Generator) -> Any:
    """`batch` (a `workbench.lm.data.Batch`) with each row's text units blanked with probability
    `rate`; labels unchanged (text carries no loss). A packed row's utterances drop together."""
    if rate <= 0.0:
        return batch
    ids = batch.input_ids
    drop = text_dropout_rows(ids.shape[0], rate, generator).to(ids.device)
    return dataclasses.replace(batch, input_ids=torch.where(drop[:, None], guidance.text_free(ids), ids))


__all__ = ["TextGuidance", "text_guidance", "record_text_dropout", "guidance_for", "text_dropout_rows", "with_text_dropout"]
