"""A deterministic multi-speaker corpus synthesised with espeak-ng.

Kathleen has one speaker, so voice cloning and speaker-similarity experiments need more voices.
espeak-ng gives many: a "speaker" here is one (accent voice, variant, pitch, rate) combination,
which changes formants, pitch and timing the way speakers differ. Output is a raw corpus in the
``transcripts.tsv`` layout, then prepared like any other corpus (same checks, splits, report).
espeak-ng is deterministic: the same settings and text give the same samples.

Two ways to hand out sentences. The verifier corpus ("synth": `total_sentences` 0) gives every
speaker its own slice of `n_sentences` CMU ARCTIC prompts. The pretraining corpus
("synth_pretrain", `PretrainSynthConfig`) wants as many distinct sentences as possible: it draws
`total_sentences` sentences from installed packages (`workbench.data.sentences`), shuffled by
`seed`, and gives each to exactly ONE speaker, round robin over the speaker grid.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from tqdm.auto import tqdm

from workbench.atomic import atomic_write_text
from workbench.data.manifest import Utterance
from workbench.data.readers import TRANSCRIPTS_FILE
from workbench.errors import ConfigError
from workbench.settings import stage_profiles

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = ("m1", "f1", "m3", "f2", "m5", "f3", "m7", "f4")
# The pretraining grid adds two regional accents and three variants: 8 accents x 11 variants, and
# speaker i takes accent i mod 8 and variant 3i mod 11, so the first 88 speakers are 88 distinct voices.
MORE_ACCENTS = ACCENTS + ("en-gb-x-gbclan", "en-gb-x-gbcwmd")
MORE_VARIANTS = VARIANTS + ("m2", "f5", "m6")
PACKAGE_SOURCES = ("fortunes", "wordnet")  # names workbench.data.sentences reads; join with "+"
_ARCTIC_LINE = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)\s*$')


@dataclass(frozen=True)
class SynthConfig:
    n_speakers: int = 12
    n_sentences: int = 40  # per speaker (used when total_sentences is 0)
    sentences_file: str = ""  # empty: CMU ARCTIC prompts from the mirror's cmu_arctic/cmuarctic.data
    pitch_range: tuple[int, int] = (30, 70)  # espeak-ng -p, 0..99
    rate_range: tuple[int, int] = (140, 190)  # words per minute
    seed: int = 0
    # Where sentences come from when no file is given: "arctic" (the mirror's CMU ARCTIC prompts),
    # installed packages ("fortunes", "wordnet", or both joined: "fortunes+wordnet"), or a file path.
    text_source: str = "arctic"
    # > 0: the corpus holds this many distinct sentences, each read by ONE speaker (n_sentences unused).
    total_sentences: int = 0
    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    corpus: str = "synth"  # the registry name it is prepared under (workbench.data.corpora)
    n_test_speakers: int = 0  # speakers held out whole as the test split; 0: one in six (at least one)

    PROFILES: ClassVar[dict] = stage_profiles("synth")  # workbench/profiles.yaml

    def __post_init__(self) -> None:
        from workbench.checks import require_at_least

        require_at_least(self, 1, "n_speakers", "n_sentences")
        require_at_least(self, 0, "total_sentences", "seed", "n_test_speakers")
        if not self.accents or not self.variants:
            raise ConfigError(f"{type(self).__name__}: accents and variants must not be empty "
                              f"(got accents={self.accents!r}, variants={self.variants!r})")

    @property
    def one_speaker_per_sentence(self) -> bool:
        return self.total_sentences > 0

    def fingerprint(self) -> str:
        """Short hash of every setting that changes a WAV: the raw folder's name, so a changed
        setting never reuses audio made under another. The corpus size is left out: with one
        speaker per sentence a smaller corpus is a prefix of a larger one, so growing it reuses every WAV."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("total_sentences", "n_test_speakers")}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class PretrainSynthConfig(SynthConfig):
    """The synthetic pretraining corpus: many distinct sentences from installed packages, each
    spoken once, spread over a wide grid of espeak-ng voices (workbench/profiles.yaml, "synth_pretrain")."""

    n_speakers: int = 96
    text_source: str = "fortunes+wordnet"
    total_sentences: int = 20000
    pitch_range: tuple[int, int] = (25, 75)
    rate_range: tuple[int, int] = (130, 200)
    accents: tuple[str, ...] = MORE_ACCENTS
    variants: tuple[str, ...] = MORE_VARIANTS
    corpus: str = "synth_pretrain"
    n_test_speakers: int = 2  # a pretraining corpus is for training: hold out 2 voices of 96, not 16

    PROFILES: ClassVar[dict] = stage_profiles("synth_pretrain")  # workbench/profiles.yaml


@dataclass(frozen=True)
class SyntheticSpeaker:
    speaker: str
    voice: str  # espeak-ng -v argument, e.g. "en-gb+f2"
    pitch: int
    rate_wpm: int


