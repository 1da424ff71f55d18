"""Training of the workbench's own CTC recogniser (`workbench-asr`): one visible, resumable loop.

    from workbench.config import for_profile
    from workbench.checkmodels.asr_train import ASRTrainConfig, train_asr
    result = train_asr(for_profile(ASRTrainConfig, "cpu"))      # reused if already trained
    result.eval["kathleen:test"].wer, result.model_path

Data are named "corpus:split" (a prepared corpus under the data root, `split` one of
train/valid/test or `all`); "corpus:split@codec" is that set resynthesised through `config.codec`
(scored on what the codec makes of the speech, as the search's generated audio is). Training
utterances whose normalised text also occurs in a validation or evaluation set are dropped, so no
test sentence is learned through another voice (the synthetic corpus reads the same CMU ARCTIC
prompts as Kathleen).

Codec-domain augmentation: with `codec` set, every clip of `codec_sets` is also trained on as
its codec resynthesis (encode -> decode once, before feature extraction), so the recogniser
learns the codec's artefacts rather than failing on them (WER on resynthesis was ~0.9 before).

Recipe: AdamW, linear warm-up then cosine decay to 5 % of peak, gradient clipping, light
SpecAugment (frequency and time masks), length-sorted batches of at most `batch_frames` input
frames (little padding), fixed batches shuffled per epoch with the run's seed.

Resume: `<run>/checkpoints/last.pt` (model, optimizer, step, epoch, position, RNG) is written
atomically every `checkpoint_every` steps; reopening the run id continues from it with the same
batch order. The final model is `<run>/model.pt` (what the verifier loads), beside
`<run>/words.arpa`, a word trigram LM of the training transcripts for lexicon decoding.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from workbench.settings import stage_profiles
from workbench.training import StopAfter, warmup_cosine

RUN_KIND = "asr"
CODEC_SUFFIX = "@codec"
CHECKPOINT_FILE = "checkpoints/last.pt"


@dataclass(frozen=True)
class ASRTrainConfig:
    """One training run of the CTC recogniser. Architecture fields mirror `ASRModelSpec`."""

    PROFILES: ClassVar[dict] = stage_profiles("asr")  # workbench/profiles.yaml

    # Synthetic espeak voices read the same CMU ARCTIC prompts: more voices for the acoustics,
    # while held-out texts are filtered out of every training set (see the module docstring).
    train_sets: tuple[str, ...] = ("kathleen:train", "ljspeech:train", "synth:train")
    valid_set: str = "kathleen:valid"  # decoded every `eval_every` steps
    eval_sets: tuple[str, ...] = ("kathleen:test", "vctk:all")  # decoded once at the end
    # Codec-domain augmentation: `codec` is anything `load_codec` accepts ("" = none); each clip
    # of `codec_sets` (a subset of train_sets) is added again as its resynthesis.
    codec: str = ""
    codec_sets: tuple[str, ...] = ("kathleen:train",)
    data_dir: str = ""  # prepared corpora; "" = $WORKBENCH_DATA_DIR or ./data
    # Train/eval sets whose corpus is not prepared are left out (the summary lists what was used);
    # the first train set and the valid set are always required.
    skip_missing_corpora: bool = True
    max_train_utterances: int = 0  # 0 = all (smoke uses a few)
    max_eval_utterances: int = 0  # per eval set; 0 = all
    max_duration_s: float = 15.0  # longer training clips are dropped (memory, and CTC gains little)
    # architecture (see ASRModelSpec)
    n_mels: int = 80
    stride: int = 4
    width: int = 192
    n_blocks: int = 5
    kernel_size: int = 9
    mlp_ratio: int = 2
    dropout: float = 0.1
    rnn_layers: int = 0
    # optimisation
    max_steps: int = 1200
    batch_frames: int = 8000  # input frames (10 ms) per batch, padding included
    lr: float = 3e-3
    warmup_steps: int = 60
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Speed perturbation (Ko et al. 2015): each training clip also resampled by these factors
    # (tempo and pitch change together), features precomputed; 1.0 is the clip itself.
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    # SpecAugment (on normalised features; masked values become the utterance mean, 0)
    freq_masks: int = 2
    freq_mask_width: int = 10
    time_masks: int = 2
    time_mask_frac: float = 0.05  # of the utterance's length, per mask
    # bookkeeping
    eval_every: int = 200
    checkpoint_every: int = 200
    log_every: int = 20
    seed: int = 0
    num_threads: int = 0  # torch CPU threads; 0 = leave torch's default
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_frames", "eval_every", "checkpoint_every", "log_every", "width",
                     "n_blocks", "stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"ASRTrainConfig.{name} = {getattr(self, name)}: must be >= 1")
        if not self.speed_factors or any(not 0.5 <= f <= 2.0 for f in self.speed_factors):
            raise ValueError(f"ASRTrainConfig.speed_factors = {self.speed_factors}: need factors in [0.5, 2]")
        if not self.train_sets:
            raise ValueError("ASRTrainConfig.train_sets is empty")
        for item in (*self.train_sets, *self.codec_sets, self.valid_set, *self.eval_sets):
            parse_set_name(item)
        if self.codec and not set(self.codec_sets) <= set(self.train_sets):
            raise ValueError(f"ASRTrainConfig.codec_sets = {self.codec_sets}: each must be one of "
                             f"train_sets {self.train_sets}")
        if any(is_codec_set(n) for n in (*self.train_sets, *self.codec_sets)):
            raise ValueError("ASRTrainConfig: train_sets/codec_sets take plain set names; "
                             f"'{CODEC_SUFFIX}' is for valid_set and eval_sets")
        codec_evals = [n for n in (self.valid_set, *self.eval_sets) if is_codec_set(n)]
        if codec_evals and not self.codec:
            raise ValueError(f"ASRTrainConfig: {codec_evals} need a codec, but codec is empty")

    def model_spec(self):
        from workbench.checkmodels.asr_model import ASRModelSpec

        return ASRModelSpec(n_mels=self.n_mels, stride=self.stride, width=self.width, n_blocks=self.n_blocks,
                            kernel_size=self.kernel_size, mlp_ratio=self.mlp_ratio, dropout=self.dropout,
                            rnn_layers=self.rnn_layers)


@dataclass(frozen=True)
class ASREval:
    """Accuracy on one set: greedy decoding (`wer`, `cer`) and lexicon beam search with the
    run's word LM (`lexicon_lm_*`, the verifier's default). Corpus-level (errors / reference units)."""

    name: str
    n_utterances: int
    wer: float
    cer: float
    lexicon_lm_wer: float | None = None
    lexicon_lm_cer: float | None = None
    baseline_wer: float | None = None  # another recogniser on the same clips (e.g. pocketsphinx)
    baseline: str | None = None
    examples: tuple[tuple[str, str], ...] = ()  # (reference, hypothesis), the first few


@dataclass(frozen=True)
class ASRTrainResult:
    run_id: str
    run_dir: str
    model_path: str
    n_params: int
    steps: int
    epochs: float  # passes over the training features (each speed factor's copy counts)
    n_train_utterances: int
    n_train_hours: float
    n_dropped_overlap: int  # training clips dropped because their text is in a valid/eval set
    train_sets_used: tuple[str, ...]  # train_sets whose corpus was prepared
    final_train_loss: float
    train_wall_s: float  # the optimisation loop only
    wall_s: float  # everything, including loading data and the final evaluation
    completed: bool  # reached max_steps (False: stopped by stop_after_steps; no model.pt, no eval yet)
    eval: dict[str, ASREval] = field(default_factory=dict)
    reused: bool = False
    n_codec_utterances: int = 0  # resynthesised copies among n_train_utterances

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Clip:
    """One utterance in memory: 1-D float32 waveform at `sample_rate_hz`."""

    utterance_id: str
    corpus: str
    speaker: str
    split: str
    text: str
    wav: Any  # torch.Tensor
    sample_rate_hz: int


def is_codec_set(name: str) -> bool:
    """Whether a set name asks for the codec resynthesis of its clips ("kathleen:test@codec")."""
    return name.endswith(CODEC_SUFFIX)


def parse_set_name(name: str) -> tuple[str, str]:
    """ "corpus:split" or "corpus:split@codec" -> (corpus, split); split is train, valid, test or all."""
    corpus, sep, split = name.removesuffix(CODEC_SUFFIX).partition(":")
    if not sep or not corpus or split not in ("train", "valid", "test", "all"):
        raise ValueError(f"data set {name!r}: expected 'corpus:split' (optionally '{CODEC_SUFFIX}') "
                         "with split in train/valid/test/all")
    return corpus, split


def load_clips(name: str, data_dir: str | Path | None = None, sample_rate_hz: int = 16000,
               max_utterances: int = 0, max_duration_s: float = 0.0,
               select: Callable[[list[Any]], list[Any]] | None = None) -> list[Clip]:
    """Clips of a prepared corpus split ("kathleen:test"; an "@codec" name gives the original
    clips, see `resynthesize`), resampled to `sample_rate_hz`, in manifest order; `max_utterances`
    > 0 keeps the first ones, `max_duration_s` > 0 drops longer, `select` (list of manifest
    `Utterance`s -> the ones to keep) picks before any audio is read."""
    from workbench.audio import load_audio
    from workbench.data.manifest import read_manifest
    from workbench.data.prepare import data_root

    corpus, split = parse_set_name(name)
    folder = data_root(data_dir or None) / corpus
    if not (folder / "manifest.jsonl").exists():
        raise FileNotFoundError(f"data set {name!r}: no prepared corpus at {folder} "
                                f"(run `workbench data prepare --corpus {corpus}`)")
    utterances = [u for u in read_manifest(folder) if split == "all" or u.split == split]
    if max_duration_s > 0:
        utterances = [u for u in utterances if not u.duration_s or u.duration_s <= max_duration_s]
    if select is not None:
        utterances = select(utterances)
    if max_utterances > 0:
        utterances = utterances[:max_utterances]
    if not utterances:
        raise ValueError(f"data set {name!r}: no utterances in {folder}")
    clips = []
    for u in utterances:
        wav, _ = load_audio(u.resolve(folder), sample_rate=sample_rate_hz)
        clips.append(Clip(u.utterance_id, corpus, u.speaker, u.split, u.text, wav[0].contiguous(), sample_rate_hz))
    return clips


def resynthesize(clips: Sequence[Clip], codec: str, progress: bool = True, desc: str = "codec") -> list[Clip]:
    """`clips` passed through the codec once (encode -> decode), trimmed or zero-padded to their
    original length, at their original rate; utterance ids get the "@codec" suffix."""
    import dataclasses

    import torch
    from tqdm.auto import tqdm

    from workbench.audio import resample
    from workbench.codec import load_codec

    model = load_codec(codec)
    out = []
    with torch.no_grad():
        for clip in tqdm(clips, desc=desc, disable=not progress, unit="clip"):
            wav = model.decode(model.encode(clip.wav[None], clip.sample_rate_hz))[0].reshape(-1)
            wav = resample(wav, model.sample_rate, clip.sample_rate_hz).reshape(-1)
            n = clip.wav.numel()
            wav = torch.nn.functional.pad(wav[:n], (0, max(0, n - wav.numel())))  # codecs pad to whole frames
            out.append(dataclasses.replace(clip, utterance_id=clip.utterance_id + CODEC_SUFFIX,
                                           wav=wav.float().contiguous()))
    return out


def _batches_by_frames(lengths: Sequence[int], batch_frames: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches whose padded size (n x longest) stays within
    `batch_frames` (a clip longer than the budget gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > batch_frames:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _spec_augment(features, config: ASRTrainConfig, generator):
    import torch

    features = features.clone()
    n_frames, n_mels = features.shape
    for _ in range(config.freq_masks):
        width = int(torch.randint(0, config.freq_mask_width + 1, (1,), generator=generator))
        start = int(torch.randint(0, max(1, n_mels - width), (1,), generator=generator))
        features[:, start:start + width] = 0.0
    max_width = int(config.time_mask_frac * n_frames)
    for _ in range(config.time_masks):
        width = int(torch.randint(0, max_width + 1, (1,), generator=generator))
        start = int(torch.randint(0, max(1, n_frames - width), (1,), generator=generator))
        features[start:start + width] = 0.0
    return features


# ---------------------------------------------------------------------------------------------
# Evaluation


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER over normalised texts (spaces count as characters)."""
    import jiwer

    from workbench.verifiers.text import normalize_text

    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    return float(jiwer.cer(refs, hyps))


