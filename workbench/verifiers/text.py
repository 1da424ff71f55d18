"""The one text normaliser every ASR verifier uses, and word error rate (via jiwer).

WER depends on normalisation as much as on the recogniser, so all ASR verifiers and all reports
share `normalize_text`: lowercase, ASCII-folded, punctuation removed (apostrophes inside words
kept: "don't", "i'm"), hyphens split words, digits spelled out the way the corpora write numbers
(the CMU ARCTIC / Kathleen prompts write "twentieth", "forty-two"; pocketsphinx only emits words,
Whisper emits digits), whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                      "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def cardinal_words(n: int) -> str:
    """Spell a non-negative integer in US English without "and": 1455 -> "one thousand four
    hundred fifty five" (hyphens are spaces because the normaliser splits on them anyway)."""
    if n < 0:
        return "minus " + cardinal_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + cardinal_words(rest))
    for value, word in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return cardinal_words(head) + " " + word + ("" if rest == 0 else " " + cardinal_words(rest))
    raise AssertionError(n)  # unreachable: every n >= 1000 meets a scale


def year_words(n: int) -> str:
    """Read a year the way people say it: 1455 -> "fourteen fifty five", 1905 -> "nineteen oh
    five", 1900 -> "nineteen hundred"."""
    head, tail = divmod(n, 100)
    if tail == 0:
        return cardinal_words(head) + " hundred"
    if tail < 10:
        return cardinal_words(head) + " oh " + _ONES[tail]
    return cardinal_words(head) + " " + cardinal_words(tail)


def ordinal_words(n: int) -> str:
    """20 -> "twentieth", 42 -> "forty second"."""
    words = cardinal_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


# An integer (optionally with thousands commas), an optional decimal part, an optional ordinal suffix.
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(st|nd|rd|th)?(?![\w])")


def _spell_number(match: re.Match[str]) -> str:
    integer_text, decimals, suffix = match.group(1), match.group(2), match.group(3)
    n = int(integer_text.replace(",", ""))
    if suffix:
        words = ordinal_words(n)
    elif decimals is None and "," not in integer_text and len(integer_text) == 4 and (
            1100 <= n <= 1999 or 2010 <= n <= 2099):
        # A bare four-digit number in these spans is almost always a year in read speech.
        words = year_words(n)
    else:
        words = cardinal_words(n)
    if decimals:
        words += " point " + " ".join(_ONES[int(d)] for d in decimals[1:])
    return " " + words + " "


def normalize_text(text: str) -> str:
    """Canonical form for WER: see the module docstring. Idempotent."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))  # café -> cafe
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = text.replace("%", " percent ").replace("&", " and ")
    text = _NUMBER.sub(_spell_number, text)
    text = text.lower()
    text = re.sub(r"[^a-z0-9']+", " ", text)  # punctuation, hyphens and dashes become spaces
    text = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", text)  # quotes, not in-word apostrophes
    return " ".join(text.split())


@dataclass(frozen=True)
class WordErrors:
    """Edit counts of one hypothesis (or a summed corpus) against its reference."""

    substitutions: int
    deletions: int
    insertions: int
    n_reference_words: int

    @property
    def n_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Word error rate as a fraction (can exceed 1 with many insertions)."""
        return self.n_errors / self.n_reference_words

    def __add__(self, other: "WordErrors") -> "WordErrors":
        return WordErrors(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions,
                          self.n_reference_words + other.n_reference_words)


def word_errors(reference: str, hypothesis: str, normalize: bool = True) -> WordErrors:
    """Substitutions, deletions and insertions of `hypothesis` against `reference` (both
    normalised first unless `normalize` is False). An empty reference raises: WER is undefined."""
    import jiwer

    ref = normalize_text(reference) if normalize else " ".join(reference.split())
    hyp = normalize_text(hypothesis) if normalize else " ".join(hypothesis.split())
    if not ref:
        raise ValueError(f"empty reference after normalisation (reference was {reference!r}); WER is undefined")
    if not hyp:
        # Everything deleted; jiwer handles this too, but the answer is plain and avoids an edge case.
        return WordErrors(0, len(ref.split()), 0, len(ref.split()))
    out = jiwer.process_words(ref, hyp)
    return WordErrors(int(out.substitutions), int(out.deletions), int(out.insertions), len(ref.split()))


def wer(reference: str, hypothesis: str, normalize: bool = True) -> float:
    """Word error rate of one utterance, as a fraction."""
    return word_errors(reference, hypothesis, normalize).wer


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> float:
    """Corpus WER: total errors over total reference words (not the mean of per-utterance WERs,
    which over-weights short utterances)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("corpus_wer of an empty list")
    total = WordErrors(0, 0, 0, 0)
    for ref, hyp in zip(references, hypotheses):
        total = total + word_errors(ref, hyp, normalize)
    return total.wer
