"""An interleaved text/speech layout (after ELLA-V), a departure from Llasa's layout for small budgets.

Llasa's layout puts the whole text first and then all speech tokens, so the model must learn by
itself which text position each frame says. With 2 CPU cores that attention never forms (the
text-conditioning gain stays near 0.005 nats; docs/design.md, "Making the LM read its text").
Here each text unit (a character, `workbench.align.forced.text_units`) is placed right before the
codec frames that say it, and an end-of-unit token closes its frames:

    BOS <|TEXT_UNDERSTANDING_START|> u1 u2 .. un <|TEXT_UNDERSTANDING_END|>
    <|SPEECH_GENERATION_START|> u1 s s s EOU u2 s s EOU .. un s s EOU <|SPEECH_GENERATION_END|>

The full text stays in front (the model can plan prosody ahead), the vocabulary order is Llasa's
(text entries, the 8 specials, speech tokens) and the model is a plain `LlamaForCausalLM`. Loss is
on the speech tokens and the end-of-unit tokens only: the unit tokens inside the speech are known
in advance, so inference forces them (`InterleavedUnits`): after each end-of-unit token the next
unit is inserted, and after the last one the end of speech. The model thus decides only how long
each unit lasts and what it sounds like. Durations for training come from forced alignment.

The text front-end is the character tokenizer (`workbench.lm.text_tokenizer.char_tokenizer`),
whose vocabulary holds the units and the end-of-unit token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from workbench.lm.layout import IGNORE_INDEX, TokenLayout, TokenSequence

END_OF_UNIT = "<|end_of_unit|>"
LAYOUTS = ("llasa", "interleaved")


def unit_ids(tokenizer: Any, units: str) -> list[int]:
    """Token ids of a unit string (one per character); raises on a character outside the vocabulary."""
    ids = tokenizer.convert_tokens_to_ids(list(units))
    unk = getattr(tokenizer, "unk_token_id", None)
    bad = sorted({c for c, i in zip(units, ids) if i is None or i == unk})
    if bad:
        raise ValueError(f"units {bad} are not in the character tokenizer's vocabulary")
    return list(ids)


def end_of_unit_id(tokenizer: Any) -> int:
    eou = tokenizer.convert_tokens_to_ids(END_OF_UNIT)
    if eou is None or eou == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"tokenizer has no {END_OF_UNIT}: the interleaved layout needs the character front-end")
    return int(eou)


def interleaved_prompt_ids(tokenizer: Any, layout: TokenLayout, units: str) -> list[int]:
    """The text part, up to and including ``<|SPEECH_GENERATION_START|>``."""
    ids: list[int] = []
    if getattr(tokenizer, "bos_token_id", None) is not None:
        ids.append(int(tokenizer.bos_token_id))
    ids.append(layout.text_understanding_start)
    ids += unit_ids(tokenizer, units)
    ids += [layout.text_understanding_end, layout.speech_generation_start]
    return ids


def build_interleaved_sequence(tokenizer: Any, layout: TokenLayout, units: str, frames: Sequence[int],
                               codes: torch.Tensor | Sequence[int]) -> TokenSequence:
    """Training sequence of one utterance from its units, codec frames per unit and codes."""
    codes = torch.as_tensor(codes).flatten()
    if len(units) != len(frames):
        raise ValueError(f"{len(units)} units but {len(frames)} durations")
    if sum(frames) != codes.numel():
        raise ValueError(f"durations sum to {sum(frames)} frames, the utterance has {codes.numel()}")
    eou = end_of_unit_id(tokenizer)
    prompt = interleaved_prompt_ids(tokenizer, layout, units)
    speech = layout.speech_ids(codes).tolist()
    ids = list(prompt)
    labels = [IGNORE_INDEX] * (len(prompt) - 1) + [layout.speech_generation_start]
    cursor = 0
    for unit_id, n in zip(unit_ids(tokenizer, units), frames):
        ids.append(unit_id)
        labels.append(IGNORE_INDEX)  # forced at inference: no loss
        ids += speech[cursor:cursor + n] + [eou]
        labels += speech[cursor:cursor + n] + [eou]
        cursor += n
    ids.append(layout.speech_generation_end)
    labels.append(IGNORE_INDEX)  # forced after the last end-of-unit
    return TokenSequence(input_ids=ids, labels=labels)


def interleaved_inference_prompt(tokenizer: Any, layout: TokenLayout, text: str, *, prompt_text: str | None = None,
                                 prompt_codes: torch.Tensor | Sequence[int] | None = None,
                                 prompt_frames: Sequence[int] | None = None) -> TokenSequence:
    """Generation prompt for `text`: the text part, ending with ``<|SPEECH_GENERATION_START|>``
    (`InterleavedUnits` then forces the first unit). For voice cloning, the prompt's units and
    codes follow, interleaved with `prompt_frames` (its alignment) or, without one, with its frames
    shared evenly among its units (an approximation the model only reads as context), and the
    prompt ends with the last end-of-unit token."""
    from workbench.align.forced import text_units

    if prompt_codes is None:
        return TokenSequence(input_ids=interleaved_prompt_ids(tokenizer, layout, text_units(text)))
    if prompt_text is None:
        raise ValueError("voice cloning needs both prompt_text and prompt_codes (or neither)")
    prompt_units = text_units(prompt_text)
    target_units = text_units(text)
    units = prompt_units + target_units[1:]  # the prompt's trailing silence is the gap between the two
    codes = torch.as_tensor(prompt_codes).flatten()
    if prompt_frames is None:
        n, k = codes.numel(), len(prompt_units)
        prompt_frames = [(n * (i + 1)) // k - (n * i) // k for i in range(k)]
    if len(prompt_frames) != len(prompt_units) or sum(prompt_frames) != codes.numel():
        raise ValueError(f"prompt_frames: {len(prompt_frames)} durations summing to {sum(prompt_frames)} for "
                         f"{len(prompt_units)} units and {codes.numel()} frames")
    voice = build_interleaved_sequence(tokenizer, layout, prompt_units, prompt_frames, codes).input_ids
    speech_part = voice[voice.index(layout.speech_generation_start) + 1:-1]  # drop the end of speech
    return TokenSequence(input_ids=interleaved_prompt_ids(tokenizer, layout, units) + speech_part)


def _last_index(row: list[int], token: int) -> int:
    for i in range(len(row) - 1, -1, -1):
        if row[i] == token:
            return i
    return -1


@dataclass
class InterleavedUnits:
    """Logits processor that drives generation through the units, reading everything it needs from
    each row itself (the units between the text markers, the end-of-unit tokens after
    ``<|SPEECH_GENERATION_START|>``): after the start token or an end-of-unit the next unit is
    forced, after the last one the end of speech; inside a unit only speech tokens and end-of-unit
    may be sampled, and a unit is closed by force after `max_frames_per_unit` frames (a model that
    never ends a unit would otherwise run to the length limit). Works with `model.generate`, the
    lean loop and the search's sampler, on left-padded batches and on partial continuations."""

    layout: TokenLayout
    eou_id: int
    max_frames_per_unit: int = 40

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        layout = self.layout
        out = torch.full_like(scores, float("-inf"))
        speech = slice(layout.speech_offset, layout.vocab_size)
        for r, row in enumerate(input_ids.tolist()):
            start = _last_index(row, layout.speech_generation_start)
            t0 = _last_index(row, layout.text_understanding_start)
            t1 = _last_index(row, layout.text_understanding_end)
            if start < 0 or t0 < 0 or t1 < t0:
                raise ValueError("interleaved generation needs the text markers and <|SPEECH_GENERATION_START|> in the prompt")
            units = row[t0 + 1:t1]
            region = row[start + 1:]
            n_done = region.count(self.eou_id)
            if layout.speech_generation_end in region or (not region or region[-1] == self.eou_id):
                if n_done >= len(units) or layout.speech_generation_end in region:
                    out[r, layout.speech_generation_end] = 0.0
                else:
                    out[r, units[n_done]] = 0.0
                continue
            last_eou = _last_index(region, self.eou_id)
            frames = len(region) - last_eou - 2  # speech tokens after this unit's own token
            if frames >= self.max_frames_per_unit:
                out[r, self.eou_id] = 0.0
            else:
                out[r, speech] = scores[r, speech]
                out[r, self.eou_id] = scores[r, self.eou_id]
        return out