def evaluate_asr(transcribe, clips: Sequence[Clip], name: str, n_examples: int = 3,
                 lexicon_transcribe=None) -> ASREval:
    """Decode `clips` with `transcribe(list of 1-D wavs) -> list of str` and score them; with
    `lexicon_transcribe` (same signature), fill the lexicon + LM scores too."""
    from workbench.verifiers.text import corpus_wer

    wavs = [c.wav for c in clips]
    hypotheses = transcribe(wavs)
    references = [c.text for c in clips]
    lexicon = {}
    if lexicon_transcribe is not None:
        lexicon_hypotheses = lexicon_transcribe(wavs)
        lexicon = dict(lexicon_lm_wer=corpus_wer(references, lexicon_hypotheses),
                       lexicon_lm_cer=character_error_rate(references, lexicon_hypotheses))
    return ASREval(name=name, n_utterances=len(clips), wer=corpus_wer(references, hypotheses),
                   cer=character_error_rate(references, hypotheses), **lexicon,
                   examples=tuple(zip(references[:n_examples], hypotheses[:n_examples])))


def _eval_from_dict(d: dict[str, Any]) -> ASREval:
    d = dict(d)
    d["examples"] = tuple(tuple(e) for e in d.get("examples", ()))
    return ASREval(**d)


