"""A deterministic multi-speaker corpus synthesised with espeak-ng.

Kathleen has one speaker, so voice cloning and speaker-similarity experiments need more voices.
espeak-ng gives many: a "speaker" here is one (accent voice, variant, pitch, rate) combination,
which changes formants, pitch and timing the way speakers differ. Output is a raw corpus in the
``transcripts.tsv`` layout, then prepared like any other corpus (same checks, splits, report).
espeak-ng is deterministic: the same settings and text give the same samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tqdm.auto import tqdm

from workbench.atomic import atomic_write_text
from workbench.data.manifest import Utterance
from workbench.data.readers import TRANSCRIPTS_FILE
from workbench.settings import stage_profiles

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = ("m1", "f1", "m3", "f2", "m5", "f3", "m7", "f4")
_ARCTIC_LINE = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)\s*$')


@dataclass(frozen=True)
class SynthConfig:
    n_speakers: int = 12
    n_sentences: int = 40  # per speaker
    sentences_file: str = ""  # empty: CMU ARCTIC prompts from the mirror's cmu_arctic/cmuarctic.data
    pitch_range: tuple[int, int] = (30, 70)  # espeak-ng -p, 0..99
    rate_range: tuple[int, int] = (140, 190)  # words per minute
    seed: int = 0

    PROFILES: ClassVar[dict] = stage_profiles("synth")  # workbench/profiles.yaml


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


def speaker_grid(n_speakers: int, pitch_range: tuple[int, int], rate_range: tuple[int, int]) -> list[SyntheticSpeaker]:
    """`n_speakers` distinct voices: accents x variants interleaved, pitch and rate spread evenly.

    Deterministic and spread out, so a few speakers already differ in accent, sex and pitch.
    """
    speakers = []
    for i in range(n_speakers):
        accent = ACCENTS[i % len(ACCENTS)]
        variant = VARIANTS[(i * 3) % len(VARIANTS)]
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
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.wav")
    subprocess.run(
        [espeak_binary(), "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.rate_wpm),
         "-w", str(tmp), "--", text],
        check=True, capture_output=True, timeout=60,
    )
    tmp.replace(out_path)
    return out_path


def synth_corpus(config: SynthConfig, out_dir: str | Path, sentences_path: str | Path,
                 progress: bool = True) -> list[Utterance]:
    """Write ``out_dir/wav/<speaker>/<id>.wav`` and ``out_dir/transcripts.tsv``.

    Each speaker reads a different, deterministic slice of the sentences (wrapping around), so
    texts overlap across speakers only when there are more readings than sentences.
    Existing files are kept (resumable).
    """
    out_dir = Path(out_dir)
    sentences = read_sentences(sentences_path)
    speakers = speaker_grid(config.n_speakers, config.pitch_range, config.rate_range)
    rows, utterances = [], []
    jobs = [(s, sentences[(k * config.n_sentences + j + config.seed) % len(sentences)])
            for k, s in enumerate(speakers) for j in range(config.n_sentences)]
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
    atomic_write_text(out_dir / "SOURCE.md", (
        "# Synthetic multi-speaker corpus\n- Made by `workbench data synth` with espeak-ng "
        f"({config.n_speakers} voices x {config.n_sentences} sentences).\n- Sentences: {sentences_path}.\n"
        "- Speakers: " + ", ".join(f"{s.speaker} (-v {s.voice} -p {s.pitch} -s {s.rate_wpm})" for s in speakers) + "\n"))
    return utterances


def prepare_synth(profile: str, sentences: str | Path | None = None, data_dir: str | Path | None = None,
                  progress: bool = False):
    """Synthesise the profile's espeak-ng corpus (resumable) and prepare it as corpus "synth"."""
    import os

    from workbench.config import for_profile
    from workbench.data.prepare import DataConfig, data_root, prepare_corpus

    synth = for_profile(SynthConfig, profile)
    if sentences is None:
        mirror = os.environ.get("WORKBENCH_DATA_MIRROR")
        if not mirror:
            raise FileNotFoundError("no sentence list given and WORKBENCH_DATA_MIRROR is not set "
                                    "(the default is <mirror>/cmu_arctic/cmuarctic.data)")
        sentences = Path(mirror) / "cmu_arctic" / "cmuarctic.data"
    raw_dir = data_root(data_dir) / "raw" / f"synth-{synth.n_speakers}x{synth.n_sentences}"
    synth_corpus(synth, raw_dir, sentences, progress=progress)
    data_config = for_profile(DataConfig, profile, corpus="synth", source=str(raw_dir),
                              n_test_speakers=max(1, synth.n_speakers // 6))
    return prepare_corpus(data_config, root=data_dir, progress=progress)
