"""A small KV-cached sampling loop whose rows can be forked, pruned and continued.

`model.generate` cannot stop every M tokens, let a verifier choose among rows and carry on from
the chosen rows' caches, which is what beam search with a process verifier needs (Llasa §5). This
loop keeps one `DynamicCache` for a batch of rows that all share the same length (they all start
from one prompt and advance in lock step, so no padding and no attention mask are needed), and
forks or prunes rows with `batch_select_indices` (an index_select on every layer's keys/values).
The prompt is run through the model once; every later step feeds one token per row.

Invariant: the cache holds every position of `sequences` except the last one, which is the token
to feed next (`pending`). Keeping the last token unfed means a fork or prune never wastes a
forward on rows that are about to be dropped.

Sampling mirrors `model.generate` with `workbench.lm.generate.SamplingConfig`: repetition penalty,
then the speech-only mask, then temperature, top-k and top-p (transformers' own warpers), then a
multinomial draw from a private `torch.Generator` (so search does not disturb global RNG state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from workbench.lm.flops import generation_flops
from workbench.lm.generate import SamplingConfig
from workbench.lm.interleaved import interleaved_processor, is_interleaved
from workbench.lm.layout import TokenLayout
from workbench.lm.model import cache_kwarg


@dataclass
class DecodeState:
    """Rows being decoded after one shared prompt."""

    cache: Any  # transformers DynamicCache over sequences[:, :-1]
    sequences: torch.Tensor  # (rows, prompt_len + n_steps) long; the last column is not in the cache
    prompt_len: int
    ended: torch.Tensor  # (rows,) bool: sampled end-of-speech
    n_new: torch.Tensor  # (rows,) long: generated tokens, the end token included
    # Classifier-free guidance on the text (`workbench.lm.guidance.TextGuidance`): the cache then
    # holds 2 x rows, every row's text-free twin after all the rows
    guidance: Any = None

    @property
    def n_rows(self) -> int:
        return int(self.sequences.shape[0])

    @property
    def n_steps(self) -> int:
        """Tokens generated per row so far (finished rows are padded with the end token)."""
        return int(self.sequences.shape[1]) - self.prompt_len

    def generated(self, row: int) -> torch.Tensor:
        """Row `row`'s generated ids up to (excluding) its end token."""
        n = int(self.n_new[row]) - (1 if bool(self.ended[row]) else 0)
        return self.sequences[row, self.prompt_len: self.prompt_len + n]

    def select(self, rows: torch.Tensor | list[int]) -> "DecodeState":
        """Keep (and repeat, when an index appears several times) these rows, in this order.

        Modifies the cache in place and returns the state for the new rows; the old state must not
        be used afterwards (its cache now has the new rows)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        if index.numel() == 0:
            raise ValueError("select needs at least one row")
        cache_index = index if self.guidance is None else torch.cat([index, index + self.n_rows])
        if self.cache.get_seq_length() > 0:
            self.cache.batch_select_indices(cache_index.to(self.sequences.device))
        return DecodeState(cache=self.cache, sequences=self.sequences[index], prompt_len=self.prompt_len,
                           ended=self.ended[index], n_new=self.n_new[index], guidance=self.guidance)


class Sampler:
    """Draws the next token of every row, as `model.generate` would with this `SamplingConfig`."""

    def __init__(self, model: Any, layout: TokenLayout, sampling: SamplingConfig, seed: int) -> None:
        from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                  TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        self.model = model
        self.layout = layout
        self.end_id = layout.speech_generation_end
        self.greedy = sampling.temperature <= 0
        processors = LogitsProcessorList()
        if sampling.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
        self.blocked: torch.Tensor | None = None
        if is_interleaved(model):  # units forced in turn; between them only speech and end-of-unit
            processors.append(interleaved_processor(model, layout))
        elif sampling.speech_only:
            allowed = torch.zeros(model.config.vocab_size, dtype=torch.bool)
            allowed[layout.speech_offset: layout.vocab_size] = True
            allowed[self.end_id] = True
            self.blocked = ~allowed
        self.warpers = LogitsProcessorList()
        if not self.greedy:
            if sampling.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k:
                self.warpers.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(sampling.top_p))
        self.processors = processors
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(int(seed))

    def draw(self, sequences: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        scores = self.processors(sequences, logits)
        if self.blocked is not None:
            scores = scores.masked_fill(self.blocked.to(scores.device), float("-inf"))
        if self.greedy:
            return scores.argmax(dim=-1)
        scores = self.warpers(sequences, scores)
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator)[:, 0]


@torch.no_grad()
def prefill(model: Any, prompt_ids: list[int] | torch.Tensor, guidance: Any = None) -> DecodeState:
    """Run the prompt (all but its last token) once; one row (and its text-free twin with
    `guidance`)."""
    from transformers import DynamicCache

    ids = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1)
    if ids.shape[1] < 2:
        raise ValueError(f"prompt must have at least 2 tokens, got {ids.shape[1]}")
    device = next(model.parameters()).device
    ids = ids.to(device)
    cache = DynamicCache(config=model.config)
    # logits_to_keep=1: the prompt's logits are not needed, only its keys and values.
    rows = ids[:, :-1] if guidance is None else torch.cat([ids[:, :-1], guidance.text_free(ids[:, :-1])])
    model(input_ids=rows, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
    return DecodeState(cache=cache, sequences=ids, prompt_len=int(ids.shape[1]),
                       ended=torch.zeros(1, dtype=torch.bool, device=device),
                       n_new=torch.zeros(1, dtype=torch.long, device=device), guidance=guidance)


@torch.no_grad()
def next_logits(model: Any, state: DecodeState) -> torch.Tensor:
    """Feed every row's pending token and return the next-token logits (rows, vocab) in fp32.
    Advances the cache by one position. Guided: the guided log-probabilities (`lm.guidance`)."""
    pending = state.sequences[:, -1:]
    if state.guidance is not None:
        pending = torch.cat([pending, state.guidance.text_free(pending)])
    logits = model(input_ids=pending, use_cache=True, **{cache_kwarg(model): state.cache}).logits[:, -1].float()
    if state.guidance is None:
        return logits
    return state.guidance.combine(logits[: state.n_rows], logits[state.n_rows:])


@torch.no_grad()
def extend(model: Any, state: DecodeState, sampler: Sampler, n_tokens: int) -> DecodeState:
    """Sample up to `n_tokens` more tokens on every row (stops early once every row has ended).
    Rows that end keep being padded with the end token, uncounted in `n_new`."""
    for _ in range(n_tokens):
        if bool(state.ended.all()):
            break
        tokens = sampler.draw(state.sequences, next_logits(model, state))
        tokens = torch.where(state.ended, torch.full_like(tokens, sampler.end_id), tokens)
        state.n_new += (~state.ended).long()
        state.ended |= tokens == sampler.end_id
        state.sequences = torch.cat([state.sequences, tokens[:, None]], dim=1)
    return state


def prefill_flops(config: Any, prompt_len: int) -> float:
    """FLOPs of running a prompt of this length once."""
    return generation_flops(config, prompt_len, 0).with_embedding


def token_flops(config: Any, prompt_len: int, start: int, stop: int) -> float:
    """FLOPs of one row's generated positions [start, stop) after a prompt of `prompt_len`
    (each position attends to everything before it, `workbench.lm.flops` convention)."""
    if stop <= start:
        return 0.0
    return (generation_flops(config, prompt_len + stop, 0).with_embedding
            - generation_flops(config, prompt_len + start, 0).with_embedding)


__all__ = ["DecodeState", "Sampler", "extend", "next_logits", "prefill", "prefill_flops", "token_flops"]
