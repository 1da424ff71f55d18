"""Llasa's token layout and the sequences built from it (docs/reference.md §2).

The vocabulary is, in this order: the text tokenizer's own entries, the 8 special tokens below,
then one token ``<|s_k|>`` per codec code k. With the Llama-3 tokenizer (128,256 entries) this
puts the specials at 128256..128263 and ``<|s_k|>`` at 128264 + k, exactly as in the released
``HKUSTAudio/Llasa-*`` checkpoints; with a small corpus tokenizer the order is the same and only
the offsets move.

Sequence builders are pure functions of a tokenizer (only used to encode plain text and, when it
has one, to render its chat template), a `TokenLayout` and the inputs. Special and speech ids are
placed by the layout, never by parsing strings, so that a 2,000-frame utterance costs no string
work and a tokenizer that lacks the added tokens cannot silently shift them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|TEXT_GENERATION_START|>",
    "<|TEXT_GENERATION_END|>",
    "<|TEXT_UNDERSTANDING_START|>",
    "<|TEXT_UNDERSTANDING_END|>",
    "<|SPEECH_GENERATION_START|>",
    "<|SPEECH_GENERATION_END|>",
    "<|SPEECH_UNDERSTANDING_START|>",
    "<|SPEECH_UNDERSTANDING_END|>",
)
"""The 8 specials in the published order (their ids are text_vocab_size + index)."""

N_SPECIALS = len(SPECIAL_TOKENS)
TTS_INSTRUCTION = "Convert the text to speech:"
IGNORE_INDEX = -100  # what torch's cross_entropy and HF losses skip
_SPEECH_TOKEN_RE = re.compile(r"<\|s_(\d+)\|>")


def speech_token(code: int) -> str:
    """The token string of codec code `code`: ``<|s_{code}|>``."""
    return f"<|s_{int(code)}|>"


def speech_tokens(codebook_size: int) -> list[str]:
    return [speech_token(k) for k in range(codebook_size)]


def codes_from_text(text: str) -> list[int]:
    """Codes of all ``<|s_k|>`` tokens in a decoded string (how Llasa's own inference script reads
    its output); anything else in the string is ignored."""
    return [int(m) for m in _SPEECH_TOKEN_RE.findall(text)]


@dataclass(frozen=True)
class TokenLayout:
    """Where text, special and speech tokens live in the LM vocabulary."""

    text_vocab_size: int
    codebook_size: int

    def __post_init__(self) -> None:
        if self.text_vocab_size < 1 or self.codebook_size < 1:
            raise ValueError(
                f"TokenLayout needs text_vocab_size >= 1 and codebook_size >= 1, got "
                f"text_vocab_size={self.text_vocab_size}, codebook_size={self.codebook_size}"
            )

    # -- special ids, in the published order ------------------------------------------------
    @property
    def text_generation_start(self) -> int:
        return self.text_vocab_size + 0

    @property
    def text_generation_end(self) -> int:
        return self.text_vocab_size + 1

    @property
    def text_understanding_start(self) -> int:
        return self.text_vocab_size + 2

    @property
    def text_understanding_end(self) -> int:
        return self.text_vocab_size + 3

    @property
    def speech_generation_start(self) -> int:
        return self.text_vocab_size + 4

    @property
    def speech_generation_end(self) -> int:
        """End of speech: generation stops here (the checkpoint's eos_token_id)."""
        return self.text_vocab_size + 5

    @property
    def speech_understanding_start(self) -> int:
        return self.text_vocab_size + 6

    @property
    def speech_understanding_end(self) -> int:
        return self.text_vocab_size + 7

    @property
    def speech_offset(self) -> int:
        """Id of ``<|s_0|>``; code k has id speech_offset + k."""
        return self.text_vocab_size + N_SPECIALS

    @property
    def vocab_size(self) -> int:
        return self.speech_offset + self.codebook_size

    def special_ids(self) -> dict[str, int]:
        """Token string -> id for the 8 specials."""
        return {token: self.text_vocab_size + i for i, token in enumerate(SPECIAL_TOKENS)}

    # -- conversions -------------------------------------------------------------------------
    def speech_ids(self, codes: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Codec codes (any shape) -> LM token ids; raises on a code outside the codebook."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"codes must lie in [0, {self.codebook_size}); got min {int(codes.min())}, "
                f"max {int(codes.max())}"
            )
        return codes + self.speech_offset

    def codes_from_ids(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """LM token ids (all of them speech tokens) -> codec codes; raises on any other id."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        bad = ~self.is_speech(ids)
        if bool(bad.any()):
            raise ValueError(
                f"ids {ids[bad][:8].tolist()} are not speech tokens (speech ids are "
                f"[{self.speech_offset}, {self.vocab_size}))"
            )
        return ids - self.speech_offset

    def speech_codes(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Codec codes of the speech tokens among `ids`, in order; other ids (the interleaved
        layout's unit and end-of-unit tokens) are skipped."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        return ids[self.is_speech(ids)] - self.speech_offset

    def is_speech(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long)
        return (ids >= self.speech_offset) & (ids < self.vocab_size)

    def token_strings(self) -> list[str]:
        """The strings appended after the text vocabulary: 8 specials then K speech tokens."""
        return list(SPECIAL_TOKENS) + speech_tokens(self.codebook_size)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenLayout":
        return cls(text_vocab_size=int(data["text_vocab_size"]), codebook_size=int(data["codebook_size"]))


def layout_from_tokenizer(tokenizer: Any) -> TokenLayout:
    """Detect the layout of a tokenizer that already holds the specials and speech tokens (a
    workbench tokenizer or a ``HKUSTAudio/Llasa-*`` one). Raises when the tokens are missing or out
    of the published order."""
    vocab = tokenizer.get_vocab()
    first = vocab.get(SPECIAL_TOKENS[0])
    if first is None:
        raise ValueError(f"tokenizer has no {SPECIAL_TOKENS[0]}: not a Llasa/workbench tokenizer")
    for i, token in enumerate(SPECIAL_TOKENS):
        if vocab.get(token) != first + i:
            raise ValueError(
                f"special {token} has id {vocab.get(token)}, expected {first + i} (published order)"
            )
    layout_offset = first + N_SPECIALS
    if vocab.get(speech_token(0)) != layout_offset:
        raise ValueError(f"{speech_token(0)} has id {vocab.get(speech_token(0))}, expected {layout_offset}")
    # Count contiguous speech tokens; the tokenizer may hold nothing after them.
    codebook_size = 0
    while vocab.get(speech_token(codebook_size)) == layout_offset + codebook_size:
        codebook_size += 1
    return TokenLayout(text_vocab_size=first, codebook_size=codebook_size)


def check_tokenizer(tokenizer: Any, layout: TokenLayout) -> None:
    """Raise unless the tokenizer maps the specials and the first/last speech tokens to the ids the
    layout gives them (catches a tokenizer paired with the wrong codec or text vocabulary)."""
    expected = layout.special_ids()
    expected[speech_token(0)] = layout.speech_offset
    expected[speech_token(layout.codebook_size - 1)] = layout.vocab_size - 1
    for token, token_id in expected.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != token_id:
            raise ValueError(f"tokenizer maps {token} to {got}, layout expects {token_id}")


# ---------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------


@dataclass
class TokenSequence:
    """One training or inference sequence. `labels` is None for an inference prompt."""

    input_ids: list[int]
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def _encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def tts_prompt_ids(tokenizer: Any, layout: TokenLayout, text: str) -> list[int]:
    """Ids of the TTS prompt up to and including ``<|SPEECH_GENERATION_START|>``.

    With a chat template (Llama-3 style) the user turn is
    ``Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>`` and
    the assistant turn is opened and pre-filled with the start token, as Llasa's released
    inference code does (``continue_final_message=True``). Without a template: BOS (when the
    tokenizer has one) + the same pieces concatenated.
    """
    if has_chat_template(tokenizer):
        user = (f"{TTS_INSTRUCTION}{SPECIAL_TOKENS[2]}{text}{SPECIAL_TOKENS[3]}")
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": user},
             {"role": "assistant", "content": SPECIAL_TOKENS[4]}],
            tokenize=False, continue_final_message=True,
        )
        ids = _encode_text(tokenizer, rendered)
        # The rendered string is tokenized with the tokenizer's added tokens; check that the
        # specials landed where the layout says, or the model would train on the wrong ids.
        if not ids or ids[-1] != layout.speech_generation_start or layout.text_understanding_start not in ids:
            raise ValueError(
                "chat-template prompt does not end with <|SPEECH_GENERATION_START|> at id "
                f"{layout.speech_generation_start}: tokenizer and layout disagree (ids tail {ids[-5:]})"
            )
        return ids
    ids: list[int] = []
    if getattr(tokenizer, "bos_token_id", None) is not None:
        ids.append(int(tokenizer.bos_token_id))
    ids += _encode_text(tokenizer, TTS_INSTRUCTION)
    ids.append(layout.text_understanding_start)
    ids += _encode_text(tokenizer, text)
    ids.append(layout.text_understanding_end)
    ids.append(layout.speech_generation_start)
    return ids


def build_tts_sequence(tokenizer: Any, layout: TokenLayout, text: str,
                       codes: torch.Tensor | Sequence[int]) -> TokenSequence:
    """TTS training sequence: prompt, speech tokens, ``<|SPEECH_GENERATION_END|>``.

    Labels equal the ids from ``<|SPEECH_GENERATION_START|>`` through ``<|SPEECH_GENERATION_END|>``
    and IGNORE_INDEX elsewhere (docs/reference.md §2: template and text carry no loss). Labels are not
    shifted; the model shifts them, so the targets are the start token (predicted from the last
    prompt token), every speech token and the end token.
    """
    prompt = tts_prompt_ids(tokenizer, layout, text)
    speech = layout.speech_ids(codes).flatten().tolist()
    input_ids = prompt + speech + [layout.speech_generation_end]
    n_masked = len(prompt) - 1
    labels = [IGNORE_INDEX] * n_masked + input_ids[n_masked:]
    return TokenSequence(input_ids=input_ids, labels=labels)


def build_inference_prompt(tokenizer: Any, layout: TokenLayout, text: str,
                           prompt_text: str | None = None,
                           prompt_codes: torch.Tensor | Sequence[int] | None = None) -> TokenSequence:
    """Prompt for generation: ends with ``<|SPEECH_GENERATION_START|>`` (text-only TTS), or, for
    voice cloning, with the start token followed by the prompt's speech tokens, the text being
    prompt transcript + target text (Llasa's continuation recipe)."""
    if (prompt_text is None) != (prompt_codes is None):
        raise ValueError("voice cloning needs both prompt_text and prompt_codes (or neither)")
    full_text = text if prompt_text is None else prompt_text + text
    ids = tts_prompt_ids(tokenizer, layout, full_text)
    if prompt_codes is not None:
        ids += layout.speech_ids(prompt_codes).flatten().tolist()
    return TokenSequence(input_ids=ids)


def build_asr_sequence(tokenizer: Any, layout: TokenLayout, codes: torch.Tensor | Sequence[int],
                       transcript: str | None) -> TokenSequence:
    """ASR layout: ``<|SPEECH_UNDERSTANDING_START|>`` speech ``<|SPEECH_UNDERSTANDING_END|>``
    ``<|TEXT_GENERATION_START|>`` transcript ``<|TEXT_GENERATION_END|>``.

    With `transcript=None` this is the inference prompt (ending with TEXT_GENERATION_START, no
    labels). Otherwise labels cover TEXT_GENERATION_START through TEXT_GENERATION_END.
    """
    ids: list[int] = []
    if getattr(tokenizer, "bos_token_id", None) is not None:
        ids.append(int(tokenizer.bos_token_id))
    ids.append(layout.speech_understanding_start)
    ids += layout.speech_ids(codes).flatten().tolist()
    ids += [layout.speech_understanding_end, layout.text_generation_start]
    if transcript is None:
        return TokenSequence(input_ids=ids)
    n_masked = len(ids) - 1
    ids += _encode_text(tokenizer, transcript) + [layout.text_generation_end]
    labels = [IGNORE_INDEX] * n_masked + ids[n_masked:]
    return TokenSequence(input_ids=ids, labels=labels)


@dataclass
class ParsedTTS:
    """What a TTS sequence holds: the text between the understanding markers and the codes
    between the generation markers."""

    text: str
    codes: torch.Tensor  # (frames,) long
    ended: bool  # whether <|SPEECH_GENERATION_END|> was present


def _index(ids: list[int], token_id: int, what: str, start: int = 0) -> int:
    try:
        return ids.index(token_id, start)
    except ValueError:
        raise ValueError(f"sequence has no {what} (id {token_id})") from None


def parse_tts_sequence(tokenizer: Any, layout: TokenLayout, ids: Sequence[int]) -> ParsedTTS:
    """Inverse of `build_tts_sequence` (also reads generated sequences without an end token)."""
    ids = [int(i) for i in ids]
    t0 = _index(ids, layout.text_understanding_start, "<|TEXT_UNDERSTANDING_START|>")
    t1 = _index(ids, layout.text_understanding_end, "<|TEXT_UNDERSTANDING_END|>", t0)
    s0 = _index(ids, layout.speech_generation_start, "<|SPEECH_GENERATION_START|>", t1)
    text = tokenizer.decode(ids[t0 + 1: t1])
    try:
        s1 = ids.index(layout.speech_generation_end, s0)
        ended = True
    except ValueError:
        s1, ended = len(ids), False
    return ParsedTTS(text=text, codes=layout.codes_from_ids(ids[s0 + 1: s1]), ended=ended)


def parse_asr_sequence(tokenizer: Any, layout: TokenLayout, ids: Sequence[int]) -> tuple[torch.Tensor, str]:
    """Inverse of `build_asr_sequence`: (codes, transcript)."""
    ids = [int(i) for i in ids]
    a0 = _index(ids, layout.speech_understanding_start, "<|SPEECH_UNDERSTANDING_START|>")
    a1 = _index(ids, layout.speech_understanding_end, "<|SPEECH_UNDERSTANDING_END|>", a0)
    g0 = _index(ids, layout.text_generation_start, "<|TEXT_GENERATION_START|>", a1)
    try:
        g1 = ids.index(layout.text_generation_end, g0)
    except ValueError:
        g1 = len(ids)
    return layout.codes_from_ids(ids[a0 + 1: a1]), tokenizer.decode(ids[g0 + 1: g1])


__all__ = [
    "SPECIAL_TOKENS", "N_SPECIALS", "TTS_INSTRUCTION", "IGNORE_INDEX", "TokenLayout", "TokenSequence",
    "ParsedTTS", "speech_token", "speech_tokens", "codes_from_text", "layout_from_tokenizer",
    "check_tokenizer", "has_chat_template", "tts_prompt_ids", "build_tts_sequence",
    "build_inference_prompt", "build_asr_sequence", "parse_tts_sequence", "parse_asr_sequence",
]
