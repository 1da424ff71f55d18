"""The inference-time search ablation (Llasa §5): strategies × budgets × search verifiers.

Runs over held-out sentences (voice-cloning prompts from other held-out utterances); each chosen
clip is re-checked by metrics the search never saw.

    from workbench.config import for_profile
    from workbench.search.ablate import AblationConfig, run_ablation
    result = run_ablation(for_profile(AblationConfig, "cpu", lm_path="runs/lm/.../best"))
    result.results_csv            # one row per utterance × arm

A run of kind ``search`` writes:
- ``results.csv``: one row per utterance × arm (columns: `AblationRow`); rows already there are
  skipped when the same run is relaunched (resumable; the row is written last, after its audio).
- ``audio/<arm>/<utterance>.wav`` (chosen), ``audio/<arm>/<utterance>.worst.wav`` (the lowest
  scored candidate, when there were several), ``audio/reference/`` (the real recording) and
  ``audio/prompt/`` (the voice-cloning prompt).
- ``candidates.jsonl``: every candidate's codes and score per row (`export_preferences` reads it).

Arms. ``sample`` is the no-search baseline and runs at budget 1 only; the other strategies run at
every budget above 1 (at budget 1 each of them is plain sampling). A search-verifier spec is a
verifier name, ``a+b`` (equal-weight `weighted` combination) or ``p>o`` (process verifier p steers
partial sequences, outcome verifier o picks among complete ones: the paper's "SIM for 2 s, then
WER" is ``resemblyzer>pocketsphinx`` with ``partial_mix``). Strategies without a process step
(sample, best_of_n) only use the outcome side of a spec, so duplicates are dropped.

Checks. Each chosen clip is scored by the metric verifiers (`wer_verifier`, `sim_verifier`,
`quality_verifier`) and by independent ones (`check_verifiers`: e.g. search on pocketsphinx, check
on workbench-asr; search on resemblyzer, check on workbench-speaker), as the paper re-checked
WavLM-SIM search with ECAPA. A check verifier that is not installed or has no trained model is
reported once and its columns are left empty (NaN); the run goes on.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from workbench.search.preferences import CANDIDATES_FILE
from workbench.settings import stage_profiles

RESULTS_FILE = "results.csv"
PROCESS_STRATEGIES = ("beam", "partial_mix")
"""Strategies that use the process side of a `p>o` verifier spec."""


@dataclass(frozen=True)
class AblationConfig:
    lm_path: str = ""  # LM checkpoint folder (workbench or Llasa-style); required
    codec_path: str = ""  # "" = the codec recorded in the LM checkpoint
    corpus: str = "kathleen"  # prepared corpus: a folder name under the data root, or a path
    split: str = "test"  # held-out split the sentences and prompts come from
    n_sentences: int = 8
    max_words: int = 12  # longer held-out sentences are skipped (token cap grows with words)
    voice_cloning: bool = True  # prompt with another held-out utterance (codes + transcript)
    prompt_min_s: float = 1.0
    prompt_max_s: float = 3.0
    strategies: tuple[str, ...] = ("sample", "best_of_n", "beam", "partial_mix")
    budgets: tuple[int, ...] = (1, 2, 4, 8, 16)
    search_verifiers: tuple[str, ...] = ("resemblyzer>pocketsphinx", "resemblyzer", "pocketsphinx")
    check_verifiers: tuple[str, ...] = ("pocketsphinx=workbench-asr", "resemblyzer=workbench-speaker")
    wer_verifier: str = "pocketsphinx"
    sim_verifier: str = "resemblyzer"
    quality_verifier: str = "dnsmos"  # "" = no quality column
    temperature: float = 0.8  # published sampling (REFERENCE §2)
    top_p: float = 1.0
    step_tokens: int = 25  # process-verifier interval: 0.5 s at 50 Hz
    partial_s: float = 2.0
    seconds_per_word: float = 0.4  # token cap: 20 frames per word at 50 Hz ...
    margin_s: float = 1.0  # ... plus this margin
    time_limit_s: float = 0.0  # stop starting new rows after this much wall time (0 = none)
    num_threads: int | None = None
    seed: int = 0

    PROFILES: ClassVar[dict] = stage_profiles("search")  # workbench/profiles.yaml

    def __post_init__(self) -> None:
        from workbench.config import ConfigError

        if self.n_sentences < 1:
            raise ConfigError(f"n_sentences must be >= 1, got {self.n_sentences}")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise ConfigError(f"budgets must be >= 1, got {self.budgets}")
        if not self.strategies or not self.search_verifiers:
            raise ConfigError("strategies and search_verifiers must not be empty")
        for pair in self.check_verifiers:
            if pair.count("=") != 1:
                raise ConfigError(f"check_verifiers entry {pair!r} must read 'search_verifier=check_verifier'")
        if not self.prompt_max_s >= self.prompt_min_s > 0:
            raise ConfigError(f"need 0 < prompt_min_s <= prompt_max_s, got {self.prompt_min_s}, {self.prompt_max_s}")


@dataclass(frozen=True)
class Arm:
    strategy: str
    budget: int
    verifier: str  # the spec as run: "name", "a+b" or "process>outcome"

    @property
    def name(self) -> str:
        """Folder-safe arm name, e.g. ``partial_mix-b8-resemblyzer_then_pocketsphinx``."""
        spec = self.verifier.replace(">", "_then_").replace("+", "_plus_")
        return f"{self.strategy}-b{self.budget}-{spec}"

    @property
    def outcome(self) -> str:
        return self.verifier.split(">")[-1]


@dataclass
class AblationRow:
    utterance_id: str
    text: str
    prompt_id: str
    arm: str
    strategy: str
    budget: int
    verifier: str
    check_verifier: str
    score: float  # the arm's outcome verifier on the chosen clip (what search maximised)
    check_score: float  # the independent check verifier on the chosen clip
    wer: float
    check_wer: float
    sim: float
    check_sim: float
    dnsmos: float
    n_candidates: int
    frames: int
    duration_s: float
    ended: bool
    tokens_generated: int
    decodes: int
    verifier_calls: int
    lm_flops: float
    wall_s: float
    seed: int
    audio: str  # path of the chosen clip, relative to the run directory


@dataclass
class AblationResult:
    run_dir: Path
    results_csv: Path
    rows: list[AblationRow]  # every row of results.csv (resumed ones included)
    n_new_rows: int
    n_skipped_rows: int  # already in results.csv from an earlier launch
    complete: bool  # False when the time limit stopped the run early
    notes: list[str] = field(default_factory=list)  # fallbacks and other messages
    wall_s: float = 0.0
    lm_text_gain: Any = None  # workbench.lm.diagnostics.TextGain of the LM on the held-out split


# ---------------------------------------------------------------------------------------------
# Arms and verifiers


def plan_arms(config: AblationConfig) -> list[Arm]:
    """The arms in run order (see the module docstring for the rules)."""
    from workbench.search import get

    arms: list[Arm] = []
    for strategy in config.strategies:
        get(strategy)  # fail now on a typo, not after an hour of other arms
        budgets = [1] if strategy == "sample" else [b for b in config.budgets if b > 1]
        for budget in budgets:
            for spec in config.search_verifiers:
                spec = spec if strategy in PROCESS_STRATEGIES else spec.split(">")[-1]
                arm = Arm(strategy, budget, spec)
                if arm not in arms:
                    arms.append(arm)
    return arms


def _build_verifier(spec: str) -> Any:
    from workbench import verifiers

    parts = spec.split("+")
    if len(parts) > 1:
        return verifiers.weighted({_resolve_name(p): 1.0 for p in parts})
    return verifiers.get(_resolve_name(spec))


def _resolve_name(name: str) -> str:
    """Make sure `name` is registered: trained verifiers live in modules that the verifiers
    package may not import by default (they register when imported)."""
    import importlib
    import pkgutil

    from workbench import verifiers

    if name in verifiers.available():
        return name
    package = importlib.import_module("workbench.verifiers")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("trained_"):
            importlib.import_module(f"workbench.verifiers.{module.name}")
    return name


def search_verifiers_for(spec: str, cache: dict[str, Any]) -> Any:
    """`SearchVerifiers` for a spec, verifier objects shared across arms (their caches too)."""
    from workbench.search import SearchVerifiers

    def one(name: str) -> Any:
        if name not in cache:
            cache[name] = _build_verifier(name)
        return cache[name]

    names = spec.split(">")
    if len(names) > 2:
        raise ValueError(f"verifier spec {spec!r}: at most one '>' (process>outcome)")
    return SearchVerifiers(outcome=one(names[-1]), process=one(names[0]) if len(names) == 2 else None)


def _probe(verifier: Any, sample_rate: int) -> None:
    """Score one short noise clip so that a missing trained model fails here, not mid-run."""
    import torch

    generator = torch.Generator().manual_seed(0)
    clip = 0.05 * torch.randn(sample_rate, generator=generator)
    kwargs = {"codes": [torch.zeros(50, dtype=torch.long)]} if getattr(verifier, "accepts_codes", False) else {}
    verifier.evaluate([clip], sample_rate, texts=["hello"], prompts=clip, **kwargs)


def load_check_verifier(name: str, sample_rate: int, notes: list[str]) -> Any | None:
    """The check verifier, or None with a note saying why (not registered, no trained model)."""
    try:
        verifier = _build_verifier(name)
        _probe(verifier, sample_rate)
    except Exception as error:  # noqa: BLE001 - any failure means "not available": reported, not hidden
        notes.append(f"check verifier {name!r} is not available ({type(error).__name__}: {error}); "
                     "its columns are left empty (train that verifier or pass another check verifier)")
        return None
    return verifier


# ---------------------------------------------------------------------------------------------
# Held-out data


@dataclass(frozen=True)
class HeldOut:
    utterance_id: str
    text: str
    audio_path: Path
    prompt_id: str  # "" without voice cloning
    prompt_text: str
    prompt_audio: Path | None


def corpus_dir(corpus: str) -> Path:
    from workbench.data.prepare import data_root

    path = Path(corpus)
    if (path / "manifest.jsonl").exists() or path.suffix == ".jsonl":
        return path
    return data_root() / corpus


def split_utterances(config: AblationConfig) -> tuple[Path, Path, list[Any]]:
    """(corpus folder or manifest, folder audio paths are relative to, the utterances of
    `config.split` sorted by id: the same on every launch)."""
    from workbench.data.manifest import read_manifest

    folder = corpus_dir(config.corpus)
    root = folder.parent if folder.suffix == ".jsonl" else folder
    utterances = sorted((u for u in read_manifest(folder) if u.split == config.split),
                        key=lambda u: u.utterance_id)
    if not utterances:
        raise FileNotFoundError(f"{folder}: no utterances in split {config.split!r}")
    return folder, root, utterances


def held_out_items(config: AblationConfig) -> list[HeldOut]:
    """`n_sentences` held-out sentences (at most `max_words` words, sorted by id: the same on every
    launch) and, with voice cloning, a different held-out utterance of the same speaker as each
    one's prompt (the shortest-first pool of utterances between prompt_min_s and prompt_max_s)."""
    folder, root, utterances = split_utterances(config)
    prompt_pool = [u for u in utterances if config.prompt_min_s <= u.duration_s <= config.prompt_max_s]
    # A quarter of the pool is reserved for prompts so that no sentence is also someone's prompt.
    reserved = prompt_pool[: max(1, len(prompt_pool) // 4)] if config.voice_cloning else []
    reserved_ids = {u.utterance_id for u in reserved}
    targets = [u for u in utterances if len(u.text.split()) <= config.max_words and u.utterance_id not in reserved_ids]
    targets = targets[: config.n_sentences]
    if len(targets) < config.n_sentences:
        raise ValueError(f"{folder}: only {len(targets)} held-out sentences of at most {config.max_words} words "
                         f"(asked for {config.n_sentences})")
    items = []
    for i, u in enumerate(targets):
        prompt = None
        if config.voice_cloning:
            same_speaker = ([p for p in reserved if p.speaker == u.speaker]
                            or [p for p in prompt_pool if p.speaker == u.speaker and p.utterance_id != u.utterance_id])
            if not same_speaker:
                raise ValueError(f"no prompt utterance of {config.prompt_min_s}-{config.prompt_max_s} s for "
                                 f"speaker {u.speaker!r} in split {config.split!r}")
            prompt = same_speaker[i % len(same_speaker)]
        items.append(HeldOut(utterance_id=u.utterance_id, text=u.text, audio_path=u.resolve(root),
                             prompt_id=prompt.utterance_id if prompt else "", prompt_text=prompt.text if prompt else "",
                             prompt_audio=prompt.resolve(root) if prompt else None))
    return items


TEXT_GAIN_FLOOR_NATS = 0.05
"""Below this text-conditioning gain the LM is reported as not reading its text."""


def lm_text_gain(lm: Any, codec: Any, config: AblationConfig, max_utterances: int = 16):
    """`workbench.lm.diagnostics.text_conditioning_gain` of the LM on up to `max_utterances`
    utterances of the held-out split, encoded with the search codec: whether WER search has
    anything to select from."""
    from workbench.audio import load_audio
    from workbench.data.token_shards import TokenizedUtterance
    from workbench.lm.diagnostics import text_conditioning_gain

    _, root, utterances = split_utterances(config)
    encoded = []
    for u in utterances[:max_utterances]:
        wav, _ = load_audio(u.resolve(root), int(codec.sample_rate))
        encoded.append(TokenizedUtterance(u.utterance_id, u.speaker, u.text, u.split,
                                          codec.encode(wav[:1], int(codec.sample_rate))[0]))
    return text_conditioning_gain(lm.model, lm.tokenizer, lm.layout, encoded)


# ---------------------------------------------------------------------------------------------
# Results file


def _row_key(utterance_id: str, arm: str) -> tuple[str, str]:
    return (utterance_id, arm)


def read_rows(path: Path) -> list[AblationRow]:
    """Rows of a results.csv (a torn last line from a crash is dropped)."""
    if not path.exists():
        return []
    types = {f.name: f.type for f in dataclasses.fields(AblationRow)}
    rows = []
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            if any(record.get(name) in (None, "") and types[name] not in ("str",) for name in types):
                continue  # incomplete (torn) line
            values: dict[str, Any] = {}
            for name, kind in types.items():
                raw = record[name]
                values[name] = (int(raw) if kind == "int" else float(raw) if kind == "float"
                                else raw == "True" if kind == "bool" else raw)
            rows.append(AblationRow(**values))
    return rows


def _append_row(path: Path, row: AblationRow) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in dataclasses.fields(AblationRow)])
        if new:
            writer.writeheader()
        writer.writerow(dataclasses.asdict(row))
        handle.flush()
        os.fsync(handle.fileno())


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------
# The run


