"""Training of the workbench's own speaker-embedding model (`workbench-speaker`): data, the loop,
equal error rate, and the command line. The model is `workbench.checkmodels.speaker_model`."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from workbench.checkmodels import common
from workbench.checkmodels.speaker_model import (CHECKPOINT_FILE, MODEL_FILE, RUN_KIND, AAMSoftmax,
                                                 SpeakerEncoder, SpeakerModelSpec, save_model,
                                                 speaker_features)
from workbench.settings import stage_profiles
from workbench.training import StopAfter, warmup_cosine


# ---------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class SpeakerTrainConfig:
    PROFILES: ClassVar[dict] = stage_profiles("speaker")  # workbench/profiles.yaml

    corpora: tuple[str, ...] = ("kathleen", "vctk", "synth", "fsdd", "cmu_arctic", "ljspeech")
    skip_missing_corpora: bool = True  # a corpus not prepared is left out (listed in the summary)
    data_dir: str = ""  # "" = $WORKBENCH_DATA_DIR or ./data
    max_clips_per_speaker: int = 120  # training clips kept per speaker (memory; Kathleen has 1,000+)
    max_eval_clips_per_speaker: int = 12  # so no speaker dominates the pair statistics
    # model (see SpeakerModelSpec)
    n_mels: int = 80
    channels: int = 128
    embedding_dim: int = 128
    res2net_scale: int = 4
    # optimisation
    max_steps: int = 300
    speakers_per_batch: int = 16
    clips_per_speaker: int = 3
    crop_frames: int = 200  # 2 s crops
    lr: float = 2e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.05
    weight_decay: float = 2e-4
    grad_clip: float = 5.0
    margin: float = 0.2
    margin_ramp_steps: int = 100
    scale: float = 30.0
    # bookkeeping
    checkpoint_every: int = 50
    log_every: int = 10
    seed: int = 0
    num_threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "speakers_per_batch", "clips_per_speaker", "crop_frames", "checkpoint_every",
                     "log_every", "channels", "embedding_dim", "max_clips_per_speaker",
                     "max_eval_clips_per_speaker"):
            if getattr(self, name) < 1:
                raise ValueError(f"SpeakerTrainConfig.{name} = {getattr(self, name)}: must be >= 1")
        if not self.corpora:
            raise ValueError("SpeakerTrainConfig.corpora is empty")

    def model_spec(self) -> SpeakerModelSpec:
        return SpeakerModelSpec(n_mels=self.n_mels, channels=self.channels, embedding_dim=self.embedding_dim,
                                res2net_scale=self.res2net_scale)


@dataclass(frozen=True)
class SpeakerEval:
    """Same- vs different-speaker cosine statistics over all pairs of a set of clips.

    eer: equal error rate of thresholding the cosine (fraction). "seen": held-out clips of trained
    speakers only; "unseen": pairs with at least one clip of a speaker never trained on;
    "within_corpus": pairs from the same corpus only, where recording conditions cannot give the
    answer away.
    """

    name: str
    n_clips: int
    n_speakers: int
    n_same_pairs: int
    n_different_pairs: int
    eer: float
    mean_same_cosine: float
    mean_different_cosine: float


@dataclass(frozen=True)
class SpeakerTrainResult:
    run_id: str
    run_dir: str
    model_path: str
    n_params: int
    steps: int
    n_train_speakers: int
    n_train_clips: int
    unseen_speakers: tuple[str, ...]
    corpora_used: tuple[str, ...]
    final_train_loss: float
    final_train_accuracy: float
    train_wall_s: float
    wall_s: float
    completed: bool  # reached max_steps (False: stopped by stop_after_steps; no model.pt, no eval yet)
    eval: dict[str, SpeakerEval] = field(default_factory=dict)
    baseline_eval: dict[str, SpeakerEval] = field(default_factory=dict)  # filled by `evaluate_speaker` callers
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def equal_error_rate(same: Sequence[float], different: Sequence[float]) -> float:
    """EER of accepting a pair when its score >= a threshold: the point where the false-reject rate
    (same pairs below) equals the false-accept rate (different pairs at or above), interpolated."""
    import numpy as np

    same_a, diff_a = np.sort(np.asarray(same, float)), np.sort(np.asarray(different, float))
    if len(same_a) == 0 or len(diff_a) == 0:
        return float("nan")
    thresholds = np.unique(np.concatenate([same_a, diff_a, [np.inf]]))
    frr = np.searchsorted(same_a, thresholds, side="left") / len(same_a)  # same pairs below the threshold
    far = 1.0 - np.searchsorted(diff_a, thresholds, side="left") / len(diff_a)  # different at or above
    i = int(np.argmax(frr >= far))  # frr rises from 0, far falls to 0: the first crossing
    if i == 0:
        return float((frr[0] + far[0]) / 2)
    # Interpolate between the two thresholds around the crossing.
    d_prev, d_here = far[i - 1] - frr[i - 1], frr[i] - far[i]
    w = d_prev / (d_prev + d_here) if d_prev + d_here > 0 else 0.5
    return float((1 - w) * (frr[i - 1] + far[i - 1]) / 2 + w * (frr[i] + far[i]) / 2)


def pair_statistics(embeddings: torch.Tensor, speakers: Sequence[str], corpora: Sequence[str],
                    unseen: set[str]) -> dict[str, SpeakerEval]:
    """`SpeakerEval` for "all", "seen", "unseen" and "within_corpus" pairs of embeddings."""
    emb = nn.functional.normalize(embeddings.float(), dim=-1)
    cos = (emb @ emb.T).numpy()
    n = len(speakers)
    groups: dict[str, tuple[list[float], list[float], set[int]]] = {k: ([], [], set())
                                                                    for k in ("all", "seen", "unseen", "within_corpus")}
    for i in range(n):
        for j in range(i + 1, n):
            same = speakers[i] == speakers[j]
            keys = ["all"]
            keys.append("unseen" if speakers[i] in unseen or speakers[j] in unseen else "seen")
            if corpora[i] == corpora[j]:
                keys.append("within_corpus")
            for key in keys:
                groups[key][0 if same else 1].append(float(cos[i, j]))
                groups[key][2].update((i, j))
    out = {}
    for key, (same_list, diff_list, members) in groups.items():
        if not same_list or not diff_list:
            continue
        out[key] = SpeakerEval(name=key, n_clips=len(members), n_speakers=len({speakers[i] for i in members}),
                               n_same_pairs=len(same_list), n_different_pairs=len(diff_list),
                               eer=equal_error_rate(same_list, diff_list),
                               mean_same_cosine=float(sum(same_list) / len(same_list)),
                               mean_different_cosine=float(sum(diff_list) / len(diff_list)))
    return out


@dataclass(frozen=True)
class _SpeakerData:
    train: list[Any]  # Clip
    labels: list[int]
    speakers: list[str]  # label index -> "corpus/speaker"
    eval: list[Any]
    unseen: set[str]
    corpora_used: tuple[str, ...]


def load_speaker_data(config: SpeakerTrainConfig) -> _SpeakerData:
    """Training clips (train + valid splits, per speaker capped) and evaluation clips (test split,
    capped per speaker) of every available corpus in `config.corpora`."""
    from workbench.data.prepare import data_root
    from workbench.checkmodels.asr_train import load_clips

    rng = random.Random(config.seed)
    train, evals, used = [], [], []
    for corpus in config.corpora:
        if not (data_root(config.data_dir or None) / corpus / "manifest.jsonl").exists():
            if config.skip_missing_corpora:
                continue
            raise FileNotFoundError(f"corpus {corpus!r} is not prepared under {data_root(config.data_dir or None)}")
        used.append(corpus)

        def pick(utterances: list[Any]) -> list[Any]:
            # Per (speaker, held out?) a random subset, chosen before any audio is read.
            groups: dict[tuple[str, bool], list[Any]] = {}
            for u in utterances:
                if u.speaker != "unknown":  # unlabelled clips cannot be used for speaker identity
                    groups.setdefault((u.speaker, u.split == "test"), []).append(u)
            kept = []
            for (_, is_test), items in sorted(groups.items()):
                rng.shuffle(items)
                kept.extend(items[:config.max_eval_clips_per_speaker if is_test else config.max_clips_per_speaker])
            return kept

        for clip in load_clips(f"{corpus}:all", config.data_dir, select=pick):
            (evals if clip.split == "test" else train).append(clip)
    if not train:
        raise ValueError(f"no training clips in corpora {config.corpora} under {data_root(config.data_dir or None)}")
    speakers = sorted({f"{c.corpus}/{c.speaker}" for c in train})
    index = {s: i for i, s in enumerate(speakers)}
    unseen = {f"{c.corpus}/{c.speaker}" for c in evals} - set(speakers)
    return _SpeakerData(train=train, labels=[index[f"{c.corpus}/{c.speaker}"] for c in train], speakers=speakers,
                        eval=evals, unseen=unseen, corpora_used=tuple(used))


def evaluate_speaker(embed, clips: Sequence[Any], unseen: set[str]) -> dict[str, SpeakerEval]:
    """Pair statistics of `embed(list of 1-D 16 kHz wavs) -> (n, dim)` over `clips`."""
    embeddings = embed([c.wav for c in clips])
    return pair_statistics(embeddings, [f"{c.corpus}/{c.speaker}" for c in clips], [c.corpus for c in clips], unseen)


def _crop(features: torch.Tensor, n_frames: int, rng: random.Random) -> torch.Tensor:
    """A random `n_frames` window; a shorter clip is repeated end to end first."""
    if features.shape[0] < n_frames:
        features = features.repeat(math.ceil(n_frames / features.shape[0]), 1)
    start = rng.randrange(features.shape[0] - n_frames + 1)
    return features[start:start + n_frames]


def _lr_multiplier(step: int, config: SpeakerTrainConfig) -> float:
    return warmup_cosine(step, config.warmup_steps, config.max_steps, config.min_lr_ratio)


def _eval_dict(d: dict[str, Any]) -> dict[str, SpeakerEval]:
    return {k: SpeakerEval(**v) for k, v in d.items()}


def _result_from_run(run_dir: Path, reused: bool) -> SpeakerTrainResult:
    import json

    s = json.loads((run_dir / "summary.json").read_text())
    simple = {k: s[k] for k in SpeakerTrainResult.__dataclass_fields__
              if k in s and k not in ("eval", "baseline_eval", "reused", "unseen_speakers", "corpora_used",
                                      "completed")}
    # runs finished before the key was written completed (only finished runs are reused)
    return SpeakerTrainResult(**simple, unseen_speakers=tuple(s.get("unseen_speakers", ())),
                              corpora_used=tuple(s.get("corpora_used", ())), eval=_eval_dict(s.get("eval", {})),
                              baseline_eval=_eval_dict(s.get("baseline_eval", {})), reused=reused,
                              completed=s.get("completed", True))


def train_speaker(config: SpeakerTrainConfig, run_id: str | None = None, root: str | Path | None = None, *,
                  reuse: bool = True, stop_after_steps: int | None = None,
                  baseline: str | None = None) -> SpeakerTrainResult:
    """Train the speaker encoder (run kind "speaker") and evaluate it on held-out clips.

    With `reuse` (and no `run_id`), a finished run with the same config hash is returned instead.
    `run_id` naming an existing run resumes it from its checkpoint. `stop_after_steps` stops early
    as `workbench.training` describes for every trainer (checkpoint, run left "interrupted" and
    resumable, no model.pt or final evaluation, result with ``completed=False``).
    `baseline` names a registered speaker verifier (e.g. "resemblyzer") to evaluate on the same
    pairs, for comparison (summary key `baseline_eval`).
    """
    from workbench.config import config_hash
    from workbench.runs import find_runs, start_run

    stop = StopAfter(stop_after_steps)
    if reuse and run_id is None:
        for run_dir in reversed(find_runs(RUN_KIND, root=root, status="finished",
                                          config_hash_value=config_hash(config))):
            if (run_dir / "summary.json").exists() and (run_dir / MODEL_FILE).exists():
                return _result_from_run(run_dir, reused=True)
    import torch

    threads = torch.get_num_threads()
    try:
        with start_run(RUN_KIND, config, root=root, run_id=run_id, seed=config.seed) as run:
            _train(config, run, stop, baseline)
    finally:
        torch.set_num_threads(threads)  # a notebook or test session keeps its own setting
    return _result_from_run(run.dir, reused=False)


def _train(config: SpeakerTrainConfig, run, stop: StopAfter, baseline: str | None) -> None:
    from tqdm.auto import tqdm

    from workbench.checkpoints import load_resume_state, save_checkpoint_file

    wall_start = time.perf_counter()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    spec = config.model_spec()
    data = load_speaker_data(config)
    features = [speaker_features(c.wav, spec) for c in data.train]
    clips_of: dict[int, list[int]] = {}
    for i, label in enumerate(data.labels):
        clips_of.setdefault(label, []).append(i)

    model = SpeakerEncoder(spec)
    head = AAMSoftmax(spec.embedding_dim, len(data.speakers), config.scale)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sampler = random.Random(config.seed)
    step, train_wall_s = 0, 0.0
    checkpoint_path = run.dir / CHECKPOINT_FILE
    state = load_resume_state(checkpoint_path, "speaker train")  # weights-only, checksummed
    if state is not None:
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        step, train_wall_s = state["step"], state["train_wall_s"]
        sampler.setstate(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        run.log(step, event="resumed")

    def save_checkpoint() -> None:
        save_checkpoint_file({"model": model.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
                           "step": step, "train_wall_s": train_wall_s, "sampler": sampler.getstate(),
                           "torch_rng": torch.get_rng_state()}, checkpoint_path, keep_previous=True)

    n_params = sum(p.numel() for p in model.parameters())
    run.log(0, event="start", n_params=n_params, n_train_speakers=len(data.speakers), n_train_clips=len(data.train),
            n_eval_clips=len(data.eval), unseen_speakers=sorted(data.unseen), corpora_used=list(data.corpora_used))
    model.train()
    labels_all = sorted(clips_of)
    loss_sum = acc_sum = 0.0
    count = 0
    last_loss = last_acc = float("nan")
    wall_before, loop_start = train_wall_s, time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=step, desc="speaker", disable=not config.progress, unit="step")
    stopped = False
    while step < config.max_steps:
        # Class-balanced batch: every speaker equally likely, whatever its number of clips.
        chosen = sampler.sample(labels_all, min(config.speakers_per_batch, len(labels_all)))
        indices = [sampler.choice(clips_of[label]) for label in chosen for _ in range(config.clips_per_speaker)]
        x = torch.stack([_crop(features[i], config.crop_frames, sampler) for i in indices])
        y = torch.tensor([data.labels[i] for i in indices])
        margin = config.margin * min(1.0, step / max(1, config.margin_ramp_steps))
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_multiplier(step, config)
        loss, accuracy = head(model(x), y, margin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        step += 1
        last_loss, last_acc = loss.item(), accuracy.item()
        loss_sum, acc_sum, count = loss_sum + last_loss, acc_sum + last_acc, count + 1
        train_wall_s = wall_before + time.perf_counter() - loop_start
        bar.update(1)
        if step % config.log_every == 0 or step == config.max_steps:
            run.log(step, loss=loss_sum / count, accuracy=acc_sum / count, margin=margin,
                    lr=optimizer.param_groups[0]["lr"], grad_norm=float(grad_norm), train_wall_s=train_wall_s)
            bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{acc_sum / count:.2f}")
            loss_sum = acc_sum = 0.0
            count = 0
        if common.checkpoint_or_stop(step, config.max_steps, config.checkpoint_every, stop, save_checkpoint):
            stopped = True
            break
    bar.close()

    so_far = dict(run_id=run.run_id, run_dir=str(run.dir), n_params=n_params, steps=step,
                  n_train_speakers=len(data.speakers), n_train_clips=len(data.train),
                  unseen_speakers=sorted(data.unseen), corpora_used=list(data.corpora_used),
                  final_train_loss=last_loss, final_train_accuracy=last_acc, train_wall_s=train_wall_s)
    if stopped:
        stop.leave_resumable(run)
        run.summary(**so_far, model_path=str(run.dir / MODEL_FILE), wall_s=time.perf_counter() - wall_start,
                    eval={}, baseline=baseline, baseline_eval={}, completed=False)
        return
    model.eval()
    model_path = save_model(model, run.artifact(MODEL_FILE), extra={"run_id": run.run_id, "steps": step,
                                                                   "speakers": data.speakers})
    evals = evaluate_speaker(model.embed, data.eval, data.unseen) if data.eval else {}
    for key, value in evals.items():
        run.log(step, **{f"{key}/eer": value.eer, f"{key}/mean_same_cosine": value.mean_same_cosine,
                         f"{key}/mean_different_cosine": value.mean_different_cosine})
    baseline_evals = {}
    if baseline and data.eval:
        from workbench.verifiers import get

        verifier = get(baseline)
        baseline_evals = evaluate_speaker(verifier.embed, data.eval, data.unseen)  # type: ignore[attr-defined]
    run.summary(**so_far, model_path=str(model_path), wall_s=time.perf_counter() - wall_start,
                eval={k: asdict(v) for k, v in evals.items()}, baseline=baseline,
                baseline_eval={k: asdict(v) for k, v in baseline_evals.items()}, completed=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workbench.checkmodels.speaker_train --profile cpu [--baseline resemblyzer] [key=value ...]`."""
    return common.training_main(
        argv, description=main.__doc__, config_class=SpeakerTrainConfig, train=train_speaker,
        options={"--baseline": "registered speaker verifier to evaluate on the same pairs"})


if __name__ == "__main__":
    raise SystemExit(main())
