"""Many distinct English sentences for the synthetic pretraining corpus, from an installed package.

Kathleen has about a thousand training sentences, too few for an LM to learn to read its text. The
Debian package ``fortunes`` (the BSD fortune cookie files, ``apt-get install fortunes``) holds about
15,000 such sentences under a BSD licence; the example sentences of WordNet 3.0's glosses (package
``wordnet-base``, WordNet 3.0 licence) add about 34,000 more (see the corpus registry). This module turns its files into a deterministic list of sentences that a
synthesiser speaks well: plain ASCII prose, 4-20 words, mostly letters, no attributions, code,
dialogue markers or ASCII art. Sentences are deduplicated after `normalize_text`, and any whose
normalised text is a Kathleen sentence is dropped, so held-out Kathleen evaluation stays clean.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from workbench.verifiers.text import normalize_text

FORTUNES_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
SOURCES = ("fortunes", "wordnet")
# Cookie files a synthesiser cannot read as prose (pictures, Perl, translation tests); the
# offensive set lives in the "off/" subfolder (package fortunes-off) and is never read.
SKIPPED_FILES = frozenset({"art", "ascii-art", "perl", "translate-me", "linux", "debian"})
MIN_WORDS, MAX_WORDS = 4, 20

# A sentence ends at . ! or ? followed by space and a capital or a quote (so "e.g. the" and "3.5" do not split).
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(]?[A-Z])")
_ABBREVIATION_END = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|vs|etc|Inc|Ltd|Co|No|Vol|Gen|Col|Sgt|Rev|[A-Z])\.$")
_ALLOWED = re.compile(r"^[A-Za-z0-9 ,.;:!?'\"()-]+$")
_MARKUP = re.compile(r"(--|::|\w\(|\)\w|[A-Za-z]+:\s|\b[A-Z]{2,}\b.*\b[A-Z]{2,}\b|\d{3,}|www|http|\.com\b)")


@dataclass(frozen=True)
class SentenceFilter:
    """What a sentence must be to be spoken: bounds in words, share of letters among characters."""

    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS
    min_letter_fraction: float = 0.75


def read_strfile(path: str | Path) -> list[str]:
    """Entries of one fortune file (strfile source format: entries separated by lines holding '%')."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    entries, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current))
    return [entry for entry in entries if entry.strip()]