class _Metrics:
    """Metric and check verifiers on chosen clips, cached by clip content (the sample arms of
    different verifier specs choose the same clip)."""

    def __init__(self, config: AblationConfig, sample_rate: int, notes: list[str], search_cache: dict[str, Any]):
        self.sample_rate = sample_rate
        self.cache: dict[tuple[str, str], float] = {}
        check_map = dict(pair.split("=") for pair in config.check_verifiers)
        self.check_names = check_map
        self.verifiers: dict[str, Any | None] = {}
        for name in {config.wer_verifier, config.sim_verifier, config.quality_verifier} - {""}:
            self.verifiers[name] = search_cache.get(name) or _build_verifier(name)
        for name in set(check_map.values()):
            self.verifiers[name] = load_check_verifier(name, sample_rate, notes)

    def model_files(self) -> dict[str, str]:
        """The trained model file behind each check verifier that has one (which run it read)."""
        return {name: str(v.model_path) for name, v in self.verifiers.items()
                if v is not None and getattr(v, "model_path", None) is not None}

    def value(self, name: str, wav: Any, codes: Any, text: str, reference: Any, raw: bool) -> float:
        """`raw` metric (WER, cosine, MOS) or score of verifier `name` on `wav`; NaN when the
        verifier is unavailable or the clip is empty."""
        verifier = self.verifiers.get(name)
        if verifier is None or wav is None or wav.numel() == 0:
            return math.nan
        key = (name, hashlib.sha1(wav.numpy().tobytes()).hexdigest() + text)
        if key not in self.cache:
            kwargs = {"codes": [codes]} if getattr(verifier, "accepts_codes", False) else {}
            result = verifier.evaluate([wav], self.sample_rate, texts=[text], prompts=reference, **kwargs)[0]
            value = result.raw.ovrl if hasattr(result.raw, "ovrl") else result.raw
            self.cache[key] = float(value)
            self.cache[(name + "#score", key[1])] = float(result.score)
        return self.cache[key] if raw else self.cache[(name + "#score", key[1])]


