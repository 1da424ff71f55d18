"""Text tokenizers with Llasa's specials and speech tokens appended (docs/reference.md §2).

Two ways to get one, both returning a transformers fast tokenizer whose vocabulary is
text entries, then the 8 specials, then ``<|s_0|>``..``<|s_{K-1}|>``, so that
``AutoTokenizer.from_pretrained(saved_dir)`` reproduces it and ``<|s_k|>`` encodes to
``speech_offset + k``:

- `train_text_tokenizer`: a small byte-level BPE trained on the corpus transcripts (CPU runs,
  where a 128k-entry Llama-3 embedding would dwarf a 1M-parameter model).
- `extend_pretrained_tokenizer`: a Llama-3-style tokenizer from a local folder, extended exactly
  as Llasa extended Llama-3 (specials at 128256.., speech at 128264 + k).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from workbench.lm.layout import (
    SPECIAL_TOKENS, TokenLayout, check_tokenizer, layout_from_tokenizer, speech_tokens,
)

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|pad|>"
TEXT_SPECIALS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
"""Kept inside the text vocabulary (as Llama-3 keeps its own at 128000..128255)."""


@dataclass
class LMTokenizer:
    """A fast tokenizer holding the full LM vocabulary, and the layout it realises."""

    tokenizer: Any  # transformers PreTrainedTokenizerFast
    layout: TokenLayout

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        return out_dir


def _append_layout_tokens(tokenizer: Any, codebook_size: int) -> TokenLayout:
    """Append the 8 specials and K speech tokens to a transformers fast tokenizer, in order, and
    return the resulting layout (checked against the ids the tokenizer actually assigned)."""
    from tokenizers import AddedToken

    text_vocab_size = len(tokenizer)
    # Specials are "special" (skipped by decode(skip_special_tokens=True)); speech tokens are not,
    # so a decoded generation still shows them as <|s_k|> strings, as with Llasa's tokenizer.
    # normalized=False: match the literal string, never a normalised variant of it.
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False)
                          for t in speech_tokens(codebook_size)])
    layout = TokenLayout(text_vocab_size=text_vocab_size, codebook_size=codebook_size)
    if len(tokenizer) != layout.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} entries after appending, layout expects "
            f"{layout.vocab_size}: some of the appended tokens already existed"
        )
    check_tokenizer(tokenizer, layout)
    return layout


def train_text_tokenizer(texts: Iterable[str], codebook_size: int, text_vocab_size: int = 512,
                         *, min_frequency: int = 2,
                         chat_template: str | None = None) -> LMTokenizer:
    """Train a byte-level BPE on `texts` (at most `text_vocab_size` entries including the 256
    byte symbols and BOS/EOS/PAD) and append the Llasa tokens.

    Byte-level means every string is encodable (no unknown token), which matters for test
    sentences with characters absent from a small corpus. The trained vocabulary may come out
    smaller than asked for on a tiny corpus; the layout uses the actual size.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if not texts:
        raise ValueError("train_text_tokenizer needs at least one text")
    if text_vocab_size < 256 + len(TEXT_SPECIALS):
        raise ValueError(f"text_vocab_size={text_vocab_size} < 259 (256 bytes + BOS/EOS/PAD)")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=text_vocab_size, min_frequency=min_frequency, special_tokens=list(TEXT_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    layout = _append_layout_tokens(tokenizer, codebook_size)
    return LMTokenizer(tokenizer=tokenizer, layout=layout)


UNK_TOKEN = "<|unk|>"
CHARACTERS = " '" + "abcdefghijklmnopqrstuvwxyz"
"""The character front-end's units: what `normalize_text` leaves (digits are spelled out)."""


def char_tokenizer(codebook_size: int) -> LMTokenizer:
    """The character front-end: one token per character of normalised text (lowercase letters,
    apostrophe, space), plus BOS/EOS/PAD, an unknown token and the interleaved layout's
    end-of-unit token, then the Llasa tokens. Nothing is learned, so it is the same for every
    corpus: text is normalised first (`workbench.align.forced.text_units`), the same function at
    training and at inference."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from workbench.lm.interleaved import END_OF_UNIT

    entries = list(TEXT_SPECIALS) + [UNK_TOKEN, END_OF_UNIT] + list(CHARACTERS)
    core = Tokenizer(models.WordLevel({token: i for i, token in enumerate(entries)}, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character alone
    core.decoder = decoders.Fuse()  # decode joins characters without separators
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                        pad_token=PAD_TOKEN, unk_token=UNK_TOKEN)
    tokenizer.add_special_tokens({"additional_special_tokens": [END_OF_UNIT]})
    layout = _append_layout_tokens(tokenizer, codebook_size)
    return LMTokenizer(tokenizer=tokenizer, layout=layout)


def extend_pretrained_tokenizer(path: str | Path, codebook_size: int) -> LMTokenizer:
    """Load a Llama-3-style tokenizer from a local folder and append the Llasa tokens after its
    whole vocabulary (for Llama-3: 128,256 entries, so specials at 128256.. and ``<|s_k|>`` at
    128264 + k). A tokenizer that already has them (a Llasa checkpoint's) is returned as is,
    provided its codebook size matches."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if SPECIAL_TOKENS[0] in tokenizer.get_vocab():
        layout = layout_from_tokenizer(tokenizer)
        if layout.codebook_size != codebook_size:
            raise ValueError(
                f"{path}: tokenizer already holds {layout.codebook_size} speech tokens, "
                f"codec has codebook_size {codebook_size}"
            )
        return LMTokenizer(tokenizer=tokenizer, layout=layout)
    if tokenizer.pad_token is None:
        # Llama-3 has no pad token; padding is masked anyway, so reuse EOS (a text-side id that
        # is never a training target in TTS sequences).
        tokenizer.pad_token = tokenizer.eos_token
    layout = _append_layout_tokens(tokenizer, codebook_size)
    return LMTokenizer(tokenizer=tokenizer, layout=layout)


def load_lm_tokenizer(path: str | Path) -> LMTokenizer:
    """Load a saved tokenizer that already has the Llasa tokens and detect its layout."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return LMTokenizer(tokenizer=tokenizer, layout=layout_from_tokenizer(tokenizer))


__all__ = [
    "LMTokenizer", "train_text_tokenizer", "char_tokenizer", "extend_pretrained_tokenizer", "load_lm_tokenizer",
    "BOS_TOKEN", "EOS_TOKEN", "PAD_TOKEN",
]