# ---------------------------------------------------------------------------------------------
# Training


def _lr_multiplier(step: int, config: ASRTrainConfig) -> float:
    return warmup_cosine(step, config.warmup_steps, config.max_steps, config.min_lr_ratio)


def _result_from_run(run_dir: Path, reused: bool) -> ASRTrainResult:
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    skip = ("eval", "reused", "train_sets_used", "completed")
    fields_ = {k: summary[k] for k in ASRTrainResult.__dataclass_fields__ if k in summary and k not in skip}
    evals = {k: _eval_from_dict(v) for k, v in summary.get("eval", {}).items()}
    # runs finished before the key was written completed (only finished runs are reused)
    return ASRTrainResult(**fields_, train_sets_used=tuple(summary.get("train_sets_used", ())), eval=evals,
                          reused=reused, completed=summary.get("completed", True))


def finished_asr_run(config: ASRTrainConfig, root: str | Path | None = None) -> Path | None:
    """The newest finished run of `config` (same config hash) under `root` that has its summary
    and model file, or None: what `train_asr` reuses instead of training again."""
    from workbench.config import config_hash
    from workbench.runs import find_runs

    for run_dir in reversed(find_runs(RUN_KIND, root=root, status="finished", config_hash_value=config_hash(config))):
        if (run_dir / "summary.json").exists() and (run_dir / "model.pt").exists():
            return run_dir
    return None


