"""Materialise a corpus: check every utterance, convert to mono WAV at one rate, split, report.

Output, under ``<data_root>/<name>/``: ``wav/<utterance_id>.wav``, ``manifest.jsonl``,
``prepare_report.json`` (counts, split counts, every skipped or converted file with its reason,
and warnings: repeated utterance ids, an empty split), ``source_files.json`` (size and
modification time of the source file each WAV was made from) and the source's
``SOURCE.md``/``LICENSE`` (licences travel with the audio). One bad file never stops the corpus:
it is listed with its reason and skipped. A second run reuses a converted file only while its
source file is unchanged (same size and modification time).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable

from tqdm.auto import tqdm

from workbench.atomic import atomic_write_json
from workbench.audio import AudioError, audio_info, load_audio, resample, save_audio
from workbench.data.corpora import CORPORA, find_source
from workbench.data.manifest import Utterance, write_manifest
from workbench.data.readers import read_corpus
from workbench.data.splits import assign_splits, split_counts
from workbench.paths import default_dir
from workbench.settings import stage_profiles

DATA_ROOT_ENV = "WORKBENCH_DATA_DIR"
SOURCE_FILES = "source_files.json"
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class DataConfig:
    """How a corpus is prepared. Profiles differ only in how much of it they take."""

    corpus: str = "kathleen"
    source: str = ""  # a folder or manifest file; empty: the corpus registry and the mirror
    sample_rate_hz: int = 16000
    min_duration_s: float = 0.3
    max_duration_s: float = 30.0
    valid_fraction: float = 0.03
    test_fraction: float = 0.05
    n_test_speakers: int = 1  # held out whole when the corpus has more than one speaker
    max_utterances: int = 0  # 0: all; otherwise the first N by utterance id (smoke runs)
    seed: int = 0

    PROFILES: ClassVar[dict] = stage_profiles("data")  # workbench/profiles.yaml

    def __post_init__(self) -> None:
        from workbench.checks import require_at_least, require_fraction
        from workbench.config import ConfigError

        require_at_least(self, 1, "sample_rate_hz")
        require_at_least(self, 0, "max_utterances", "min_duration_s", "n_test_speakers")
        require_fraction(self, "valid_fraction", "test_fraction")
        if self.max_duration_s <= self.min_duration_s:
            raise ConfigError(f"DataConfig.max_duration_s = {self.max_duration_s!r}: must be above "
                              f"min_duration_s = {self.min_duration_s!r}")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError(f"DataConfig.valid_fraction + test_fraction = {self.valid_fraction + self.test_fraction!r}: "
                              "must be below 1 (nothing would be left to train on)")

    @property
    def dataset_name(self) -> str:
        """Folder name under the data root: the corpus, tagged when only part of it is taken."""
        tag = f"-n{self.max_utterances}" if self.max_utterances else ""
        rate = "" if self.sample_rate_hz == 16000 else f"-{self.sample_rate_hz // 1000}k"
        return f"{self.corpus}{tag}{rate}"


@dataclass(frozen=True)
class Problem:
    utterance_id: str
    audio_path: str
    reason: str
    action: str  # "skipped" or "converted"


@dataclass
class PrepareReport:
    corpus: str
    source: str
    out_dir: str
    sample_rate_hz: int
    n_found: int = 0
    n_kept: int = 0
    hours: float = 0.0
    split_counts: dict[str, int] = field(default_factory=dict)
    skipped: list[Problem] = field(default_factory=list)
    converted: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.split_counts.items())
        return (f"{self.corpus}: {self.n_kept} of {self.n_found} utterances kept "
                f"({self.hours * 60:.1f} min; {splits}); {len(self.skipped)} skipped, "
                f"{len(self.converted)} converted -> {self.out_dir}")


def data_root(root: str | Path | None = None) -> Path:
    """`root`, else $WORKBENCH_DATA_DIR, else data/ under the project root (`workbench.paths`)."""
    return Path(root or os.environ.get(DATA_ROOT_ENV) or default_dir("data")).resolve()


def _fingerprint(source: Path) -> list:
    """What must match for a converted WAV to stand for its source: path, size, mtime."""
    stat = source.stat()
    return [str(source.resolve()), stat.st_size, stat.st_mtime_ns]


def _check_and_convert(u: Utterance, target: Path, config: DataConfig, allow_upsample: bool,
                       converted: list[Problem], made_from: list | None = None) -> tuple[Utterance | None, str | None]:
    """Return (prepared utterance, None) or (None, reason it was skipped). `made_from` is the
    fingerprint of the source an existing `target` was converted from (None: unknown)."""
    if not u.text.strip():
        return None, "empty transcript"
    source = Path(u.audio_path)
    if not source.exists():
        return None, "audio file missing"
    if source.stat().st_size == 0:
        return None, "empty file (0 bytes)"
    if target.exists() and made_from == _fingerprint(source):  # converted by an earlier run from this very file
        info = audio_info(target)
        if info.sample_rate == config.sample_rate_hz and info.n_channels == 1 and info.n_frames > 0:
            return dataclasses.replace(u, audio_path=f"wav/{target.name}", duration_s=round(info.duration_s, 4),
                                       sample_rate=info.sample_rate), None
    try:
        info = audio_info(source)
    except AudioError as error:
        return None, str(error).split(": ", 1)[-1]
    if info.n_frames == 0:
        return None, "empty audio (0 samples)"
    duration = info.duration_s
    if duration < config.min_duration_s:
        return None, f"too short ({duration:.2f} s < min_duration_s {config.min_duration_s})"
    if duration > config.max_duration_s:
        return None, f"too long ({duration:.1f} s > max_duration_s {config.max_duration_s})"
    if info.sample_rate < config.sample_rate_hz and not allow_upsample:
        return None, (f"sample rate {info.sample_rate} Hz below target {config.sample_rate_hz} Hz "
                      "(upsampling cannot restore the missing band)")
    try:
        wav, rate = load_audio(source, mono=False)
    except AudioError as error:
        return None, str(error).split(": ", 1)[-1]
    if not bool(wav.isfinite().all()):
        return None, "audio holds NaN or infinite samples"
    if float(wav.abs().max()) == 0.0:
        return None, "silent audio (all samples zero)"
    notes = []
    if wav.shape[0] > 1:
        wav = wav.mean(dim=0, keepdim=True)
        notes.append(f"{info.n_channels} channels -> mono")
    if rate != config.sample_rate_hz:
        wav = resample(wav, rate, config.sample_rate_hz)
        notes.append(f"resampled {rate} -> {config.sample_rate_hz} Hz")
    if notes:
        converted.append(Problem(u.utterance_id, u.audio_path, "; ".join(notes), "converted"))
    save_audio(target, wav, config.sample_rate_hz)
    return dataclasses.replace(u, audio_path=f"wav/{target.name}",
                               duration_s=round(wav.shape[-1] / config.sample_rate_hz, 4),
                               sample_rate=config.sample_rate_hz), None


def split_as_configured(utterances: Iterable[Utterance], config: DataConfig) -> list[Utterance]:
    """Copies of `utterances` with the split `config` gives each (`workbench.data.splits`)."""
    return assign_splits(list(utterances), config.valid_fraction, config.test_fraction, config.n_test_speakers,
                         config.seed)


def _taken(utterances: Iterable[Utterance], config: DataConfig) -> list[Utterance]:
    """The utterances `config` takes from a source: all, or the first `max_utterances` by id."""
    raw = sorted(utterances, key=lambda u: u.utterance_id)
    return raw[: config.max_utterances] if config.max_utterances else raw


def unprepared_utterances(source: str | Path, config: DataConfig | None = None,
                          layout: str | None = None) -> list[Utterance]:
    """A corpus folder read as `prepare_corpus` reads it, without preparing it: the same reader
    (`layout`, or the detected one), the same utterances taken and the same split rule under
    `config` (default: `DataConfig()`, the cpu profile's), sorted by id, audio paths absolute. Audio
    is neither checked nor converted, so an utterance `prepare` would skip (unreadable, too short,
    a repeated id) is still listed; its split is the one it would have if kept."""
    config = config or DataConfig()
    return split_as_configured(_taken(read_corpus(Path(source).resolve(), layout), config), config)


def prepare_utterances(utterances: Iterable[Utterance], out_dir: Path, config: DataConfig,
                       allow_upsample: bool = False, progress: bool = True) -> PrepareReport:
    """Check, convert, split and write a list of raw utterances into `out_dir`."""
    out_dir = Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    raw = _taken(utterances, config)
    report = PrepareReport(corpus=config.corpus, source=config.source, out_dir=str(out_dir),
                           sample_rate_hz=config.sample_rate_hz, n_found=len(raw))
    kept: list[Utterance] = []
    seen: dict[str, str] = {}  # safe id -> audio path of the utterance kept under it
    made_from = _read_source_files(out_dir)
    sources: dict[str, list] = {}
    duplicates: list[str] = []
    for u in tqdm(raw, desc=f"prepare {config.corpus}", unit="utt", disable=not progress):
        safe_id = _SAFE_ID.sub("_", u.utterance_id)
        if safe_id in seen:
            report.skipped.append(Problem(u.utterance_id, u.audio_path,
                                          f"duplicate utterance id (kept: {seen[safe_id]})", "skipped"))
            duplicates.append(f"{u.utterance_id!r} ({seen[safe_id]}, {u.audio_path})")
            continue
        try:
            prepared, reason = _check_and_convert(
                u, out_dir / "wav" / f"{safe_id}.wav", config, allow_upsample, report.converted,
                made_from.get(safe_id))
        except Exception as error:  # noqa: BLE001 - one bad file must never stop the corpus
            prepared, reason = None, f"unexpected error: {type(error).__name__}: {error}"
        if prepared is None:
            report.skipped.append(Problem(u.utterance_id, u.audio_path, reason or "unknown", "skipped"))
            continue
        seen[safe_id] = u.audio_path
        sources[safe_id] = _fingerprint(Path(u.audio_path))
        kept.append(prepared)
    kept = split_as_configured(kept, config)
    write_manifest(out_dir / "manifest.jsonl", kept)
    atomic_write_json(out_dir / SOURCE_FILES, sources)
    report.n_kept = len(kept)
    report.hours = sum(u.duration_s for u in kept) / 3600
    report.split_counts = split_counts(kept)
    if duplicates:
        report.warnings.append(f"{len(duplicates)} utterance id(s) repeated in the source, only the first of each "
                               f"kept: {', '.join(duplicates[:3])}{' ...' if len(duplicates) > 3 else ''}; "
                               "give every utterance its own id")
    report.warnings += _empty_split_warnings(report.split_counts, config)
    for warning in report.warnings:
        print(f"[prepare {config.corpus}] warning: {warning}", file=sys.stderr, flush=True)
    atomic_write_json(out_dir / "prepare_report.json", dataclasses.asdict(report))
    return report


def _read_source_files(out_dir: Path) -> dict[str, list]:
    try:
        recorded = json.loads((out_dir / SOURCE_FILES).read_text())
    except (OSError, ValueError):  # none yet (or unreadable): every file is converted again
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _empty_split_warnings(counts: dict[str, int], config: DataConfig) -> list[str]:
    total = sum(counts.values())
    out = []
    if total and not counts.get("train"):
        out.append(f"the train split is empty ({total} utterances kept)")
    for split, fraction in (("valid", config.valid_fraction), ("test", config.test_fraction)):
        if total and not counts.get(split) and (fraction > 0 or (split == "test" and config.n_test_speakers)):
            out.append(f"the {split} split is empty: {total} utterances x {split}_fraction {fraction} gave none; "
                       f"raise {split}_fraction or add utterances, or there is nothing held out to measure on")
    return out


def prepare_corpus(config: DataConfig, root: str | Path | None = None, progress: bool = True) -> PrepareReport:
    """Find corpus `config.corpus` (``config.source``, then the mirror), prepare it under the data
    root as ``<root>/<config.dataset_name>/`` and return the report."""
    source = find_source(config.corpus, config.source or None)
    spec = CORPORA.get(config.corpus)
    out_dir = data_root(root) / config.dataset_name
    utterances = list(read_corpus(source, spec.layout if spec and source.is_dir() else None))
    report = prepare_utterances(utterances, out_dir, dataclasses.replace(config, source=str(source)),
                                allow_upsample=bool(spec and spec.allow_upsample), progress=progress)
    for notice in ("SOURCE.md", "LICENSE", "README.md"):
        path = (source if source.is_dir() else source.parent) / notice
        if path.exists():
            shutil.copyfile(path, out_dir / notice)
    return report
