"""Registry of named corpora: where each comes from, its licence, its layout, and where to find it.

A corpus is looked up, in order, in the folder given with ``--source``, then under the mirror folder
named by ``$WORKBENCH_DATA_MIRROR`` (``<mirror>/<mirror_subdir>``). Nothing is downloaded: the
workbench runs offline, so a missing corpus gets an error that says where it looked and how to
provide it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

MIRROR_ENV = "WORKBENCH_DATA_MIRROR"


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    layout: str  # a reader name in workbench.data.readers, or "manifest"
    origin: str
    licence: str
    description: str
    mirror_subdir: str = ""
    native_sample_rate: int = 16000
    # Upsampling cannot restore a missing band; allow it only where the corpus is known narrow-band.
    allow_upsample: bool = False


CORPORA: dict[str, CorpusSpec] = {}


def register_corpus(spec: CorpusSpec) -> CorpusSpec:
    CORPORA[spec.name] = spec
    return spec


register_corpus(CorpusSpec(
    "kathleen", "transcripts", mirror_subdir="kathleen",
    origin="rhasspy/dataset-voice-cathy (GitHub): the 1,132 CMU ARCTIC prompts read by one US-English female speaker",
    licence="CC0 1.0", description="58 min, 1 speaker, read speech; the default corpus"))
register_corpus(CorpusSpec(
    "vctk", "transcripts", mirror_subdir="vctk",
    origin="CSTR VCTK Corpus 0.92 (University of Edinburgh), speakers p225-p228, 10 utterances each",
    licence="CC BY 4.0", description="4 speakers (2 F / 2 M) for unseen-speaker evaluation"))
register_corpus(CorpusSpec(
    "ljspeech", "transcripts", mirror_subdir="ljspeech", native_sample_rate=22050,
    origin="LJ Speech 1.1 (Keith Ito), clips LJ001-0001..0032 in the mirror; bring the full corpus with --source",
    licence="public domain", description="1 female speaker, audiobook speech"))
register_corpus(CorpusSpec(
    "cmu_arctic", "transcripts", mirror_subdir="cmu_arctic",
    origin="CMU ARCTIC (Carnegie Mellon University) samples", licence="CMU ARCTIC licence (keep the notice)",
    description="7 samples from 2-3 speakers"))
register_corpus(CorpusSpec(
    "fsdd", "transcripts", mirror_subdir="fsdd", native_sample_rate=8000, allow_upsample=True,
    origin="Free Spoken Digit Dataset (Jakobovski et al.)", licence="CC BY-SA 4.0",
    description="spoken digits 0-9, 6 male speakers, 8 kHz"))
register_corpus(CorpusSpec(
    "libritts", "libritts", mirror_subdir="libritts", native_sample_rate=24000,
    origin="LibriTTS (Zen et al. 2019), OpenSLR SLR60; any subset folder", licence="CC BY 4.0",
    description="multi-speaker read English; bring it with --source or the mirror"))
register_corpus(CorpusSpec(
    "librispeech", "librispeech", mirror_subdir="librispeech",
    origin="LibriSpeech (Panayotov et al. 2015), OpenSLR SLR12; any subset folder", licence="CC BY 4.0",
    description="multi-speaker read English; bring it with --source or the mirror"))
register_corpus(CorpusSpec(
    "synth", "transcripts", mirror_subdir="",
    origin="made here by `workbench data synth` with espeak-ng from the CMU ARCTIC prompts",
    licence="as espeak-ng output: free to use; prompts under the CMU ARCTIC licence",
    description="deterministic multi-speaker synthetic speech (voices x pitch x rate)"))
register_corpus(CorpusSpec(
    "synth_pretrain", "transcripts", mirror_subdir="", native_sample_rate=22050,
    origin=("made here by `workbench data synth --pretrain` with espeak-ng from the sentences of two Debian "
            "packages: `fortunes` (the fortune-mod cookie files, /usr/share/games/fortunes, offensive set "
            "excluded) and `wordnet-base` (the usage examples of WordNet 3.0's glosses); Kathleen's "
            "sentences excluded"),
    licence=("audio: espeak-ng output, free to use; sentences: `fortunes` under fortune-mod's BSD licence "
             "(Copyright (c) 1991 The Regents of the University of California; 3-clause, advertising clause "
             "deleted; see /usr/share/doc/fortunes/copyright; the cookies are quotations collected from many "
             "authors), and `wordnet-base` under the WordNet 3.0 licence (Copyright 2006 Princeton "
             "University; use, copy, modify and distribute with the notice kept; see "
             "/usr/share/doc/wordnet-base/copyright)"),
    description="~20,000 distinct English sentences, each read once by one of 96 espeak-ng voices, for LM pretraining"))


def get_corpus(name: str) -> CorpusSpec:
    if name in CORPORA:
        return CORPORA[name]
    close = difflib.get_close_matches(name, list(CORPORA), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown corpus {name!r}{hint}; known: {', '.join(sorted(CORPORA))}. "
                   "Any other corpus can be prepared with --source DIR (layout detected).")


def find_source(name: str, source: str | Path | None = None) -> Path:
    """Folder (or manifest file) holding corpus `name`: `source` first, then the mirror."""
    looked: list[str] = []
    spec = CORPORA.get(name)
    if source is not None:  # given: used or refused, never silently replaced by the mirror's copy
        path = Path(source).expanduser()
        if path.exists():
            return path.resolve()
        raise FileNotFoundError(f"--source {path}: does not exist; give the folder or manifest file holding "
                                f"corpus {name!r}, or leave --source out to use the registry and the mirror")
    mirror = os.environ.get(MIRROR_ENV)
    if mirror and spec is not None and spec.mirror_subdir:
        path = Path(mirror).expanduser() / spec.mirror_subdir
        if path.exists():
            return path.resolve()
        looked.append(f"${MIRROR_ENV}/{spec.mirror_subdir} = {path} (does not exist)")
    elif not mirror:
        looked.append(f"${MIRROR_ENV} (not set)")
    if spec is None:
        get_corpus(name)  # raises with the list of known corpora
    raise FileNotFoundError(
        f"corpus {name!r} not found. Looked in: {'; '.join(looked) or 'nowhere'}.\n"
        f"Provide it with `workbench data prepare --corpus {name} --source DIR`, or set "
        f"{MIRROR_ENV} to a folder holding '{spec.mirror_subdir or name}/'. Origin: {spec.origin}; licence: {spec.licence}."
    )
