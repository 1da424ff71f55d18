from pathlib import Path

import pytest

from workbench.data.corpora import get_corpus
from workbench.data.sentences import (
    FORTUNES_DIR, WORDNET_DIR, as_sentence, fortune_sentences, kathleen_sentences, package_sentences, read_strfile,
    speaks_well, split_sentences,
)
from workbench.verifiers.text import normalize_text


@pytest.fixture(scope="module")
def kathleen(mirror) -> set[str]:
    return kathleen_sentences(mirror)


@pytest.fixture(scope="module")
def both_packages(kathleen) -> list[str]:
    return package_sentences(exclude=kathleen)


def test_package_sentences_are_deterministic_many_distinct_and_never_kathleens(kathleen, both_packages):
    first = both_packages
    assert package_sentences(exclude=kathleen) == first
    normalised = [normalize_text(s) for s in first]
    assert len(set(normalised)) == len(first) >= 20_000
    assert not set(normalised) & kathleen
    assert len(kathleen) > 1000  # the exclusion really read Kathleen's transcripts
    assert all(4 <= len(s.split()) <= 20 and s.isascii() for s in first)


def test_fortunes_alone_give_thousands_and_wordnet_adds_the_rest(kathleen, both_packages):
    fortunes = package_sentences(("fortunes",), exclude=kathleen)
    assert 10_000 < len(fortunes) < 20_000 < len(both_packages)
    assert both_packages[: len(fortunes)] == fortunes


def test_an_excluded_sentence_and_a_repeat_are_left_out_after_normalising(tmp_path):
    (tmp_path / "cookies").write_text(
        "Author of the danger trail, Philip Steels, etc.\n%\n"  # Kathleen's first sentence
        "The more you sweat in peace, the less you bleed in war.\n%\n"
        "THE MORE you sweat in peace -- the less you bleed in war!\n%\n"  # the same words again
        "Never trust a computer you can't throw out a window.\n\t\t-- Steve Wozniak\n")
    (tmp_path / "cookies.dat").write_bytes(b"\x00\x02binary index")
    kept = fortune_sentences(tmp_path, exclude={normalize_text("Author of the danger trail, Philip Steels, etc.")})
    assert kept == ["The more you sweat in peace, the less you bleed in war.",
                    "Never trust a computer you can't throw out a window."]


def test_the_registry_records_the_licences_the_installed_packages_state():
    licence = get_corpus("synth_pretrain").licence
    fortunes_copyright = Path("/usr/share/doc/fortunes/copyright").read_text()
    wordnet_copyright = Path("/usr/share/doc/wordnet-base/copyright").read_text()
    assert "Regents of the University of California" in fortunes_copyright and "BSD" in fortunes_copyright
    assert "Regents of the University of California" in licence and "BSD" in licence
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in wordnet_copyright
    assert "WordNet 3.0" in licence and "Princeton" in licence
    assert FORTUNES_DIR.is_dir() and (WORDNET_DIR / "data.noun").exists()


def test_strfile_entries_split_on_percent_lines(tmp_path):
    path = tmp_path / "cookies"
    path.write_text("First one.\n%\nSecond\nentry.\n%\n")
    assert read_strfile(path) == ["First one.", "Second\nentry."]


@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith went home. He slept well!", ["Mr. Smith went home.", "He slept well!"]),
    ("Pi is 3.14 or so. Is it?", ["Pi is 3.14 or so.", "Is it?"]),
])
def test_sentences_split_at_ends_not_at_abbreviations(text, expected):
    assert split_sentences(text) == expected


@pytest.mark.parametrize("sentence, ok", [
    ("The more you sweat in peace, the less you bleed in war.", True),
    ("Nice try.", False),  # too short
    ("<knghtbrd> calc: 3Com could have you arrested.", False),  # IRC log
    ("QOTD: There may be no excuse for laziness at all.", False),  # a heading
    ("question = ( to ) ? be : ! be;", False),  # code
    ("He said \"stop and went home.", False),  # a quotation cut in half
    ("Caf\u00e9 society is not what it once was, they say.", False),  # not ASCII
])
def test_only_plain_prose_of_speakable_length_is_kept(sentence, ok):
    assert speaks_well(sentence) is ok


def test_wordnet_examples_become_sentences():
    assert as_sentence("the baby can walk pretty good") == "The baby can walk pretty good."
    assert as_sentence("Is it raining?") == "Is it raining?"
