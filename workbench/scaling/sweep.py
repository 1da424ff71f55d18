"""Train-time scaling sweeps: a grid of LM runs (model sizes x token budgets), run by an executor.

Every point is an ordinary `lm` run with a deterministic run id (sweep name, size, budget and a
hash of its config), so re-launching a sweep skips finished points, resumes interrupted ones from
their last checkpoint, and never mixes points trained under different settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from workbench.config import config_hash, for_profile
from workbench.settings import stage_profiles

EXECUTORS = ("local", "inline", "slurm", "submitit-local")


@dataclass(frozen=True)
class SweepConfig:
    """A grid of LM runs. `grid="isoflop"` picks, for each compute budget in `flop_budgets`, the
    token budget that spends it at each size (D = C / 6N), instead of the sizes x budgets product."""

    name: str = "ladder"
    sizes: tuple[str, ...] = ("cpu-0.1m", "cpu-0.3m", "cpu-1m", "cpu-3m", "cpu-7m")
    token_budgets: tuple[int, ...] = (100_000, 200_000, 400_000)
    grid: Literal["product", "isoflop"] = "product"
    flop_budgets: tuple[float, ...] = ()
    train_profile: str = "cpu"  # LMTrainConfig profile every point starts from
    # "" = the train profile's; "interleaved" trains every point on the interleaved layout with the
    # character front-end (workbench.lm.interleaved; needs <tokens>/alignments.json)
    sequence_layout: str = ""
    # "width": each size's peak lr = the train profile's lr x lr_reference_width / d_model (Adam's
    # update size per weight is lr, so wider layers need smaller steps; tuned at cpu-1m's width 128),
    # so larger rungs are not held back by a rate tuned for a small one. "constant": one lr for all.
    lr_rule: Literal["constant", "width"] = "constant"
    lr_reference_width: int = 128
    # Early stopping of every point on its validation loss (LMTrainConfig.early_stop_patience /
    # early_stop_min_delta; 0 = off: each point trains to its budget). A point that stops keeps its
    # best evaluation's model, and the fits take D (and C) at that evaluation, not the budget:
    # the tokens that model saw (`workbench.scaling.study.trained_tokens`).
    early_stop_patience: int = 0
    early_stop_min_delta: float = 0.0
    # The pipeline's LM (what 25_alignment evaluates and 30_search samples): one more run after
    # the ladder, at `final_preset` and `final_token_budget` with the ladder's settings plus
    # `final_speech_input_noise` (LMTrainConfig.speech_input_noise). At cpu scale a model reads its
    # text only after more tokens than the ladder's top budget (docs/design.md, "Reading is not
    # saying"). "" / 0 = no such run: the ladder's lowest-validation-loss run is the pipeline's LM.
    final_preset: str = ""
    final_token_budget: int = 0
    final_speech_input_noise: float = 0.0
    final_speech_input_noise_source: Literal["uniform", "model"] = "uniform"  # LMTrainConfig.speech_input_noise_source
    executor: Literal["local", "inline", "slurm", "submitit-local"] = "local"
    max_workers: int = 2
    memory_per_job_gb: float = 2.0
    seed: int = 0
    # Inputs and outputs of the 20_lm_scaling notebook (not part of any run's identity):
    tokens_dir: str = ""  # token shards from codec tokenisation (the pipeline passes them)
    codec: str = ""  # codec that made them, to listen to each size's samples
    n_bootstrap: int = 100  # bootstrap resamples for the fits' confidence bands
    n_listen: int = 2  # held-out sentences synthesised by every model size

    PROFILES: ClassVar[dict] = stage_profiles("sweep")  # workbench/profiles.yaml

    def __post_init__(self) -> None:
        if isinstance(self.early_stop_patience, bool) or not isinstance(self.early_stop_patience, int) \
                or self.early_stop_patience < 0:
            raise ValueError(f"SweepConfig.early_stop_patience = {self.early_stop_patience!r}: must be a whole "
                             "number of evaluations >= 0 (0 = no early stopping)")
        if not self.early_stop_min_delta >= 0.0:
            raise ValueError(f"SweepConfig.early_stop_min_delta = {self.early_stop_min_delta!r}: must be >= 0 nats")
        if bool(self.final_preset) != (self.final_token_budget > 0):
            raise ValueError(f"SweepConfig.final_preset = {self.final_preset!r}, final_token_budget = "
                             f"{self.final_token_budget}: set both (a final run) or neither")
        if not 0.0 <= self.final_speech_input_noise < 1.0:
            raise ValueError(f"SweepConfig.final_speech_input_noise = {self.final_speech_input_noise!r}: must be in [0, 1)")
        if self.final_speech_input_noise_source not in ("uniform", "model"):
            raise ValueError(f"SweepConfig.final_speech_input_noise_source = {self.final_speech_input_noise_source!r}: "
                             "expected 'uniform' or 'model'")


@dataclass(frozen=True)
class SweepPoint:
    run_id: str
    preset: str
    token_budget: int
    train_config: Any  # LMTrainConfig
    flop_budget: float = 0.0  # the IsoFLOP budget this point spends (grid="isoflop"); 0 otherwise


@dataclass(frozen=True)
class _PointJob:
    """One picklable job for `workbench.executors.run_jobs`."""

    train_config: Any
    shards_dir: str
    run_id: str
    root: str | None


@dataclass
class SweepResult:
    config: SweepConfig
    table: Any  # pandas DataFrame, one row per point
    failed: list[str] = field(default_factory=list)  # run ids with their errors, one per line
    n_reused: int = 0


def shards_key(shards_dir: str | Path) -> str:
    """Short hash of a token-shard folder's index (codec, counts, shard names): points trained on
    other tokens get other run ids, so a re-tokenised corpus is never mixed with old runs."""
    import hashlib

    from workbench.data.token_shards import INDEX_NAME

    digest = hashlib.sha256((Path(shards_dir) / INDEX_NAME).read_bytes())
    alignments = Path(shards_dir) / "alignments.json"  # what interleaved runs train on besides the tokens
    if alignments.exists():
        digest.update(alignments.read_bytes())
    return digest.hexdigest()[:6]


def lr_for(config: SweepConfig, base_lr: float, preset: str) -> float:
    """Peak learning rate of one size under the sweep's `lr_rule`."""
    if config.lr_rule == "constant":
        return base_lr
    if config.lr_rule != "width":
        raise ValueError(f"SweepConfig.lr_rule = {config.lr_rule!r}: expected 'constant' or 'width'")
    from workbench.lm.presets import get_preset

    return base_lr * config.lr_reference_width / get_preset(preset).d_model