def fortune_files(directory: str | Path = FORTUNES_DIR) -> list[Path]:
    """The cookie files of `directory` in name order: not the binary .dat indexes, not the .u8
    links to the same files, not the offensive subfolder, not the files in SKIPPED_FILES."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no fortune files; install them with `apt-get install fortunes` "
                                "(scripts/bootstrap.sh does)")
    files = [p for p in sorted(directory.iterdir())
             if p.is_file() and not p.is_symlink() and "." not in p.name and p.name not in SKIPPED_FILES]
    if not files:
        raise FileNotFoundError(f"{directory}: no fortune files found (expected e.g. 'fortunes', 'wisdom')")
    return files


def _prose(entry: str) -> str | None:
    """The entry as one line of prose with its attribution line (and anything after it) dropped;
    None when nothing is left. Verse, code and pictures come through as run-on text that the
    sentence filter then refuses (no sentence end, odd characters, too many words)."""
    lines = [line.rstrip() for line in entry.splitlines()]
    kept = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(("--", "-- ", "- ")) or re.match(r"^\s{4,}\S", line) and kept and stripped[:1] == "-":
            break  # the attribution, and anything after it
        kept.append(stripped)
    return " ".join(kept) if kept else None


def split_sentences(text: str) -> list[str]:
    """Sentences of one line of prose; a full stop after a common abbreviation or an initial does not end one."""
    pieces = _SENTENCE_END.split(text)
    sentences: list[str] = []
    for piece in pieces:
        if sentences and _ABBREVIATION_END.search(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return [s.strip() for s in sentences if s.strip()]


def speaks_well(sentence: str, rules: SentenceFilter = SentenceFilter()) -> bool:
    """Plain ASCII prose of the allowed length that ends like a sentence and is mostly letters."""
    if not sentence.isascii() or not _ALLOWED.match(sentence) or _MARKUP.search(sentence):
        return False
    opening = sentence.lstrip("\"'(")
    if not opening[:1].isupper() or sentence[-1] not in ".!?\"'":
        return False
    if sentence.count('"') % 2 or sentence.count("(") != sentence.count(")"):
        return False  # a quotation or a parenthesis cut in half by the splitter
    words = sentence.split()
    if not rules.min_words <= len(words) <= rules.max_words:
        return False
    letters = sum(c.isalpha() for c in sentence)
    return letters / len(sentence.replace(" ", "")) >= rules.min_letter_fraction


def kathleen_sentences(mirror: str | Path | None = None) -> set[str]:
    """Normalised texts of every Kathleen utterance (all splits), from the data mirror."""
    from workbench.data.corpora import MIRROR_ENV

    root = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if not root:
        raise FileNotFoundError(f"${MIRROR_ENV} is not set: the Kathleen transcripts are needed to keep "
                                "Kathleen's sentences out of the pretraining corpus")
    path = Path(root) / "kathleen" / "transcripts.tsv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: Kathleen transcripts not found (set ${MIRROR_ENV} to the data mirror)")
    return {normalize_text(line.split("\t")[3]) for line in path.read_text(encoding="utf-8").splitlines()
            if line.count("\t") >= 3}


def fortune_sentences(directory: str | Path = FORTUNES_DIR, exclude: set[str] | frozenset[str] = frozenset(),
                      rules: SentenceFilter = SentenceFilter()) -> list[str]:
    """Distinct speakable sentences of the fortune files, in file then entry order (deterministic).

    Two sentences count as the same when their `normalize_text` forms are equal (the first is kept);
    a sentence whose normalised form is in `exclude` (e.g. `kathleen_sentences()`) is dropped.
    """
    seen = set(exclude)
    sentences = []
    for path in fortune_files(directory):
        for entry in read_strfile(path):
            prose = _prose(entry)
            if prose is None:
                continue
            # a spaced dash is a pause: spoken like a comma
            for sentence in split_sentences(" ".join(prose.replace(" -- ", ", ").split())):
                _keep_if_new(sentence, rules, seen, sentences)
    return sentences


def _keep_if_new(sentence: str, rules: SentenceFilter, seen: set[str], kept: list[str]) -> None:
    """Append `sentence` to `kept` when it speaks well and its normalised text is not in `seen`."""
    if not sentence or not speaks_well(sentence, rules):
        return
    key = normalize_text(sentence)
    if key and key not in seen:
        seen.add(key)
        kept.append(sentence)


def wordnet_examples(directory: str | Path = WORDNET_DIR) -> list[str]:
    """The quoted usage examples of WordNet's glosses (``data.noun`` ... ``data.adv``, in that
    order), as written: mostly lower-case clauses without a full stop."""
    directory = Path(directory)
    paths = [directory / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: WordNet not found; install it with "
                                "`apt-get install wordnet-base` (scripts/bootstrap.sh does)")
    examples = []
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header, or a synset without a gloss
            examples.extend(re.findall(r'"([^"]+)"', line.split(" | ", 1)[1]))
    return examples


def as_sentence(example: str) -> str:
    """A WordNet example written as a sentence: capital first letter, full stop if it has no end."""
    text = " ".join(example.split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def wordnet_sentences(directory: str | Path = WORDNET_DIR, exclude: set[str] | frozenset[str] = frozenset(),
                      rules: SentenceFilter = SentenceFilter()) -> list[str]:
    """Distinct speakable WordNet examples as sentences, deduplicated and filtered like `fortune_sentences`."""
    seen = set(exclude)
    sentences = []
    for example in wordnet_examples(directory):
        _keep_if_new(as_sentence(example), rules, seen, sentences)
    return sentences


def package_sentences(sources: tuple[str, ...] = SOURCES, exclude: set[str] | frozenset[str] = frozenset(),
                      rules: SentenceFilter = SentenceFilter()) -> list[str]:
    """Sentences of the named installed sources, in the order given, distinct across sources
    (after `normalize_text`) and none in `exclude`. Deterministic: same packages, same list."""
    readers = {"fortunes": fortune_sentences, "wordnet": wordnet_sentences}
    unknown = [s for s in sources if s not in readers]
    if unknown or not sources:
        raise ValueError(f"unknown sentence source(s) {unknown or sources!r}; known: {', '.join(readers)}")
    seen = set(exclude)
    sentences: list[str] = []
    for source in sources:
        fresh = readers[source](exclude=frozenset(seen), rules=rules)
        seen.update(normalize_text(s) for s in fresh)
        sentences.extend(fresh)
    return sentences