def sequence_layout_of(tokenizer: Any) -> str:
    """The layout a saved tokenizer was trained with ("llasa" unless it records "interleaved" in its
    tokenizer_config.json, which the trainer writes)."""
    return str(getattr(tokenizer, "init_kwargs", {}).get("sequence_layout", "llasa"))


def is_interleaved(model: Any) -> bool:
    """Whether `model` was trained on the interleaved layout (recorded in its config.json)."""
    return getattr(getattr(model, "config", None), "sequence_layout", "llasa") == "interleaved"


def interleaved_processor(model: Any, layout: TokenLayout, max_frames_per_unit: int = 40) -> InterleavedUnits:
    eou = getattr(model.config, "end_of_unit_token_id", None)
    if eou is None:
        raise ValueError("interleaved model has no end_of_unit_token_id in its config")
    return InterleavedUnits(layout=layout, eou_id=int(eou), max_frames_per_unit=max_frames_per_unit)


def n_units_in(layout: TokenLayout, prompt_ids: Sequence[int]) -> int:
    """Units of a prompt's text part (each costs two generated tokens besides its frames)."""
    ids = list(prompt_ids)
    return max(0, _last_index(ids, layout.text_understanding_end) - _last_index(ids, layout.text_understanding_start) - 1)


__all__ = ["END_OF_UNIT", "LAYOUTS", "unit_ids", "end_of_unit_id", "interleaved_prompt_ids",
           "build_interleaved_sequence", "interleaved_inference_prompt", "InterleavedUnits",
           "interleaved_processor", "is_interleaved", "n_units_in", "sequence_layout_of"]