def _base_train_config(config: SweepConfig):
    """The LMTrainConfig every point starts from: the train profile with the sweep's settings."""
    from workbench.lm.train import LMTrainConfig

    layout = {}
    if config.sequence_layout:
        layout = dict(sequence_layout=config.sequence_layout,
                      text_frontend="chars" if config.sequence_layout == "interleaved" else "bpe")
    return for_profile(LMTrainConfig, config.train_profile, seed=config.seed, progress=False,
                       early_stop_patience=config.early_stop_patience,
                       early_stop_min_delta=config.early_stop_min_delta, **layout)


def sweep_points(config: SweepConfig, n_params_of: Any = None, data_key: str = "") -> list[SweepPoint]:
    """The grid as a list of points with deterministic run ids (`data_key` names the tokens)."""
    base = _base_train_config(config)
    triples: list[tuple[str, int, float]]
    if config.grid == "product":
        triples = [(size, budget, 0.0) for size in config.sizes for budget in config.token_budgets]
    else:
        if not config.flop_budgets:
            raise ValueError("grid='isoflop' needs flop_budgets")
        if n_params_of is None:
            raise ValueError("grid='isoflop' needs n_params_of(preset) to turn FLOPs into tokens")
        triples = [(size, int(flops / (6 * n_params_of(size))), float(flops))
                   for flops in config.flop_budgets for size in config.sizes]
    points = []
    for size, budget, flop_budget in triples:
        train_config = dataclasses.replace(base, preset=size, token_budget=int(budget), lr=lr_for(config, base.lr, size))
        run_id = f"{config.name}-{size}-{budget}-{config_hash(train_config, 8)}{'-' + data_key if data_key else ''}"
        points.append(SweepPoint(run_id=run_id, preset=size, token_budget=int(budget), train_config=train_config,
                                 flop_budget=flop_budget))
    return points


def final_point(config: SweepConfig, data_key: str = "") -> SweepPoint | None:
    """The pipeline's LM run after the ladder (None when the config asks for none)."""
    if not config.final_preset:
        return None
    base = _base_train_config(config)
    train_config = dataclasses.replace(base, preset=config.final_preset, token_budget=config.final_token_budget,
                                       lr=lr_for(config, base.lr, config.final_preset),
                                       speech_input_noise=config.final_speech_input_noise,
                                       speech_input_noise_source=config.final_speech_input_noise_source)
    run_id = (f"{config.name}-final-{config.final_preset}-{config.final_token_budget}-{config_hash(train_config, 8)}"
              f"{'-' + data_key if data_key else ''}")
    return SweepPoint(run_id=run_id, preset=config.final_preset, token_budget=config.final_token_budget,
                      train_config=train_config)


def train_final_lm(config: SweepConfig, shards_dir: str | Path, *, root: str | Path | None = None,
                   progress: bool = True) -> dict[str, Any] | None:
    """Train (or reuse, or resume) the final run of `final_point`; its summary, None when off."""
    from workbench.runs import runs_root

    point = final_point(config, data_key=shards_key(shards_dir))
    if point is None:
        return None
    base_root = runs_root(root)
    summary = finished_summary(base_root / "lm" / point.run_id)
    if summary is None:
        if progress:
            print(f"[sweep {config.name}] final LM: {point.preset} x {point.token_budget:,} tokens, speech input "
                  f"noise {config.final_speech_input_noise} ({config.final_speech_input_noise_source})", flush=True)
        summary = _run_point(_PointJob(point.train_config, str(shards_dir), point.run_id, str(base_root)))
    elif progress:
        print(f"[sweep {config.name}] final LM reused: {point.run_id}", flush=True)
    return {**summary, "run_id": point.run_id, "token_budget": point.token_budget}