def read_arctic_prompts(path: str | Path) -> list[tuple[str, str]]:
    """(prompt id, text) pairs from a CMU ARCTIC ``cmuarctic.data`` file."""
    prompts = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = _ARCTIC_LINE.match(line.strip())
        if match:
            prompts.append((match.group(1), match.group(2)))
    if not prompts:
        raise ValueError(f"{path}: no '( id \"text\" )' lines found")
    return prompts


def read_sentences(path: str | Path) -> list[tuple[str, str]]:
    """A CMU ARCTIC data file, or any text file with one sentence per line."""
    path = Path(path)
    if path.name.endswith(".data"):
        return read_arctic_prompts(path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(f"s{i:05d}", line) for i, line in enumerate(lines)]


def speaker_grid(n_speakers: int, pitch_range: tuple[int, int], rate_range: tuple[int, int],
                 accents: tuple[str, ...] = ACCENTS, variants: tuple[str, ...] = VARIANTS) -> list[SyntheticSpeaker]:
    """`n_speakers` distinct voices: accents x variants interleaved, pitch and rate spread evenly.

    Deterministic and spread out, so a few speakers already differ in accent, sex and pitch.
    """
    speakers = []
    for i in range(n_speakers):
        accent = accents[i % len(accents)]
        variant = variants[(i * 3) % len(variants)]
        fraction = (i * 0.618034) % 1.0  # golden-ratio spacing: every prefix of the grid is spread out
        pitch = round(pitch_range[0] + fraction * (pitch_range[1] - pitch_range[0]))
        rate = round(rate_range[0] + ((i * 0.381966) % 1.0) * (rate_range[1] - rate_range[0]))
        name = f"espeak-{i:02d}-{accent}-{variant}-p{pitch}-r{rate}"
        speakers.append(SyntheticSpeaker(speaker=name, voice=f"{accent}+{variant}", pitch=pitch, rate_wpm=rate))
    return speakers


def espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise FileNotFoundError("espeak-ng not found: install it (`apt-get install espeak-ng`; `make setup` does)")
    return binary


