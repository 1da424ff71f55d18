"""Codec training: one explicit, resumable loop (no Trainer).

Per step: a batch of random crops -> reconstruction -> multi-scale mel L1 (x15), plus the
multi-resolution STFT loss, the phase-aware complex STFT loss, the FSQ codebook-entropy
regulariser and the CTC objective on a batch of whole transcribed utterances
(`workbench.codec.semantic_head`) when their weights are set;
once ``step >= disc_warmup_steps`` (and ``use_gan``), a discriminator step (MPD + MRSD, LSGAN)
and the generator's adversarial and feature-matching terms; with a semantic teacher, the
semantic reconstruction MSE (x5). AdamW (0.8, 0.9) with linear warm-up and cosine decay by
steps for both nets; training stops at ``max_steps``. Nothing depends on the wall clock, which is
measured and reported only: the same config and data give the same codec (bit-identical on one
thread, see tests/test_codec_train.py).

Checkpoints (``checkpoint.pt`` in the run directory, written atomically every
``checkpoint_every`` steps and at the end) hold the model, discriminators, both optimisers and
schedulers, every RNG state and the sampler's data position, so that calling `train_codec` again
with the same ``run_id`` continues exactly where the last checkpoint left off: the resumed run
ends with the same weights as an uninterrupted one. ``codec.pt``
(config + model weights) is the inference artifact that `workbench.codec.load_codec` reads.

Fine-tuning: with ``config.init_from`` (a local X-codec2 folder or hub id) the model is that
transformers ``Xcodec2Model`` (`workbench.codec.hf_finetune`; the semantic encoder stays frozen,
``finetune_train`` says what else trains) instead of a new workbench model; the loop, data,
losses, checkpoints and resume are the same, at the checkpoint's own sample rate and hop. Its
inference artifact is the ``save_pretrained`` folder written into the run directory itself
(``config.json``, ``model.safetensors``, ``preprocessor_config.json``; no ``codec.pt``), so
``load_codec(run_dir)`` returns the fine-tuned X-codec2 codec.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workbench.atomic import atomic_torch_save
from workbench.checkpoints import load_resume_state, save_checkpoint_file
from workbench.codec.config import CodecConfig
from workbench.codec.data import CropSampler, corpus_utterances, load_corpus_audio
from workbench.codec.discriminators import CodecDiscriminators
from workbench.codec.interface import CHECKPOINT_NAME, CODEC_NAME
from workbench.codec.losses import (
    MultiResolutionComplexSTFTLoss, MultiResolutionSTFTLoss, MultiScaleMelLoss, codebook_entropy_loss,
    discriminator_loss, feature_matching_loss, generator_adversarial_loss, semantic_loss,
)
from workbench.codec.model import CodecModel, build_model, count_parameters
from workbench.codec.semantic_head import CTCHead, TranscribedSampler, character_vocab, ctc_loss
from workbench.config import to_dict
from workbench.data.prepare import DataConfig
from workbench.training import StopAfter, WarmupCosine, rng_state, set_rng_state

RUN_KIND = "codec"


@dataclass
class CodecTrainResult:
    run_dir: Path
    codec_path: Path  # what load_codec reads: codec.pt, or the run dir itself for a fine-tuned X-codec2
    # (written once the run completes)
    steps: int  # optimisation steps done in total (across resumes)
    completed: bool  # reached max_steps (False: stopped by stop_after_steps)
    train_wall_s: float  # training wall time in total (across resumes), excluding data loading;
    # measured and reported, never used to schedule or stop
    resumed_from_step: int  # 0 for a fresh run
    final_train_mel_loss: float
    valid_mel_distance: float  # final evaluation; stopped early: the last periodic one (NaN if none)
    valid_codebook_usage: float
    n_params: int


@dataclass
class ValidEval:
    mel_distance: float  # the training mel loss (mean over scales), on valid utterances
    codebook_usage: float  # fraction of codes used on them
    n_frames: int


def lr_lambda(warmup_steps: int, max_steps: int, min_ratio: float) -> WarmupCosine:
    """Linear warm-up to 1, then cosine to `min_ratio` at `max_steps` (a function of the step
    alone, so the schedule is part of the config, not of the machine's speed)."""
    return WarmupCosine(warmup_steps, max_steps, min_ratio)


def _model_state(model) -> dict:
    """What checkpoint.pt keeps of the model (a fine-tuned X-codec2 leaves out its frozen semantic
    encoder, which is reloaded from ``init_from``)."""
    return model.checkpoint_state_dict() if hasattr(model, "checkpoint_state_dict") else model.state_dict()


def _load_model_state(model, state: dict) -> None:
    if hasattr(model, "load_checkpoint_state_dict"):
        model.load_checkpoint_state_dict(state)
    else:
        model.load_state_dict(state)


def _build_ctc(config: CodecConfig, model: CodecModel, train_audio) -> tuple[CTCHead, TranscribedSampler]:
    """The training-only CTC head and its sampler of whole transcribed train utterances. Built
    under their own seed, so that the codec's initial weights and crops are the same with and
    without the objective (the ablation compares like with like)."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed + 1)
        head = CTCHead(config.latent_dim, config.ctc_hidden_dim, len(character_vocab()), config.ctc_kernel_size)
    sampler = TranscribedSampler(train_audio.wavs, [u.text for u in train_audio.utterances], model.hop_length,
                                 int(config.ctc_max_s * train_audio.sample_rate), config.ctc_batch_size,
                                 config.seed + 1)
    return head, sampler


def save_codec(path: str | Path, model: CodecModel, step: int) -> Path:
    """Inference artifact: config and model weights only (the teacher is loaded from its path)."""
    return atomic_torch_save({"format": "workbench-codec/1", "config": to_dict(model.config),
                              "model": model.state_dict(), "step": step}, path)


@torch.no_grad()
def evaluate_valid(model: CodecModel, wavs: list[torch.Tensor], mel_loss: MultiScaleMelLoss) -> ValidEval:
    """Mel distance and code usage on a fixed list of valid waveforms (no randomness used)."""
    from workbench.devices import model_device

    was_training = model.training
    model.eval()
    device = model_device(model)
    distances, weights, used = [], [], set()
    for wav in wavs:
        x = wav.view(1, 1, -1).to(device)
        out = model(x)
        distances.append(float(mel_loss(out.audio, x)))
        weights.append(x.shape[-1])
        used.update(out.codes.flatten().tolist())
    model.train(was_training)
    n_frames = sum(-(-w.numel() // model.hop_length) for w in wavs)
    mel = float(np.average(distances, weights=weights)) if distances else float("nan")
    return ValidEval(mel_distance=mel, codebook_usage=len(used) / model.codebook_size, n_frames=n_frames)


def train_codec(config: CodecConfig, data_dir: str | Path, run_id: str | None = None,
                root: str | Path | None = None, *, stop_after_steps: int | None = None,
                progress: bool = True, data_config: DataConfig | None = None) -> CodecTrainResult:
    """Train (or resume, when `run_id` names a run with a checkpoint) a codec on `data_dir`.

    `data_dir` is a prepared corpus (manifest.jsonl) or a transcripts.tsv folder (taken and split as
    `data_config` would prepare it; default the cpu profile's); its train split is used for training
    and the first `n_eval_utterances` of its valid split for periodic eval.
    `stop_after_steps` stops early as `workbench.training` describes for every trainer (checkpoint,
    run left "interrupted" and resumable, no codec.pt or final evaluation, result with
    ``completed=False``). Returns where everything was written."""
    from tqdm.auto import tqdm

    from workbench.devices import resolve_device
    from workbench.runs import start_run

    stop = StopAfter(stop_after_steps)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    # The model, discriminators, losses and every batch live here. Without it the gpu profile
    # trained on the host: batch 16 x 6 s through the 219M-parameter codec keeps ~170 GB of fp32
    # activations for the backward pass (measured on CPU: 1.3 GB per second of audio, 1.75 GB
    # with the GAN), which the OS killed.
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    train_utts = corpus_utterances(data_dir, "train", data_config)
    valid_utts = corpus_utterances(data_dir, "valid", data_config)[: config.n_eval_utterances]
    if not train_utts:
        raise ValueError(f"{data_dir}: no utterances in the train split")
    finetune = None
    if config.init_from:  # load (and validate) before a run folder is made
        from workbench.codec.hf_finetune import build_finetune_model, check_data_rate

        finetune = build_finetune_model(config.init_from, config.finetune_train)
        check_data_rate(train_utts, finetune.sample_rate, config.init_from)
    # the model's own rate, hop and codebook (a fine-tuned checkpoint's, not the config's)
    sample_rate = finetune.sample_rate if finetune is not None else config.sample_rate
    fsq_levels = finetune.fsq_levels if finetune is not None else config.fsq_levels

    with start_run(RUN_KIND, config, run_id=run_id, root=root, seed=config.seed) as run:
        load_start = time.perf_counter()
        train_audio = load_corpus_audio(train_utts, sample_rate)
        valid_audio = load_corpus_audio(valid_utts, sample_rate, max_s=config.eval_max_s)
        load_s = time.perf_counter() - load_start

        # construction order is fixed so that a fresh and a resumed run build identical modules
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        model = finetune if finetune is not None else build_model(config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        discriminators = (CodecDiscriminators(config.mpd_periods, config.mrsd_n_ffts, config.disc_channels)
                          if config.use_gan else None)
        model.to(device)
        if discriminators is not None:
            discriminators.to(device)
        mel_loss = MultiScaleMelLoss(sample_rate, config.mel_n_ffts, config.mel_n_mels).to(device)
        stft_loss = MultiResolutionSTFTLoss(config.stft_n_ffts).to(device) if config.stft_loss_weight else None
        complex_loss = (MultiResolutionComplexSTFTLoss(config.complex_stft_n_ffts, config.complex_stft_compression)
                        .to(device) if config.complex_stft_loss_weight else None)
        ctc_head, ctc_sampler = _build_ctc(config, model, train_audio) if config.ctc_weight else (None, None)
        if ctc_head is not None:
            ctc_head.to(device)
        # the CTC head trains with the generator (same optimiser, schedule and clipping); with
        # ctc_weight 0 nothing here changes, so the run is the one without the objective
        generator_params = trainable + (list(ctc_head.parameters()) if ctc_head is not None else [])
        opt_g = torch.optim.AdamW(generator_params, lr=config.learning_rate, betas=config.adam_betas,
                                  weight_decay=config.weight_decay)
        schedule = lr_lambda(config.warmup_steps, config.max_steps, config.min_lr_ratio)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, schedule)
        opt_d = sched_d = None
        if discriminators is not None:
            opt_d = torch.optim.AdamW(discriminators.parameters(), lr=config.disc_learning_rate,
                                      betas=config.adam_betas, weight_decay=config.weight_decay)
            sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, schedule)
        sampler = CropSampler(train_audio.wavs, int(config.segment_s * sample_rate),
                              config.batch_size, config.seed)

        step, train_wall_s = 0, 0.0
        checkpoint_path = run.dir / CHECKPOINT_NAME
        # weights-only, checksum-verified; falls back to checkpoint.prev.pt when the latest is damaged
        state = load_resume_state(checkpoint_path, "codec train", run)
        if state is not None:
            _load_model_state(model, state["model"])
            opt_g.load_state_dict(state["opt_g"])
            sched_g.load_state_dict(state["sched_g"])
            if discriminators is not None:
                discriminators.load_state_dict(state["discriminators"])
                opt_d.load_state_dict(state["opt_d"])
                sched_d.load_state_dict(state["sched_d"])
            sampler.load_state_dict(state["sampler"])
            if ctc_head is not None:
                ctc_head.load_state_dict(state["ctc_head"])
                ctc_sampler.load_state_dict(state["ctc_sampler"])
            set_rng_state(state["rng"])
            step, train_wall_s = int(state["step"]), float(state["train_wall_s"])
        resumed_from = step
        if step:
            run.log(step, event="resumed")  # readers drop records of later steps logged before it

        def save_checkpoint() -> None:
            save_checkpoint_file({
                "step": step, "train_wall_s": train_wall_s, "config": to_dict(config),
                "model": _model_state(model), "opt_g": opt_g.state_dict(), "sched_g": sched_g.state_dict(),
                "discriminators": discriminators.state_dict() if discriminators is not None else None,
                "opt_d": opt_d.state_dict() if opt_d is not None else None,
                "sched_d": sched_d.state_dict() if sched_d is not None else None,
                "sampler": sampler.state_dict(), "rng": rng_state(),
                **({"ctc_head": ctc_head.state_dict(), "ctc_sampler": ctc_sampler.state_dict()}
                   if ctc_head is not None else {}),
            }, checkpoint_path, keep_previous=True)

        n_params = count_parameters(model)
        if resumed_from == 0:
            run.log(0, event="start", n_params=n_params, n_trainable_params=sum(p.numel() for p in trainable),
                    init_from=config.init_from or None, train_s=train_audio.duration_s,
                    n_train_utterances=len(train_utts), n_valid_utterances=len(valid_utts), load_s=load_s)

        model.train()
        last_mel, stopped = float("nan"), False
        last_valid = ValidEval(float("nan"), float("nan"), 0)
        bar = tqdm(total=config.max_steps, initial=step, disable=not progress, desc="codec", unit="step")
        window_start, window_steps = time.perf_counter(), 0
        while step < config.max_steps:
            tick = time.perf_counter()
            real = sampler.next_batch().to(device, non_blocking=True)
            out = model(real)
            fake = out.audio
            mel = mel_loss(fake, real)
            loss_g = config.mel_loss_weight * mel
            metrics = {"mel_loss": mel.item()}
            if stft_loss is not None:
                stft = stft_loss(fake, real)
                loss_g = loss_g + config.stft_loss_weight * stft
                metrics["stft_loss"] = stft.item()
            if complex_loss is not None:
                phase = complex_loss(fake, real)
                loss_g = loss_g + config.complex_stft_loss_weight * phase
                metrics["complex_stft_loss"] = phase.item()
            if ctc_head is not None:
                transcribed = ctc_sampler.next_batch()
                ctc = ctc_loss(ctc_head(model.encode(transcribed.audio.to(device)).latents), transcribed)
                loss_g = loss_g + config.ctc_weight * ctc
                metrics["ctc_loss"] = ctc.item()
            if config.code_entropy_weight:
                entropy = codebook_entropy_loss(out.fsq_values, fsq_levels,
                                                config.code_entropy_temperature)
                loss_g = loss_g + config.code_entropy_weight * entropy
                metrics["code_entropy_loss"] = entropy.item()

            gan_on = discriminators is not None and step >= config.disc_warmup_steps
            if gan_on:
                # discriminator step on detached generator output
                d_real = discriminators(real)
                d_fake = discriminators(fake.detach())
                loss_d = discriminator_loss(d_real, d_fake)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                torch.nn.utils.clip_grad_norm_(discriminators.parameters(), config.grad_clip_norm)
                opt_d.step()
                sched_d.step()
                # generator terms; the real feature maps of the step above are reused (detached)
                # instead of recomputed after the update: saves a forward pass on CPU
                g_fake = discriminators(fake)
                adv = generator_adversarial_loss(g_fake)
                fm = feature_matching_loss(d_real, g_fake)
                loss_g = loss_g + config.adversarial_weight * adv + config.feature_matching_weight * fm
                metrics.update(disc_loss=loss_d.item(), adv_loss=adv.item(), fm_loss=fm.item())
            if out.semantic_pred is not None:
                sem = semantic_loss(out.semantic_pred, out.semantic_target)
                loss_g = loss_g + config.semantic_loss_weight * sem
                metrics["semantic_loss"] = sem.item()

            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(generator_params, config.grad_clip_norm)
            opt_g.step()
            sched_g.step()
            step += 1
            window_steps += 1
            train_wall_s += time.perf_counter() - tick
            last_mel = metrics["mel_loss"]
            bar.update(1)
            bar.set_postfix(mel=f"{last_mel:.3f}")

            if step % config.log_every == 0 or step == config.max_steps:
                now = time.perf_counter()
                run.log(step, loss=loss_g.item(), grad_norm=float(grad_norm), lr=sched_g.get_last_lr()[0],
                        steps_per_s=window_steps / max(now - window_start, 1e-9), train_wall_s=train_wall_s,
                        gan=gan_on, **metrics)
                window_start, window_steps = now, 0
            if valid_audio.wavs and (step % config.eval_every == 0 or step == config.max_steps):
                last_valid = evaluate_valid(model, valid_audio.wavs, mel_loss)
                run.log(step, valid_mel_distance=last_valid.mel_distance,
                        valid_codebook_usage=last_valid.codebook_usage)
            if step % config.checkpoint_every == 0:
                save_checkpoint()
            if stop.due(step, done=step >= config.max_steps):
                stopped = True
                break
        bar.close()

        save_checkpoint()
        completed = not stopped
        if stopped:
            stop.leave_resumable(run)
            codec_path = run.dir if finetune is not None else run.dir / CODEC_NAME
            valid = last_valid
        else:
            if finetune is not None:
                codec_path = model.save_pretrained(run.dir)  # load_codec(run_dir) reads it as X-codec2
            else:
                codec_path = save_codec(run.dir / CODEC_NAME, model, step)
            valid = (evaluate_valid(model, valid_audio.wavs, mel_loss) if valid_audio.wavs
                     else ValidEval(float("nan"), float("nan"), 0))
        run.summary(steps=step, completed=completed, train_wall_s=train_wall_s, n_params=n_params,
                    final_train_mel_loss=last_mel, valid_mel_distance=valid.mel_distance,
                    valid_codebook_usage=valid.codebook_usage, codebook_size=model.codebook_size,
                    frame_rate_hz=sample_rate / model.hop_length, sample_rate=sample_rate,
                    init_from=config.init_from or None)
        return CodecTrainResult(
            run_dir=run.dir, codec_path=codec_path, steps=step, completed=completed,
            train_wall_s=train_wall_s, resumed_from_step=resumed_from, final_train_mel_loss=last_mel,
            valid_mel_distance=valid.mel_distance, valid_codebook_usage=valid.codebook_usage,
            n_params=n_params,
        )