def search_codec_path(config: AblationConfig, lm: Any = None) -> str:
    """The codec the ablation decodes with: `codec_path`, else the one the LM checkpoint records
    (from `lm`, a loaded `LoadedLM`, when given; else from the metadata under `lm_path`)."""
    from workbench.lm.model import read_checkpoint_meta

    if config.codec_path:
        return config.codec_path
    if lm is not None:
        recorded = lm.codec.codec if lm.codec is not None else ""
    else:
        recorded = (read_checkpoint_meta(config.lm_path).get("codec") or {}).get("codec", "")
    if not recorded:
        raise ValueError("no codec: set AblationConfig.codec_path (the LM checkpoint records none)")
    return str(recorded)


def _load_lm_quietly(path: str | Path):
    """`load_lm` without transformers' "Loading weights" bar: in a live notebook it is a stray
    widget above the search's own progress bar, and it says nothing (the previous bar setting is
    restored, so other callers keep theirs)."""
    from transformers.utils import logging as hf_logging

    from workbench.lm.model import load_lm

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load_lm(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def run_ablation(config: AblationConfig, *, run_id: str | None = None, root: str | Path | None = None,
                 progress: bool = True, lm: Any = None, codec: Any = None) -> AblationResult:
    """Run (or resume, with the same `run_id`) the ablation; see the module docstring.
    `lm` (a `LoadedLM`) and `codec` may be passed already loaded (tests, notebooks)."""
    import torch
    from tqdm.auto import tqdm

    from workbench.audio import load_audio, save_audio
    from workbench.codec.interface import load_codec
    from workbench.lm.generate import SamplingConfig
    from workbench.runs import start_run
    from workbench.search import SearchOptions, VoicePrompt, get
    from workbench.search.preferences import candidate_record

    start = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if lm is None:
        if not config.lm_path:
            raise ValueError("AblationConfig.lm_path is empty: give the LM checkpoint folder to search with")
        lm = _load_lm_quietly(config.lm_path)
    if codec is None:
        codec = load_codec(search_codec_path(config, lm))
    if codec.codebook_size != lm.layout.codebook_size:
        raise ValueError(f"codec has {codec.codebook_size} codes, LM layout {lm.layout.codebook_size}")
    model = lm.model.eval()
    items = held_out_items(config)
    arms = plan_arms(config)
    sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p)
    options = SearchOptions(step_tokens=config.step_tokens, partial_s=config.partial_s,
                            seconds_per_word=config.seconds_per_word, margin_s=config.margin_s)
    notes: list[str] = []
    search_cache: dict[str, Any] = {}
    arm_verifiers = {arm.verifier: search_verifiers_for(arm.verifier, search_cache) for arm in arms}
    metrics = _Metrics(config, int(codec.sample_rate), notes, search_cache)
    text_gain = lm_text_gain(lm, codec, config)
    if text_gain.gain_nats < TEXT_GAIN_FLOOR_NATS:
        notes.append(f"the LM barely reads its text: its speech loss on {text_gain.n_utterances} held-out "
                     f"utterances rises only {text_gain.gain_nats:.3f} nats/token under another transcript "
                     "(workbench.lm.diagnostics), so search on WER has little to select from")
    for note in notes:
        print(f"[search ablate] {note}", file=sys.stderr, flush=True)

    with start_run("search", config, run_id=run_id, root=root) as run:
        results_csv = run.dir / RESULTS_FILE
        existing = read_rows(results_csv)
        done = {_row_key(r.utterance_id, r.arm) for r in existing}
        n_skipped = sum(1 for item in items for arm in arms if _row_key(item.utterance_id, arm.name) in done)
        rows = list(existing)
        n_new = 0
        complete = True
        total = len(items) * len(arms)
        bar = tqdm(total=total, initial=n_skipped, disable=not progress, desc="search ablate", unit="row")
        sample_rate = int(codec.sample_rate)
        for index, item in enumerate(items):
            todo = [arm for arm in arms if _row_key(item.utterance_id, arm.name) not in done]
            if not todo:
                continue
            reference, _ = load_audio(item.audio_path, sample_rate)
            reference = reference[0] if reference.dim() == 2 else reference
            save_audio(run.artifact(f"audio/reference/{item.utterance_id}.wav"), reference, sample_rate)
            prompt = None
            if item.prompt_audio is not None:
                prompt_wav, _ = load_audio(item.prompt_audio, sample_rate)
                prompt_wav = prompt_wav[0] if prompt_wav.dim() == 2 else prompt_wav
                prompt = VoicePrompt(codes=codec.encode(prompt_wav, sample_rate)[0], text=item.prompt_text,
                                     wav=prompt_wav, sample_rate=sample_rate)
                save_audio(run.artifact(f"audio/prompt/{item.utterance_id}.wav"), prompt_wav, sample_rate)
            # Speaker similarity is measured against the prompt when cloning, else against the
            # real recording (same speaker).
            speaker_reference = prompt.wav if prompt is not None else reference
            seed = config.seed * 100_003 + index  # the same per sentence in every arm
            for arm in todo:
                if config.time_limit_s and time.perf_counter() - start > config.time_limit_s:
                    complete = False
                    break
                result = get(arm.strategy)(model, lm.tokenizer, lm.layout, codec, item.text,
                                           verifiers=arm_verifiers[arm.verifier], budget=arm.budget,
                                           sampling=sampling, seed=seed, prompt=prompt, options=options)
                audio_rel = f"audio/{arm.name}/{item.utterance_id}.wav"
                if result.wav.numel():
                    save_audio(run.artifact(audio_rel), result.wav, sample_rate)
                else:
                    audio_rel = ""
                if len(result.candidates) > 1 and result.worst.wav is not None:
                    save_audio(run.artifact(f"audio/{arm.name}/{item.utterance_id}.worst.wav"),
                               result.worst.wav, sample_rate)
                _append_jsonl(run.dir / CANDIDATES_FILE, candidate_record(
                    result, utterance_id=item.utterance_id, prompt_text=prompt.text if prompt else None,
                    prompt_codes=prompt.codes.tolist() if prompt else None, extra={"arm": arm.name}))
                check_name = metrics.check_names.get(arm.outcome, "")
                wav, codes = result.wav, result.codes
                row = AblationRow(
                    utterance_id=item.utterance_id, text=item.text, prompt_id=item.prompt_id, arm=arm.name,
                    strategy=arm.strategy, budget=arm.budget, verifier=arm.verifier, check_verifier=check_name,
                    score=result.score,
                    check_score=metrics.value(check_name, wav, codes, item.text, speaker_reference, raw=False)
                    if check_name else math.nan,
                    wer=metrics.value(config.wer_verifier, wav, codes, item.text, speaker_reference, raw=True),
                    check_wer=metrics.value(metrics.check_names.get(config.wer_verifier, ""), wav, codes, item.text,
                                            speaker_reference, raw=True),
                    sim=metrics.value(config.sim_verifier, wav, codes, item.text, speaker_reference, raw=True),
                    check_sim=metrics.value(metrics.check_names.get(config.sim_verifier, ""), wav, codes, item.text,
                                            speaker_reference, raw=True),
                    dnsmos=metrics.value(config.quality_verifier, wav, codes, item.text, speaker_reference, raw=True)
                    if config.quality_verifier else math.nan,
                    n_candidates=len(result.candidates), frames=int(result.codes.numel()),
                    duration_s=result.codes.numel() / float(codec.frame_rate_hz), ended=result.best.ended,
                    tokens_generated=result.compute.tokens_generated, decodes=result.compute.codec_decodes,
                    verifier_calls=result.compute.verifier_calls, lm_flops=result.compute.lm_flops,
                    wall_s=result.compute.wall_s, seed=seed, audio=audio_rel)
                _append_row(results_csv, row)  # last: a row in results.csv means the arm is done
                rows.append(row)
                n_new += 1
                bar.update(1)
            if not complete:
                break
        bar.close()
        wall_s = time.perf_counter() - start
        if not complete:
            notes.append(f"time limit {config.time_limit_s:.0f} s reached: {len(rows)} of {total} rows done; "
                         "relaunch with the same run id to continue")
        run.summary(n_rows=len(rows), n_rows_planned=total, n_new_rows=n_new, complete=complete,
                    results_csv=str(results_csv), arms=[a.name for a in arms], notes=notes, wall_s=wall_s,
                    lm_text_gain_nats=text_gain.gain_nats, lm_text_gain_fraction_better=text_gain.fraction_better,
                    check_models=metrics.model_files())
        return AblationResult(run_dir=run.dir, results_csv=results_csv, rows=rows, n_new_rows=n_new,
                              n_skipped_rows=n_skipped, complete=complete, notes=notes, wall_s=wall_s,
                              lm_text_gain=text_gain)