def synthesize(text: str, speaker: SyntheticSpeaker, out_path: Path) -> Path:
    """One WAV, written atomically (a temporary file renamed into place), so an interrupted run
    never leaves a half-written file that a resumed run would take as done."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.wav")
    subprocess.run(
        [espeak_binary(), "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.rate_wpm),
         "-w", str(tmp), "--", text],
        check=True, capture_output=True, timeout=60,
    )
    tmp.replace(out_path)
    return out_path


def load_sentences(config: SynthConfig, sentences_path: str | Path | None = None) -> list[tuple[str, str]]:
    """(prompt id, text) pairs the config reads from: `sentences_path` if given, else
    `config.sentences_file`, else `config.text_source`. Package sources leave out Kathleen's
    sentences (normalised), so the held-out Kathleen evaluation never meets a pretraining text."""
    path = sentences_path or config.sentences_file
    source = config.text_source
    if path:
        return read_sentences(path)
    if source == "arctic":
        import os

        mirror = os.environ.get("WORKBENCH_DATA_MIRROR")
        if not mirror:
            raise FileNotFoundError("text_source 'arctic' needs WORKBENCH_DATA_MIRROR "
                                    "(<mirror>/cmu_arctic/cmuarctic.data)")
        return read_sentences(Path(mirror) / "cmu_arctic" / "cmuarctic.data")
    names = tuple(source.split("+"))
    if all(name in PACKAGE_SOURCES for name in names):
        return [(f"{source.replace('+', '_')}-{i:05d}", text) for i, text in enumerate(_package_texts(names))]
    if Path(source).exists():
        return read_sentences(source)
    raise ConfigError(f"SynthConfig.text_source = {source!r}: not 'arctic', a package source "
                      f"({', '.join(PACKAGE_SOURCES)}, joined with '+') or an existing file")


@functools.cache
def _package_texts(names: tuple[str, ...]) -> tuple[str, ...]:
    """The packages' sentences without Kathleen's, read once per process (a few seconds)."""
    from workbench.data.sentences import kathleen_sentences, package_sentences

    return tuple(package_sentences(names, exclude=kathleen_sentences()))


def assign_sentences(config: SynthConfig, sentences: list[tuple[str, str]],
                     speakers: list[SyntheticSpeaker]) -> list[tuple[SyntheticSpeaker, tuple[str, str]]]:
    """(speaker, sentence) readings, deterministic by `config.seed`.

    `total_sentences` > 0: the sentences shuffled by the seed, the first `total_sentences` taken,
    sentence k read by speaker k mod n_speakers only, so a smaller corpus is a prefix of a larger
    one with the same seed. Otherwise each speaker reads its own slice of `n_sentences` (wrapping
    around), the verifier corpus's rule.
    """
    if not config.one_speaker_per_sentence:
        return [(s, sentences[(k * config.n_sentences + j + config.seed) % len(sentences)])
                for k, s in enumerate(speakers) for j in range(config.n_sentences)]
    if config.total_sentences > len(sentences):
        raise ConfigError(f"{type(config).__name__}.total_sentences = {config.total_sentences}: the text source "
                          f"{config.text_source!r} has only {len(sentences)} distinct sentences")
    order = list(range(len(sentences)))
    random.Random(config.seed).shuffle(order)
    return [(speakers[k % len(speakers)], sentences[index]) for k, index in enumerate(order[: config.total_sentences])]


def synth_corpus(config: SynthConfig, out_dir: str | Path, sentences_path: str | Path | None = None,
                 progress: bool = True) -> list[Utterance]:
    """Write ``out_dir/wav/<speaker>/<id>.wav`` and ``out_dir/transcripts.tsv``.

    Sentences come from `sentences_path` or the config (`load_sentences`) and are handed out by
    `assign_sentences`. Existing WAVs are kept (resumable: an interrupted run picks up where it
    stopped, and every WAV is written atomically); the transcript list is written last.
    """
    out_dir = Path(out_dir)
    sentences = load_sentences(config, sentences_path)
    speakers = speaker_grid(config.n_speakers, config.pitch_range, config.rate_range, config.accents, config.variants)
    rows, utterances = [], []
    jobs = assign_sentences(config, sentences, speakers)
    for speaker, (prompt_id, text) in tqdm(jobs, desc="espeak-ng", unit="utt", disable=not progress):
        relative = Path("wav") / speaker.speaker / f"{prompt_id}.wav"
        target = out_dir / relative
        if not target.exists():
            synthesize(text, speaker, target)
        utterance_id = f"{speaker.speaker}_{prompt_id}"
        rows.append(f"{relative}\t{speaker.speaker}\t{utterance_id}\t{text}")
        utterances.append(Utterance(utterance_id=utterance_id, audio_path=str(target), text=text,
                                    speaker=speaker.speaker))
    atomic_write_text(out_dir / TRANSCRIPTS_FILE, "\n".join(rows) + "\n")
    what = (f"{len(jobs)} distinct sentences, each read by one of {config.n_speakers} voices"
            if config.one_speaker_per_sentence else f"{config.n_speakers} voices x {config.n_sentences} sentences")
    atomic_write_text(out_dir / "SOURCE.md", (
        f"# Synthetic multi-speaker corpus\n- Made by `workbench data synth` with espeak-ng ({what}, seed {config.seed}).\n"
        f"- Sentences: {sentences_path or config.sentences_file or config.text_source}.\n"
        "- Speakers: " + ", ".join(f"{s.speaker} (-v {s.voice} -p {s.pitch} -s {s.rate_wpm})" for s in speakers) + "\n"))
    return utterances


def raw_synth_dir(config: SynthConfig, data_dir: str | Path | None = None,
                  sentences_path: str | Path | None = None) -> Path:
    """Where `config`'s raw corpus is synthesised: the verifier corpus keeps its historical name;
    any other is named by its settings and by a hash of its sentence list, so that a changed text
    source (an upgraded package, an edited file) never pairs old audio with new text."""
    from workbench.data.prepare import data_root

    if not config.one_speaker_per_sentence and config.corpus == "synth":
        return data_root(data_dir) / "raw" / f"synth-{config.n_speakers}x{config.n_sentences}"
    texts = hashlib.sha256("\n".join(f"{i}\t{t}" for i, t in load_sentences(config, sentences_path)).encode())
    return data_root(data_dir) / "raw" / f"{config.corpus}-{config.fingerprint()}-{texts.hexdigest()[:8]}"


def synth_and_prepare(synth: SynthConfig, profile: str, sentences: str | Path | None = None,
                      data_dir: str | Path | None = None, progress: bool = False):
    """Synthesise `synth`'s corpus (resumable) and prepare it under `synth.corpus` with the
    profile's data settings, holding out `synth.n_test_speakers` voices (0: one in six, at least one)."""
    from workbench.config import for_profile
    from workbench.data.prepare import DataConfig, prepare_corpus

    raw_dir = raw_synth_dir(synth, data_dir, sentences)
    synth_corpus(synth, raw_dir, sentences, progress=progress)
    overrides = {} if synth.corpus == "synth" else {"max_utterances": 0}  # the synth config sizes it
    data_config = for_profile(DataConfig, profile, corpus=synth.corpus, source=str(raw_dir),
                              n_test_speakers=synth.n_test_speakers or max(1, synth.n_speakers // 6), **overrides)
    return prepare_corpus(data_config, root=data_dir, progress=progress)


def prepare_synth(profile: str, sentences: str | Path | None = None, data_dir: str | Path | None = None,
                  progress: bool = False):
    """Synthesise the profile's espeak-ng corpus (resumable) and prepare it as corpus "synth"."""
    from workbench.config import for_profile

    return synth_and_prepare(for_profile(SynthConfig, profile), profile, sentences, data_dir, progress)


def prepare_synth_pretrain(profile: str, data_dir: str | Path | None = None, progress: bool = False,
                           **overrides):
    """Synthesise and prepare the profile's pretraining corpus ("synth_pretrain"); `overrides` are
    `PretrainSynthConfig` fields (e.g. total_sentences=2000 for a partial build, a prefix of the full one)."""
    from workbench.config import for_profile

    return synth_and_prepare(for_profile(PretrainSynthConfig, profile, **overrides), profile, None, data_dir, progress)