def _run_point(job: _PointJob) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from workbench.lm.train import train_lm

    # One line per finished point is the sweep's progress; transformers' per-save bars would
    # bury it (the worker is a separate process, so this changes nothing for the caller).
    hf_logging.disable_progress_bar()
    result = train_lm(job.train_config, job.shards_dir, run_id=job.run_id, root=job.root)
    return result.to_dict()


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished, completed run (None for a missing, unfinished or stopped one)."""
    meta_path, summary_path = run_dir / "meta.json", run_dir / "summary.json"
    if not (meta_path.exists() and summary_path.exists()):
        return None
    if json.loads(meta_path.read_text()).get("status") != "finished":
        return None
    summary = json.loads(summary_path.read_text())
    return summary if summary.get("completed", True) else None


def run_sweep(config: SweepConfig, shards_dir: str | Path, *, root: str | Path | None = None,
              progress: bool = True) -> SweepResult:
    """Run every point not yet finished (resuming interrupted ones) and return the whole table."""
    import pandas as pd

    from workbench.executors import run_jobs
    from workbench.runs import runs_root

    base_root = runs_root(root)
    points = sweep_points(config, n_params_of=_n_params_for(config, shards_dir), data_key=shards_key(shards_dir))
    rows: dict[str, dict[str, Any]] = {}
    todo: list[SweepPoint] = []
    for point in points:
        summary = finished_summary(base_root / "lm" / point.run_id)
        if summary is not None:
            rows[point.run_id] = summary
        else:
            todo.append(point)
    n_reused = len(rows)
    if progress:
        print(f"[sweep {config.name}] {len(points)} points: {n_reused} finished, {len(todo)} to run "
              f"({config.executor}, up to {config.max_workers} at once)", flush=True)
    jobs = [_PointJob(p.train_config, str(shards_dir), p.run_id, str(base_root)) for p in todo]
    failed = []
    if jobs:
        # Biggest first: the longest jobs start early, so the pool is not left waiting on one.
        order = sorted(range(len(jobs)), key=lambda i: -_cost(todo[i]))
        results = run_jobs(_run_point, [jobs[i] for i in order], executor=config.executor,
                           max_workers=config.max_workers, memory_per_job_gb=config.memory_per_job_gb,
                           folder=str(base_root / "sweeps" / config.name / "submitit"))
        for i, result in zip(order, results):
            point = todo[i]
            if result.ok:
                rows[point.run_id] = result.value
                if progress:
                    stopped = (f", stopped early, best at {result.value['best_tokens_seen']:,} tokens"
                               if result.value.get("stopped_early") else "")
                    print(f"[sweep {config.name}] done {point.preset} x {point.token_budget:,} tokens: "
                          f"valid loss {result.value['final_valid_loss']:.4f}{stopped} ({result.wall_time_s:.0f} s)",
                          flush=True)
            else:
                failed.append(f"{point.run_id}: {result.error.strip().splitlines()[-1] if result.error else 'failed'}")
    table = pd.DataFrame([{**rows[p.run_id], "run_id": p.run_id, "token_budget": p.token_budget,
                           "flop_budget": p.flop_budget}
                          for p in points if p.run_id in rows])
    if not table.empty:
        from workbench.scaling.study import trained_flops

        table["compute"] = trained_flops(table)  # of the saved model: at the best step when one stopped early
        table = table.sort_values(["n_params", "token_budget"]).reset_index(drop=True)
    return SweepResult(config=config, table=table, failed=failed, n_reused=n_reused)


def _n_params_for(config: SweepConfig, shards_dir: str | Path):
    """N (all parameters) of each preset with these shards' codebook, for IsoFLOP token budgets
    (C = 6 N D); the text vocabulary is the configured BPE size, close to what training builds."""
    from workbench.config import for_profile
    from workbench.data.token_shards import read_shard_index
    from workbench.lm.flops import count_params
    from workbench.lm.layout import TokenLayout
    from workbench.lm.model import build_llama_config
    from workbench.lm.train import LMTrainConfig

    if config.grid != "isoflop":
        return None
    codebook_size = read_shard_index(shards_dir).codec.codebook_size
    text_vocab = for_profile(LMTrainConfig, config.train_profile).text_vocab_size
    layout = TokenLayout(text_vocab_size=text_vocab, codebook_size=codebook_size)
    return lambda preset: count_params(build_llama_config(preset, layout)).n_params


def _cost(point: SweepPoint) -> float:
    from workbench.lm.presets import get_preset

    preset = get_preset(point.preset)
    return preset.n_layers * preset.d_model**2 * point.token_budget