def train_asr(config: ASRTrainConfig, run_id: str | None = None, root: str | Path | None = None, *,
              reuse: bool = True, stop_after_steps: int | None = None) -> ASRTrainResult:
    """Train the CTC recogniser (run kind "asr") and evaluate it on `config.eval_sets`.

    With `reuse` (and no `run_id`), a finished run with the same config hash under `root` is
    returned instead of training again. `run_id` naming an existing run resumes it from its last
    checkpoint. `stop_after_steps` stops early as `workbench.training` describes for every trainer
    (checkpoint, run left "interrupted" and resumable, no model.pt or final evaluation, result with
    ``completed=False``).
    """
    from workbench.runs import start_run

    stop = StopAfter(stop_after_steps)
    if reuse and run_id is None:
        finished = finished_asr_run(config, root)
        if finished is not None:
            return _result_from_run(finished, reused=True)
    import torch

    threads = torch.get_num_threads()
    try:
        with start_run(RUN_KIND, config, root=root, run_id=run_id, seed=config.seed) as run:
            _train(config, run, stop)
    finally:
        torch.set_num_threads(threads)  # a notebook or test session keeps its own setting
    return _result_from_run(run.dir, reused=False)


def _train(config: ASRTrainConfig, run, stop: StopAfter) -> None:
    import torch
    from tqdm.auto import tqdm

    from workbench.audio import resample
    from workbench.checkpoints import load_resume_state, save_checkpoint_file
    from workbench.checkmodels import common
    from workbench.verifiers.text import normalize_text
    from workbench.checkmodels.asr_model import (WORD_LM_FILE, CTCRecognizer, encode_text, lexicon_decoder,
                                                 log_mel_features, n_parameters, pad_features, save_model,
                                                 write_word_lm)

    wall_start = time.perf_counter()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    spec = config.model_spec()

    # ---- data: features computed once (a few seconds for an hour of audio) and kept in memory
    def available(name: str, required: bool) -> bool:
        from workbench.data.prepare import data_root

        prepared = (data_root(config.data_dir or None) / parse_set_name(name)[0] / "manifest.jsonl").exists()
        return prepared or required or not config.skip_missing_corpora  # else load_clips raises

    eval_names = [n for n in dict.fromkeys((config.valid_set, *config.eval_sets))
                  if available(n, n == config.valid_set)]
    train_names = [n for i, n in enumerate(config.train_sets) if available(n, i == 0)]
    originals = {name: load_clips(name, config.data_dir, max_utterances=config.max_eval_utterances)
                 for name in dict.fromkeys(n.removesuffix(CODEC_SUFFIX) for n in eval_names)}
    held_out = {name: (resynthesize(originals[name.removesuffix(CODEC_SUFFIX)], config.codec, config.progress,
                                    desc=f"codec {name}") if is_codec_set(name) else originals[name])
                for name in eval_names}
    held_out_texts = {normalize_text(c.text) for clips in held_out.values() for c in clips}
    train_clips: list[Clip] = []
    set_of_clip: list[str] = []
    n_dropped = 0
    for name in train_names:
        # max_train_utterances caps each set before its audio is read (smoke runs stay quick).
        for clip in load_clips(name, config.data_dir, max_duration_s=config.max_duration_s,
                               max_utterances=config.max_train_utterances):
            if normalize_text(clip.text) in held_out_texts:
                n_dropped += 1
                continue
            train_clips.append(clip)
            set_of_clip.append(name)
    if config.max_train_utterances > 0:
        train_clips = train_clips[:config.max_train_utterances]
    if not train_clips:
        raise ValueError(f"no training utterances left in {config.train_sets} after removing held-out texts")
    # The word LM sees each training transcript once (codec copies would only double the counts).
    write_word_lm([normalize_text(c.text) for c in train_clips], run.artifact(WORD_LM_FILE), vocab=spec.vocab)
    codec_clips: list[Clip] = []
    if config.codec:
        codec_clips = resynthesize([c for c, s in zip(train_clips, set_of_clip) if s in config.codec_sets],
                                   config.codec, config.progress, desc="codec train")
        train_clips = train_clips + codec_clips
    features, targets = [], []
    for clip in train_clips:
        target = torch.tensor(encode_text(normalize_text(clip.text), spec.vocab))
        for factor in config.speed_factors:
            # Playing a clip `factor` times faster = reading it as if recorded at rate/factor.
            wav = clip.wav if factor == 1.0 else resample(clip.wav, round(clip.sample_rate_hz * factor),
                                                           clip.sample_rate_hz)
            features.append(log_mel_features(wav, spec))
            targets.append(target)
    n_train_hours = sum(c.wav.numel() / c.sample_rate_hz for c in train_clips) / 3600
    batches = _batches_by_frames([f.shape[0] for f in features], config.batch_frames)

    model = CTCRecognizer(spec)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    augment_rng = torch.Generator().manual_seed(config.seed + 1)
    step, epoch, position, train_wall_s = 0, 0, 0, 0.0
    checkpoint_path = run.dir / CHECKPOINT_FILE
    state = load_resume_state(checkpoint_path, "asr train")  # weights-only, checksummed
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        train_wall_s = state["train_wall_s"]
        torch.set_rng_state(state["torch_rng"])
        augment_rng.set_state(state["augment_rng"])
        run.log(step, event="resumed")

    def save_checkpoint() -> None:
        save_checkpoint_file({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                           "epoch": epoch, "position": position, "train_wall_s": train_wall_s,
                           "torch_rng": torch.get_rng_state(), "augment_rng": augment_rng.get_state()},
                          checkpoint_path, keep_previous=True)

    def epoch_order(e: int) -> list[int]:
        order = list(range(len(batches)))
        random.Random(config.seed * 1_000_003 + e).shuffle(order)
        return order

    run.log(0, event="start", train_sets_used=train_names, eval_sets_used=eval_names,
            n_params=n_parameters(model), n_train_utterances=len(train_clips), n_train_features=len(features),
            n_train_hours=n_train_hours, n_batches_per_epoch=len(batches), n_dropped_overlap=n_dropped,
            n_codec_utterances=len(codec_clips))
    valid_clips = held_out[config.valid_set]
    model.train()
    order = epoch_order(epoch)
    loss_sum, loss_count, frames_done = 0.0, 0, 0
    last_loss = float("nan")
    # Training wall time = loop time minus validation decoding, accumulated across resumes.
    wall_before, loop_start, eval_s = train_wall_s, time.perf_counter(), 0.0
    tick = loop_start
    bar = tqdm(total=config.max_steps, initial=step, desc="asr", disable=not config.progress, unit="step")
    stopped = False
    while step < config.max_steps:
        if position >= len(order):
            epoch, position = epoch + 1, 0
            order = epoch_order(epoch)
        batch = batches[order[position]]
        feats = [_spec_augment(features[i], config, augment_rng) for i in batch]
        x, lengths = pad_features(feats)
        y = torch.cat([targets[i] for i in batch])
        y_lengths = torch.tensor([len(targets[i]) for i in batch])
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_multiplier(step, config)
        log_probs, out_lengths = model(x, lengths)
        # zero_infinity: a clip whose transcript cannot fit its frames contributes nothing rather
        # than an infinite loss (rare: only very fast speech or wrong transcripts).
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), y, out_lengths, y_lengths,
                                            blank=0, reduction="mean", zero_infinity=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        position += 1
        last_loss = loss.item()
        loss_sum, loss_count = loss_sum + last_loss, loss_count + 1
        frames_done += int(lengths.sum())
        bar.update(1)
        train_wall_s = wall_before + time.perf_counter() - loop_start - eval_s
        if step % config.log_every == 0 or step == config.max_steps:
            now = time.perf_counter()
            run.log(step, loss=loss_sum / loss_count, lr=optimizer.param_groups[0]["lr"],
                    grad_norm=float(grad_norm), epoch=epoch + position / len(order),
                    audio_s_per_s=frames_done * spec.hop_length / 16000 / max(now - tick, 1e-9))
            bar.set_postfix(loss=f"{loss_sum / loss_count:.3f}")
            loss_sum, loss_count, frames_done = 0.0, 0, 0
            tick = now
        if step % config.eval_every == 0 and step < config.max_steps:
            eval_start = time.perf_counter()
            valid = evaluate_asr(lambda w: model.transcribe(w), valid_clips, config.valid_set)
            run.log(step, valid_wer=valid.wer, valid_cer=valid.cer)
            eval_s += time.perf_counter() - eval_start
            tick += time.perf_counter() - eval_start  # throughput excludes decoding too
        if common.checkpoint_or_stop(step, config.max_steps, config.checkpoint_every, stop, save_checkpoint):
            stopped = True
            break
    bar.close()

    so_far = dict(run_id=run.run_id, run_dir=str(run.dir), n_params=n_parameters(model), steps=step,
                  epochs=epoch + position / max(1, len(order)), n_train_utterances=len(train_clips),
                  n_train_hours=n_train_hours, n_dropped_overlap=n_dropped, final_train_loss=last_loss,
                  n_codec_utterances=len(codec_clips), train_sets_used=train_names, train_wall_s=train_wall_s)
    if stopped:
        stop.leave_resumable(run)
        run.summary(**so_far, model_path=str(run.dir / "model.pt"), wall_s=time.perf_counter() - wall_start,
                    eval={}, completed=False)
        return
    model.eval()
    model_path = save_model(model, run.artifact("model.pt"),
                            extra={"run_id": run.run_id, "steps": step, "train_sets": list(config.train_sets)})
    decode = lexicon_decoder(spec.vocab, str(model_path.parent / WORD_LM_FILE))
    evals = {name: evaluate_asr(lambda w: model.transcribe(w), clips, name,
                                lexicon_transcribe=lambda w: model.transcribe(w, decode=decode))
             for name, clips in held_out.items()}
    for name, result in evals.items():
        run.log(step, **{f"{name}/wer": result.wer, f"{name}/cer": result.cer,
                         f"{name}/lexicon_lm_wer": result.lexicon_lm_wer})
    run.summary(**so_far, model_path=str(model_path), wall_s=time.perf_counter() - wall_start,
                eval={k: asdict(v) for k, v in evals.items()}, completed=True)


def add_baseline(result: ASREval, clips: Sequence[Clip], verifier_name: str = "pocketsphinx") -> ASREval:
    """`result` with another registered ASR verifier's corpus WER on the same clips filled in."""
    import dataclasses

    from workbench.verifiers import get
    from workbench.verifiers.text import corpus_wer

    verifier = get(verifier_name)
    hypotheses = verifier.transcribe([c.wav for c in clips], clips[0].sample_rate_hz)  # type: ignore[attr-defined]
    return dataclasses.replace(result, baseline=verifier_name,
                               baseline_wer=corpus_wer([c.text for c in clips], hypotheses))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workbench.checkmodels.asr_train --profile cpu [--run-id ID] [key=value ...]`."""
    from workbench.checkmodels.common import training_main

    return training_main(argv, description=main.__doc__, config_class=ASRTrainConfig, train=train_asr)


if __name__ == "__main__":
    raise SystemExit(main())