# ---------------------------------------------------------------------------------------------
# Command line (wired by the lead as `workbench search ablate`)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="workbench search ablate", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="config profile (smoke, cpu, gpu-*); default cpu")
    parser.add_argument("--lm", dest="lm_path", help="LM checkpoint folder")
    parser.add_argument("--codec", dest="codec_path", help="codec (default: the one recorded in the LM checkpoint)")
    parser.add_argument("--corpus", help="prepared corpus name or folder (default: kathleen)")
    parser.add_argument("--split", help="held-out split (default: test)")
    parser.add_argument("--n-sentences", type=int)
    parser.add_argument("--strategies", nargs="+", help="sample best_of_n beam partial_mix")
    parser.add_argument("--budgets", nargs="+", type=int)
    parser.add_argument("--verifiers", dest="search_verifiers", nargs="+",
                        help="search verifier specs: name, a+b (weighted), process>outcome")
    parser.add_argument("--check", dest="check_verifiers", nargs="+", help="search=check pairs")
    parser.add_argument("--no-voice-cloning", dest="voice_cloning", action="store_const", const=False)
    parser.add_argument("--time-limit-s", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--run-id", help="resume (or name) this run")
    parser.add_argument("--root", help="runs root (default: $WORKBENCH_RUNS or ./runs)")
    parser.add_argument("--preferences", help="also export (best, worst) pairs as JSONL to this path")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


_CONFIG_ARGS = ("lm_path", "codec_path", "corpus", "split", "n_sentences", "strategies", "budgets",
                "search_verifiers", "check_verifiers", "voice_cloning", "time_limit_s", "seed")


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """Run the ablation that parsed options (from `build_parser`) describe."""
    from workbench.config import for_profile
    from workbench.search.preferences import export_preferences

    overrides = {k: getattr(args, k) for k in _CONFIG_ARGS if getattr(args, k) is not None}
    for key in ("strategies", "budgets", "search_verifiers", "check_verifiers"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    config = for_profile(AblationConfig, args.profile, **overrides)
    result = run_ablation(config, run_id=args.run_id, root=args.root, progress=args.progress)
    print(f"{result.results_csv}: {len(result.rows)} rows ({result.n_new_rows} new, "
          f"{result.n_skipped_rows} resumed){'' if result.complete else ' - incomplete (time limit)'}")
    for note in result.notes:
        print(f"note: {note}")
    if args.preferences:
        n = export_preferences(result.run_dir, args.preferences)
        print(f"{args.preferences}: {n} preference pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
