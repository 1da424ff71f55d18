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


def interleaved_inference_prompt(tokenizer: Any, layout: TokenLayout, units: str) -> TokenSequence:
    """Generation prompt: the text part and the first unit (the rest are forced as generation goes)."""
    return TokenSequence(input_ids=interleaved_prompt_ids(tokenizer, layout, units) + unit_ids(tokenizer, units[:1]))


@dataclass
class InterleavedUnits:
    """Logits processor that drives generation through the units: between units only speech tokens
    and end-of-unit may be sampled; after an end-of-unit the next unit is forced, after the last one
    the end of speech. A unit longer than `max_frames_per_unit` is closed by force (a model that
    never ends a unit would otherwise run to the length limit). Works with `model.generate` and the
    lean loop, batched, one unit string per prompt row (rows of `num_return_sequences` share one)."""

    layout: TokenLayout
    eou_id: int
    units: list[list[int]]  # per prompt, the unit ids
    prompt_length: int  # padded prompt length (the first unit is its last token)
    num_return_sequences: int = 1
    max_frames_per_unit: int = 40

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.prompt_length:]
        out = torch.full_like(scores, float("-inf"))
        speech = slice(self.layout.speech_offset, self.layout.vocab_size)
        for row in range(input_ids.shape[0]):
            units = self.units[row // self.num_return_sequences]
            tokens = generated[row]
            n_done = int((tokens == self.eou_id).sum())
            last = int(tokens[-1]) if tokens.numel() else None
            if n_done >= len(units):
                out[row, self.layout.speech_generation_end] = 0.0
            elif last == self.eou_id:
                out[row, units[n_done]] = 0.0
            else:
                since = tokens.numel()
                hits = (tokens == self.eou_id).nonzero()
                if len(hits):
                    since = tokens.numel() - int(hits[-1]) - 2  # frames after the forced unit token
                if since >= self.max_frames_per_unit:
                    out[row, self.eou_id] = 0.0
                else:
                    out[row, speech] = scores[row, speech]
                    out[row, self.eou_id] = scores[row, self.eou_id]
        return out


def interleaved_processor(tokenizer: Any, layout: TokenLayout, unit_strings: Sequence[str], prompt_length: int,
                          num_return_sequences: int = 1, max_frames_per_unit: int = 40) -> InterleavedUnits:
    return InterleavedUnits(layout=layout, eou_id=end_of_unit_id(tokenizer),
                            units=[unit_ids(tokenizer, u) for u in unit_strings], prompt_length=prompt_length,
                            num_return_sequences=num_return_sequences, max_frames_per_unit=max_frames_per_unit)


__all__ = ["END_OF_UNIT", "LAYOUTS", "unit_ids", "end_of_unit_id", "interleaved_prompt_ids",
           "build_interleaved_sequence", "interleaved_inference_prompt", "InterleavedUnits",
           "interleaved_processor"]
