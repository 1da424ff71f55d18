"""LM training: one visible loop (no HF Trainer), token budget as the sweep axis, exact resume.

Recipe (docs/reference.md §2): AdamW (β1 0.9, β2 0.95, weight decay 0.01 on matrices only), cosine LR with
3 % linear warm-up decaying to 10 % of peak, gradient clipping at 1.0, gradient accumulation, fp32
on CPU and bf16 autocast on GPU. Training stops once `token_budget` real (non-padding) tokens have
been consumed, counted over all processes; the cosine schedule's length is estimated up front from
the mean sequence length so that it ends near the budget.

Loss normalisation: each optimizer step's loss is the sum of token losses over every micro-batch
and every process divided by the total number of target tokens of the step (counted before the
forward pass and all-reduced), so the gradient does not depend on how the step's sequences are
split into micro-batches or processes. Gradient accumulation on one process and data parallel over
several give the same update (tested).

Resume: a checkpoint is a workbench HF folder plus ``trainer_state.pt`` (optimizer, scheduler,
RNG states, data position, counters), written atomically every `checkpoint_every` steps under
``<run>/checkpoints/step-NNNNNNN`` with ``<run>/checkpoints/latest`` naming the newest. Reopening the
run id resumes from it and ends with the same weights and losses as an uninterrupted run.

Early stopping (``early_stop_patience`` > 0, off by default; `workbench.training.EarlyStopping`):
after that many evaluations without a new best validation loss the run ends, finished, with the
best evaluation's weights as its model. Checkpoints then also hold the rule's state and the best
weights (``best_weights.pt``), so a resumed run stops where an uninterrupted one does.

Data parallel: launch under ``torchrun --nproc_per_node N -m workbench.lm.train ...``; the loop uses
torch DDP (gloo on CPU, NCCL on GPU), or FSDP2 with ``sharding="fsdp"`` (`workbench.lm.sharded`).
Rank 0 alone writes the run directory. ``packing`` puts several utterances in each row
(`workbench.lm.packing`); ``compile`` compiles the decoder layers (`workbench.lm.compile`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from workbench.atomic import atomic_write_text
from workbench.config import for_profile, from_params
from workbench.settings import stage_profiles
from workbench.training import EarlyStopping, StopAfter, WarmupCosine, rng_state, set_rng_state

TRAINER_STATE_FILE = "trainer_state.pt"
BEST_WEIGHTS_FILE = "best_weights.pt"  # in a checkpoint, with early stopping on: the best evaluation's weights
LATEST_FILE = "latest"


@dataclass(frozen=True)
class LMTrainConfig:
    """One LM training run. `token_budget` (tokens seen) and `preset` (model size) are the two
    axes of the train-time scaling sweep."""

    PROFILES: ClassVar[dict] = stage_profiles("lm")  # workbench/profiles.yaml

    preset: str = "cpu-1m"
    tokenizer: str = ""  # local tokenizer folder (Llama-3 style or workbench); "" = train a BPE
    text_vocab_size: int = 512  # BPE size when training a tokenizer
    # Text front-end when no `tokenizer` folder is given: a BPE trained on the transcripts, one
    # token per character of normalised text (what the interleaved layout needs), or a BPE trained
    # on the transcripts' espeak-ng IPA (lm.phonemes; the tokenizer records it, so every prompt is
    # phonemized the same way at inference)
    text_frontend: Literal["bpe", "chars", "phonemes"] = "bpe"
    phoneme_voice: str = "en-us"  # espeak-ng voice of the phoneme front-end
    # "llasa": all text, then all speech (the paper). "interleaved": each character right before
    # its frames (lm.interleaved; a departure from Llasa that reads its text at laptop scale)
    sequence_layout: Literal["llasa", "interleaved"] = "llasa"
    alignments: str = ""  # interleaved: alignment file; "" = <shards>/alignments.json (workbench.align)
    init_from: str = ""  # local checkpoint to fine-tune (workbench or Llasa-style); "" = scratch
    max_seq_len: int = 2048
    too_long: Literal["drop", "truncate"] = "drop"
    batch_size: int = 8  # sequences (packed: rows of up to max_seq_len tokens) per micro-batch per process
    packing: bool = False  # several utterances per row, attention kept inside each (lm.packing)
    # Under torchrun: "ddp" replicates weights and AdamW state, "fsdp" shards them (lm.sharded)
    sharding: Literal["ddp", "fsdp"] = "ddp"
    # torch.compile each decoder layer (fused kernels; pays on GPU, see benchmarks/gpu_check.py;
    # the first steps are slow while it compiles)
    compile: bool = False
    compile_backend: str = "inductor"  # "eager" only traces (a quick check that compile works)
    grad_accum: int = 1
    token_budget: int = 1_000_000  # stop after this many real tokens (all processes)
    max_steps: int = 0  # > 0: stop after this many optimizer steps instead of the token budget
    lr: float = 5e-5  # peak
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.03
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 10  # in all (split over processes); 0 = the whole validation set
    # Early stopping on validation loss (0 = off, the default: the run trains to its budget and
    # saves its last weights). > 0: stop once this many evaluations in a row have not lowered the
    # best validation loss by at least `early_stop_min_delta` nats, and save the best evaluation's
    # weights (not the last ones) as the run's model; the summary records best_step,
    # best_valid_loss and best_tokens_seen, and final_valid_loss is the saved model's. A stopped
    # run is finished (completed), not interrupted. The LR schedule stays planned for the whole
    # budget. Needs a validation set; checkpoints then also hold the best weights (resume exact).
    early_stop_patience: int = 0
    early_stop_min_delta: float = 0.0
    # Training only: each speech token of the input replaced, with this probability, by a random
    # codebook entry, targets unchanged (workbench.lm.context_noise: the model learns not to lean
    # on its own past frames, which free-running generation gets wrong). 0 = off.
    speech_input_noise: float = 0.0
    # What replaces the chosen input tokens: "uniform" random codes, or "model", the model's own
    # sample for that position from a first forward pass without gradients on the true inputs
    # (parallel scheduled sampling; a step costs about 1.4x, benchmarks/lm_speed.py row 6).
    speech_input_noise_source: Literal["uniform", "model"] = "uniform"
    # Training only: each row, with this probability, has every text unit replaced by a blank
    # (character front-end), so the same model also learns to predict speech without its text,
    # which classifier-free guidance at inference needs (workbench.lm.guidance; recorded in the
    # model's config.json, and sampling with guidance_scale != 1 refuses a model without it). 0 = off.
    text_dropout: float = 0.0
    valid_fraction: float = 0.05  # held out by id hash when the shards have no valid split
    train_split: str = "train"
    valid_split: str = "valid"
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    device: str = "auto"
    num_threads: int = 0  # torch CPU threads; 0 = leave torch's default
    peak_flops_per_s: float = 0.0  # for MFU; 0 = measure a matmul on this device
    progress: bool = True
    # Training-only alignment losses on the attention of Llasa's layout (workbench.lm.alignment_loss):
    # a diagonal prior and a CTC alignment over the text span, both on attention renormalised over
    # the text. Off at 0. When either weight is > 0 the model runs transformers' "eager" attention
    # with output_attentions=True (the only one that returns attention probabilities; slower and
    # O(L^2) memory per layer), SDPA otherwise; generation is unaffected. Unpacked batches only.
    align_prior_weight: float = 0.0
    align_ctc_weight: float = 0.0
    align_layers: tuple[int, ...] = ()  # decoder layers (0-based); () = the middle third
    align_heads: tuple[int, ...] = ()  # query heads of those layers the losses act on; () = all
    align_prior_sigma: float = 0.2  # width of the prior's diagonal band, as a fraction of the text

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_seq_len", "log_every", "eval_every",
                     "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"LMTrainConfig.{name} = {getattr(self, name)}: must be >= 1")
        if isinstance(self.early_stop_patience, bool) or not isinstance(self.early_stop_patience, int) \
                or self.early_stop_patience < 0:
            raise ValueError(f"LMTrainConfig.early_stop_patience = {self.early_stop_patience!r}: must be a whole "
                             "number of evaluations >= 0 (0 = no early stopping)")
        if not 0.0 <= self.speech_input_noise < 1.0:  # also rejects NaN
            raise ValueError(f"LMTrainConfig.speech_input_noise = {self.speech_input_noise!r}: must be in [0, 1) "
                             "(the probability that an input speech token is replaced)")
        if self.speech_input_noise_source not in ("uniform", "model"):
            raise ValueError(f"LMTrainConfig.speech_input_noise_source = {self.speech_input_noise_source!r}: expected "
                             "'uniform' (random codes) or 'model' (the model's own samples)")
        if not 0.0 <= self.text_dropout < 1.0:  # also rejects NaN
            raise ValueError(f"LMTrainConfig.text_dropout = {self.text_dropout!r}: must be in [0, 1) (the "
                             "probability that a training row loses its text)")
        if self.text_dropout > 0 and (self.text_frontend != "chars" or self.tokenizer):
            raise ValueError(f"LMTrainConfig.text_dropout = {self.text_dropout} needs text_frontend='chars' and no "
                             f"tokenizer folder (got text_frontend={self.text_frontend!r}): the character "
                             "front-end's unknown token is the blank that replaces the text")
        if not self.early_stop_min_delta >= 0.0:  # also rejects NaN
            raise ValueError(f"LMTrainConfig.early_stop_min_delta = {self.early_stop_min_delta!r}: must be >= 0 nats")
        if self.token_budget < 1 and self.max_steps < 1:
            raise ValueError("LMTrainConfig needs token_budget >= 1 or max_steps >= 1")
        if not 0.0 <= self.warmup_frac < 1.0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"warmup_frac={self.warmup_frac}, min_lr_ratio={self.min_lr_ratio}: out of range")
        if self.sequence_layout not in ("llasa", "interleaved"):
            raise ValueError(f"LMTrainConfig.sequence_layout = {self.sequence_layout!r}: expected 'llasa' or 'interleaved'")
        if self.text_frontend not in ("bpe", "chars", "phonemes"):
            raise ValueError(f"LMTrainConfig.text_frontend = {self.text_frontend!r}: expected 'bpe', 'chars' or 'phonemes'")
        if self.text_frontend == "phonemes" and (self.sequence_layout != "llasa" or self.tokenizer):
            raise ValueError("text_frontend='phonemes' needs sequence_layout='llasa' and no tokenizer folder "
                             f"(got sequence_layout={self.sequence_layout!r}, tokenizer={self.tokenizer!r}): it trains "
                             "its own BPE on IPA, and the interleaved layout's units are characters")
        if self.sequence_layout == "interleaved" and (self.text_frontend != "chars" or self.tokenizer):
            raise ValueError("sequence_layout='interleaved' needs text_frontend='chars' and no tokenizer folder: "
                             "its units are characters")
        if self.align_prior_weight < 0 or self.align_ctc_weight < 0 or self.align_prior_sigma <= 0:
            raise ValueError(f"align_prior_weight={self.align_prior_weight}, align_ctc_weight={self.align_ctc_weight} "
                             f"must be >= 0 and align_prior_sigma={self.align_prior_sigma} > 0")
        if self.uses_alignment_loss and (self.packing or self.sequence_layout != "llasa"):
            raise ValueError("align_prior_weight / align_ctc_weight > 0 need sequence_layout='llasa' and "
                             f"packing=false (got sequence_layout={self.sequence_layout!r}, packing={self.packing}): "
                             "the losses find one text span and one speech span per row")

    @property
    def uses_alignment_loss(self) -> bool:
        return self.align_prior_weight > 0 or self.align_ctc_weight > 0


@dataclass
class LMTrainResult:
    """What a sweep needs from one run (also written to the run's summary.json)."""

    run_id: str
    run_dir: str
    model_dir: str
    preset: str
    n_params: int
    n_params_non_embedding: int
    tokens_seen: int
    steps: int
    flops: float  # training FLOPs with N = all parameters
    flops_non_embedding: float  # with N = non-embedding parameters
    final_train_loss: float
    final_valid_loss: float
    wall_s: float
    tokens_per_s: float
    n_train_sequences: int
    n_dropped: int
    n_truncated: int
    completed: bool  # reached the token budget / max_steps or stopped early (False: stopped by stop_after_steps)
    # Early stopping (LMTrainConfig.early_stop_patience > 0; None / False when off). The saved
    # model is the best evaluation's: final_valid_loss == best_valid_loss, and the model was
    # trained on best_tokens_seen tokens and best_flops FLOPs (tokens_seen / flops: all that the
    # run consumed, steps after the best included). last_valid_loss: the last evaluation's.
    stopped_early: bool = False  # patience ran out before the budget
    best_step: int | None = None
    best_valid_loss: float | None = None
    best_tokens_seen: int | None = None
    best_flops: float | None = None
    best_flops_non_embedding: float | None = None
    last_valid_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class CosineWithWarmup(WarmupCosine):
    """The LM's schedule: `workbench.training.WarmupCosine` with the warm-up given as a fraction
    of the run's estimated steps (the recipe's 3 %)."""

    def __init__(self, total_steps: int, warmup_frac: float, min_ratio: float) -> None:
        total = max(1, int(total_steps))
        super().__init__(warmup_steps=max(1, round(warmup_frac * total)), total_steps=total,
                         min_ratio=float(min_ratio))


def measure_peak_flops(device: Any, dtype: Any = None, size: int = 1024, repeats: int = 5) -> float:
    """Best achieved FLOP/s of a square matmul: the denominator of MFU when no datasheet peak is
    given. On a CPU shared with other work this is what the hardware delivers now."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(repeats + 1):  # first call warms up kernels / allocator
        if a.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


# ---------------------------------------------------------------------------------------------
# Distributed helpers (no-ops in one process)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(use_cuda: bool) -> _Dist:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return _Dist(rank=dist.get_rank(), world_size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")), owns_group=owns)


def _all_reduce_sum(tensor: Any, dist_info: _Dist) -> Any:
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _broadcast_object(obj: Any, dist_info: _Dist) -> Any:
    if dist_info.world_size <= 1:
        return obj
    import torch.distributed as dist

    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _barrier(dist_info: _Dist) -> None:
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------------------------------------
# Pieces of the loop
# ---------------------------------------------------------------------------------------------


def _resolve_device(config: LMTrainConfig, dist_info: _Dist) -> Any:
    from workbench.devices import resolve_device

    # "cuda" without an index becomes this process's GPU (torch.cuda.set_device needs an index).
    local_rank = dist_info.local_rank if dist_info.world_size > 1 or config.device == "auto" else None
    return resolve_device(config.device, local_rank)


def _autocast(device: Any, config: LMTrainConfig) -> Any:
    import torch

    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _make_optimizer(model: Any, config: LMTrainConfig) -> Any:
    import torch

    # No weight decay on norm gains (1-D): decaying them only pulls activations toward zero.
    decay = [p for _, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8,
    )


def _sum_loss(model: Any, batch: Any, autocast: Any) -> Any:
    """Sum (not mean) of next-token cross-entropy over target positions, computed in fp32."""
    return _forward_losses(model, batch, autocast)[0]


def _forward_losses(model: Any, batch: Any, autocast: Any, alignment: Any = None) -> tuple[Any, dict[str, Any]]:
    """(`_sum_loss`'s cross-entropy sum, the alignment losses summed over the batch's sequences by
    name: empty without `alignment`, an `workbench.lm.alignment_loss.AlignmentObjective`)."""
    import torch
    import torch.nn.functional as F

    from workbench.lm.layout import IGNORE_INDEX

    from workbench.lm.packing import model_inputs

    inputs, labels = model_inputs(batch, model)  # packed rows: position ids, no padding mask
    if alignment is not None:
        inputs["output_attentions"] = True
    with autocast:
        outputs = model(**inputs)
    logits = outputs.logits
    aligned = alignment.sums(outputs.attentions, batch.input_ids) if alignment is not None else {}
    # Shift the labels, not the logits: slicing logits[:, :-1] copies the largest tensor of the
    # step and its gradient (measured: 1-4 % of a cpu-1m step, benchmarks/lm_speed.py).
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    if logits.dtype != torch.float32:
        logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum"), aligned


def _speech_logits(model: Any, batch: Any, autocast: Any, layout: Any) -> Any:
    """The model's logits over the codebook at every position of `batch`, without gradients (the
    first pass of scheduled sampling on its own samples)."""
    import torch

    from workbench.lm.packing import model_inputs

    inputs, _ = model_inputs(batch, model)
    with torch.no_grad(), autocast:
        logits = model(**inputs).logits
    # packed rows run flattened into one row under a varlen kernel: back to the batch's shape
    logits = logits.reshape(*batch.input_ids.shape, logits.shape[-1])
    return logits[..., layout.speech_offset:layout.speech_offset + layout.codebook_size]


def _evaluate(model: Any, batches: list, device: Any, config: LMTrainConfig, dist_info: _Dist,
              filler: Any = None) -> float:
    import torch

    from workbench.lm.sharded import is_sharded

    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    n_forward = len(batches)
    if is_sharded(model) and dist_info.world_size > 1:
        # Every forward of a sharded model is a collective: all ranks run as many as the busiest
        # one, the extra ones on a batch (`filler` when this rank has none) whose loss is not counted.
        import torch.distributed as dist

        most = torch.tensor([len(batches)])
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        n_forward = int(most)
    with torch.no_grad():
        for i in range(n_forward):
            batch = (batches[i] if i < len(batches) else batches[0] if batches else filler).to(device)
            piece = float(_sum_loss(model, batch, _autocast(device, config)))
            if i < len(batches):
                totals[0] += piece
                totals[1] += batch.n_loss_tokens
    _all_reduce_sum(totals, dist_info)
    model.train(was_training)
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


def _prepare_tokenizer(config: LMTrainConfig, train_texts: list[str], codebook_size: int,
                       run_dir: Path, dist_info: _Dist) -> Any:
    """The run's tokenizer, saved under <run>/tokenizer on first start and reloaded on resume (so
    a resumed run cannot drift to a different vocabulary)."""
    from workbench.lm.text_tokenizer import (
        char_tokenizer, extend_pretrained_tokenizer, load_lm_tokenizer, train_text_tokenizer,
    )
    from workbench.lm.phonemes import mark_phoneme_tokenizer, phonemize_all, text_frontend_of

    saved = run_dir / "tokenizer"
    if dist_info.is_main and not (saved / "tokenizer.json").exists():
        if config.init_from:
            lm_tok = load_lm_tokenizer(config.init_from)
            if config.text_frontend == "phonemes" and text_frontend_of(lm_tok.tokenizer) != "phonemes":
                raise ValueError(f"init_from={config.init_from}: its tokenizer is not a phoneme one "
                                 "(text_frontend='phonemes' fine-tunes only phoneme checkpoints)")
        elif config.tokenizer:
            lm_tok = extend_pretrained_tokenizer(config.tokenizer, codebook_size)
        elif config.text_frontend == "chars":
            lm_tok = char_tokenizer(codebook_size)
            # Saved in tokenizer_config.json: prompts built from this tokenizer follow the layout.
            lm_tok.tokenizer.init_kwargs["sequence_layout"] = config.sequence_layout
        elif config.text_frontend == "phonemes":
            lm_tok = train_text_tokenizer(phonemize_all(train_texts, config.phoneme_voice), codebook_size,
                                          config.text_vocab_size)
            mark_phoneme_tokenizer(lm_tok.tokenizer, config.phoneme_voice)  # saved in tokenizer_config.json
        else:
            lm_tok = train_text_tokenizer(train_texts, codebook_size, config.text_vocab_size)
        tmp = saved.with_name("tokenizer.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        lm_tok.save(tmp)
        os.replace(tmp, saved)
    _barrier(dist_info)
    lm_tok = load_lm_tokenizer(saved)
    if lm_tok.layout.codebook_size != codebook_size:
        raise ValueError(f"tokenizer has {lm_tok.layout.codebook_size} speech tokens, shards' codec "
                         f"has codebook_size {codebook_size}")
    return lm_tok


def _latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint folder whose files match their checksums (each one skipped is
    reported on stderr); None for a fresh run."""
    from workbench.checkpoints import newest_verified_folder

    folders = sorted((p for p in (run_dir / "checkpoints").glob("step-*") if p.is_dir()), reverse=True)
    skipped = []
    found = newest_verified_folder(folders, required=(TRAINER_STATE_FILE,), report=skipped.append)
    for item in skipped:
        print(f"[lm train] skipped checkpoint {item}; "
              f"{'resuming from ' + found.name if found else 'no intact checkpoint left'}", file=sys.stderr)
    if skipped and found is None:
        raise ValueError(f"{run_dir}: no intact checkpoint to resume from ({'; '.join(map(str, skipped))}); "
                         "delete the damaged folders to start over, or use a new run id")
    return found


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def train_lm(config: LMTrainConfig, shards_dir: str | Path, run_id: str | None = None,
             root: str | Path | None = None, *, stop_after_steps: int | None = None) -> LMTrainResult:
    """Train one LM on the token shards in `shards_dir`; the single entry point a sweep calls.

    Creates (or, when `run_id` names a run with a checkpoint, resumes) ``<root>/lm/<run_id>``.
    `stop_after_steps` stops early as `workbench.training` describes for every trainer (checkpoint,
    run left "interrupted" and resumable, no final model, result with ``completed=False``); the
    model_dir it names is then not written yet. Picklable: a module-level function of picklable arguments.
    Under torchrun every rank calls this with the same arguments.
    """
    import torch

    from workbench.runs import new_run_id, runs_root, start_run

    wall_start = time.perf_counter()
    stop = StopAfter(stop_after_steps)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    use_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    dist_info = _init_distributed(use_cuda)
    device = _resolve_device(config, dist_info)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    run_id = _broadcast_object(run_id or (new_run_id(config) if dist_info.is_main else None), dist_info)
    run_dir = runs_root(root) / "lm" / run_id
    run_ctx = start_run("lm", config, root=root, run_id=run_id) if dist_info.is_main else contextlib.nullcontext()
    try:
        with run_ctx as run:
            result = _train(config, Path(shards_dir), run, run_id, run_dir, device, dist_info, stop, wall_start)
    finally:
        if dist_info.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    return result


def _train(config: LMTrainConfig, shards_dir: Path, run: Any, run_id: str, run_dir: Path,
           device: Any, dist_info: _Dist, stop: StopAfter, wall_start: float) -> LMTrainResult:
    import torch
    from tqdm.auto import tqdm

    from workbench.checkpoints import FOLDER_CHECKSUMS, load_weights_only, write_folder_checksums
    from workbench.data.token_shards import read_token_shards
    from workbench.lm.context_noise import noise_generator, with_noisy_speech_inputs, with_own_speech_inputs
    from workbench.lm.guidance import record_text_dropout, text_guidance, with_text_dropout
    from workbench.lm.data import BatchStream, collate, encode_utterances, eval_batches, split_utterances
    from workbench.lm.flops import count_params, training_flops
    from workbench.lm.model import build_model, load_lm, save_checkpoint
    from workbench.lm.sharded import gradient_sync, to_float

    _barrier(dist_info)  # rank 0 has created the run directory
    codec, utterances = read_token_shards(shards_dir)
    train_utts, valid_utts = split_utterances(utterances, train_split=config.train_split,
                                              valid_split=config.valid_split,
                                              valid_fraction=config.valid_fraction)
    if not train_utts:
        raise ValueError(f"{shards_dir}: no training utterances (split {config.train_split!r})")
    lm_tok = _prepare_tokenizer(config, [u.text for u in train_utts], codec.codebook_size, run_dir, dist_info)
    tokenizer, layout = lm_tok.tokenizer, lm_tok.layout
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else layout.speech_generation_end
    alignments, alignments_path = None, None
    if config.sequence_layout == "interleaved":
        from workbench.align.forced import ALIGNMENT_FILE, load_alignments

        alignments_path = Path(config.alignments or shards_dir / ALIGNMENT_FILE).resolve()
        alignments = load_alignments(alignments_path)
    train_set = encode_utterances(train_utts, tokenizer, layout, config.max_seq_len, config.too_long, alignments)
    valid_set = encode_utterances(valid_utts, tokenizer, layout, config.max_seq_len, config.too_long, alignments)
    if len(train_set) == 0 and train_set.n_unaligned:
        raise ValueError(f"none of the {len(train_utts)} training utterances has an alignment in "
                         f"{config.alignments or shards_dir / 'alignments.json'} (made for other shards?)")
    if len(train_set) == 0:
        raise ValueError(f"all {len(train_utts)} training utterances exceed max_seq_len={config.max_seq_len}")

    # Model: resume > fine-tune > scratch.
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    latest = _latest_checkpoint(run_dir)
    if latest is not None:
        model = load_lm(latest, device="cpu").model
    elif config.init_from:
        model = load_lm(config.init_from, device="cpu").model
    else:
        model = build_model(config.preset, layout, seed=config.seed, bos_token_id=tokenizer.bos_token_id,
                            pad_token_id=pad_id, max_position_embeddings=config.max_seq_len)
    if config.sequence_layout == "interleaved":  # recorded in config.json; generation reads it
        from workbench.lm.interleaved import end_of_unit_id

        model.config.sequence_layout = "interleaved"
        model.config.end_of_unit_token_id = end_of_unit_id(tokenizer)
    text_free = text_guidance(tokenizer) if config.text_dropout > 0 else None
    if text_free is not None:  # recorded: guided sampling refuses a model that never saw blank text
        record_text_dropout(model.config, text_free, config.text_dropout)
    model.to(device).train()
    counts = count_params(model.config)
    alignment = None
    if config.uses_alignment_loss:
        from workbench.lm.alignment_loss import AlignmentObjective

        alignment = AlignmentObjective.for_model(layout, model.config.num_hidden_layers, config.align_layers,
                                                 config.align_prior_weight, config.align_ctc_weight,
                                                 config.align_prior_sigma, config.align_heads,
                                                 model.config.num_attention_heads)
        model.set_attn_implementation("eager")  # the only implementation that returns attention probabilities
    attention = str(getattr(model.config, "_attn_implementation", "") or "sdpa")
    if config.packing:
        from workbench.lm.packing import prefer_varlen_attention

        attention = prefer_varlen_attention(model, device)
    if config.compile:  # before sharding: FSDP2 then wraps compiled layers (the supported order)
        from workbench.lm.compile import compile_layers

        compile_layers(model, backend=config.compile_backend)
    sharded = config.sharding == "fsdp" and dist_info.world_size > 1
    if sharded:
        from workbench.lm.sharded import shard_model

        use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
        shard_model(model, bf16=use_bf16)  # before the optimizer: it must hold the sharded parameters

    if config.packing:
        from workbench.lm.packing import PackedBatchStream

        stream = PackedBatchStream(train_set, config.batch_size, pad_id, seed=config.seed, rank=dist_info.rank,
                                   world_size=dist_info.world_size, max_seq_len=config.max_seq_len,
                                   fixed_width=config.compile)
        tokens_per_micro_batch = stream.mean_batch_tokens()
    else:
        stream = BatchStream(train_set, config.batch_size, pad_id, seed=config.seed, rank=dist_info.rank,
                             world_size=dist_info.world_size)
        tokens_per_micro_batch = (train_set.n_tokens / len(train_set)) * config.batch_size
    valid_batches = eval_batches(valid_set, config.batch_size, pad_id, config.eval_batches,
                                 dist_info.rank, dist_info.world_size) if len(valid_set) else []
    # a sharded rank without validation batches still joins every forward's collectives
    eval_filler = collate(valid_set.sequences[:1], pad_id) if sharded and len(valid_set) else None
    tokens_per_step = tokens_per_micro_batch * config.grad_accum * dist_info.world_size
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(config.token_budget / tokens_per_step)

    # Measured before any RNG state is restored: it draws random matrices.
    peak = config.peak_flops_per_s
    if peak <= 0:
        use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
        peak = measure_peak_flops(device, torch.bfloat16 if use_bf16 else torch.float32,
                                  size=4096 if device.type == "cuda" else 512)
    optimizer = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, CosineWithWarmup(total_steps, config.warmup_frac, config.min_lr_ratio))
    state: dict[str, Any] = {"step": 0, "tokens_seen": 0, "flops": 0.0, "flops_non_embedding": 0.0,
                             "train_time_s": 0.0, "wall_s": 0.0, "last_train_loss": float("nan"),
                             "last_valid_loss": float("nan")}
    if config.early_stop_patience > 0 and not len(valid_set):
        raise ValueError(f"early_stop_patience={config.early_stop_patience} needs a validation set, and "
                         f"{shards_dir} has no {config.valid_split!r} utterances (set valid_fraction or valid_split)")
    early = EarlyStopping(config.early_stop_patience, config.early_stop_min_delta)
    # Where the best evaluation was (its weights: `best_weights`, a CPU state dict on rank 0).
    best_at: dict[str, Any] = {"tokens_seen": 0, "flops": 0.0, "flops_non_embedding": 0.0}
    best_weights: dict[str, Any] | None = None
    if latest is not None:
        saved = load_weights_only(latest / TRAINER_STATE_FILE)
        if sharded:
            from workbench.lm.sharded import load_optimizer_state

            load_optimizer_state(model, optimizer, saved["optimizer"])
        else:
            optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        stream.load_state_dict(saved["data"])
        set_rng_state(saved["rng"])
        state.update(saved["counters"])
        if early.enabled:
            early.load_state_dict(saved["early_stop"])
            best_at.update(saved["early_stop"]["best_at"])
            if early.best_step >= 0 and dist_info.is_main:
                best_weights = load_weights_only(latest / BEST_WEIGHTS_FILE)
    wall_offset = state["wall_s"]

    ddp_model = model
    if dist_info.world_size > 1 and not sharded:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if run is not None and state["step"] > 0:
        run.log(state["step"], event="resumed")  # readers drop records of later steps logged before it
    from workbench.lm.sharded import estimate_memory

    # Worst case per micro-batch: every row max_seq_len wide (always so when packed).
    memory = estimate_memory(model.config, world_size=dist_info.world_size, sharding=config.sharding,
                             tokens_per_micro_batch=config.batch_size * config.max_seq_len,
                             bf16=config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"))
    if dist_info.is_main and (device.type == "cuda" or dist_info.world_size > 1):
        import sys

        print(memory.describe(), file=sys.stderr, flush=True)
    if run is not None and state["step"] == 0:
        run.log(0, event="start", memory_estimate_gb=memory.total / 1e9, n_params=counts.n_params, n_params_non_embedding=counts.n_params_non_embedding,
                n_train_sequences=len(train_set), n_valid_sequences=len(valid_set),
                n_dropped=train_set.n_dropped + valid_set.n_dropped,
                n_truncated=train_set.n_truncated + valid_set.n_truncated,
                total_steps_estimate=total_steps, tokens_per_step_estimate=tokens_per_step,
                peak_flops_per_s=peak, world_size=dist_info.world_size, device=str(device),
                attention=attention, packing=config.packing, sharding=config.sharding, compile=config.compile)

    def budget_spent() -> bool:
        if config.max_steps > 0:
            return state["step"] >= config.max_steps
        return state["tokens_seen"] >= config.token_budget

    def done() -> bool:
        return early.stopped or budget_spent()

    def save(step: int) -> None:
        to_save, optimizer_state = _savable(model, optimizer, sharded)
        trainer_state = {
            "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
            "data": stream.state_dict(), "rng": rng_state(),
            "counters": {**state, "wall_s": wall_offset + time.perf_counter() - wall_start},
            **({"early_stop": {**early.state_dict(), "best_at": dict(best_at)}} if early.enabled else {}),
        }
        best_file = {BEST_WEIGHTS_FILE: lambda p: torch.save(best_weights, p)} if best_weights is not None else {}
        if dist_info.is_main:
            ckpt_root = run_dir / "checkpoints"
            name = f"step-{step:07d}"
            save_checkpoint(ckpt_root / name, to_save, tokenizer, layout, codec=codec,
                            extra={"preset": config.preset, "step": step, "run_id": run_id,
                                   "sequence_layout": config.sequence_layout, "text_frontend": config.text_frontend,
                                   **({"alignments": str(alignments_path)} if alignments_path else {})},
                            extra_files={TRAINER_STATE_FILE: lambda p: torch.save(trainer_state, p), **best_file,
                                         FOLDER_CHECKSUMS: lambda p: write_folder_checksums(p.parent)})
            atomic_write_text(ckpt_root / LATEST_FILE, name + "\n")
            kept = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
            for old in kept[: -config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier(dist_info)

    progress = tqdm(total=total_steps, initial=min(state["step"], total_steps), disable=not (config.progress and dist_info.is_main),
                    desc=f"lm {config.preset}", unit="step", dynamic_ncols=True)
    autocast = _autocast(device, config)
    window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
    window_align: dict[str, float] = {}  # alignment losses per sequence, summed over the window's steps
    interrupted = False
    while not done():
        step_start = time.perf_counter()
        micro = [next(stream) for _ in range(config.grad_accum)]
        # Totals for this step across micro-batches and processes, known before any forward pass.
        step_flops = training_flops(model.config, [n for b in micro for n in b.seq_lens])
        totals = torch.tensor([sum(b.n_loss_tokens for b in micro), sum(b.n_tokens for b in micro),
                               step_flops.with_embedding, step_flops.non_embedding], dtype=torch.float64)
        _all_reduce_sum(totals, dist_info)
        n_targets = max(1.0, float(totals[0]))
        loss_sum = torch.zeros((), dtype=torch.float64)
        if alignment is not None:  # alignment losses are per sequence: Σ over the step / its sequences
            n_sequences = float(_all_reduce_sum(torch.tensor(float(sum(len(b.seq_lens) for b in micro))), dist_info))
            align_sums = torch.zeros(2, dtype=torch.float64)
        for i, batch in enumerate(micro):
            noise = noise_generator(config.seed + dist_info.rank, state["step"], i)
            if config.speech_input_noise > 0 and config.speech_input_noise_source == "model":
                batch = with_own_speech_inputs(batch.to(device), layout, config.speech_input_noise, noise,
                                               lambda b: _speech_logits(ddp_model, b, autocast, layout))
            elif config.speech_input_noise > 0:
                batch = with_noisy_speech_inputs(batch, layout, config.speech_input_noise, noise)
            if text_free is not None:  # its own draw (micro-batch index offset), so the noise stays as it was
                batch = with_text_dropout(batch, text_free, config.text_dropout,
                                          noise_generator(config.seed + dist_info.rank, state["step"], i + 1_000_000))
            batch = batch.to(device)
            sync = i == len(micro) - 1 or dist_info.world_size == 1
            with gradient_sync(ddp_model, sync):
                piece, aligned = _forward_losses(ddp_model, batch, autocast, alignment)
                # ×world_size undoes DDP's gradient averaging: the result is Σ losses / n_targets.
                objective = piece * (dist_info.world_size / n_targets)
                if aligned:
                    objective = objective + alignment.weighted(aligned) * (dist_info.world_size / n_sequences)
                    align_sums += torch.tensor([float(aligned[k].detach()) if k in aligned else 0.0
                                                for k in ("align_prior", "align_ctc")],
                                               dtype=torch.float64)
                objective.backward()
            loss_sum += float(piece.detach())
        _all_reduce_sum(loss_sum, dist_info)
        if alignment is not None:
            _all_reduce_sum(align_sums, dist_info)
            for name, total in zip(("align_prior", "align_ctc"), align_sums.tolist()):
                if name in alignment.terms:
                    window_align[name] = window_align.get(name, 0.0) + total / max(1.0, n_sequences)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_time = time.perf_counter() - step_start

        train_loss = float(loss_sum) / n_targets
        state["step"] += 1
        state["tokens_seen"] += int(totals[1])
        state["flops"] += float(totals[2])
        state["flops_non_embedding"] += float(totals[3])
        state["train_time_s"] += step_time
        state["last_train_loss"] = train_loss
        window_loss += train_loss
        window_steps += 1
        window_tokens += int(totals[1])
        window_time += step_time
        step = state["step"]
        progress.update(1)
        progress.set_postfix(loss=f"{train_loss:.3f}", tok=state["tokens_seen"])

        if step % config.log_every == 0 or done():
            tokens_per_s = window_tokens / max(window_time, 1e-9)
            flops_per_s = float(totals[2]) / max(step_time, 1e-9)
            if run is not None:
                run.log(step, train_loss=window_loss / window_steps, lr=lr, grad_norm=to_float(grad_norm),
                        tokens_seen=state["tokens_seen"], flops=state["flops"],
                        flops_non_embedding=state["flops_non_embedding"], tokens_per_s=tokens_per_s,
                        mfu=flops_per_s / dist_info.world_size / peak, epoch=stream.epoch,
                        **{name: total / window_steps for name, total in window_align.items()})
            window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
            window_align = {}
        # len(valid_set), not valid_batches: identical on every rank, so all join the all-reduce.
        if len(valid_set) and (step % config.eval_every == 0 or done()):
            state["last_valid_loss"] = _evaluate(model, valid_batches, device, config, dist_info, eval_filler)
            if run is not None:
                run.log(step, valid_loss=state["last_valid_loss"], tokens_seen=state["tokens_seen"],
                        flops=state["flops"], flops_non_embedding=state["flops_non_embedding"])
            # The same loss on every rank (all-reduced): all ranks agree on the best and the stop.
            if early.update(state["last_valid_loss"], step):
                best_weights = _weights_snapshot(model, sharded) if dist_info.is_main or sharded else None
                best_at.update(tokens_seen=state["tokens_seen"], flops=state["flops"],
                               flops_non_embedding=state["flops_non_embedding"])
            if early.stopped and run is not None:
                run.log(step, event="early_stop", best_step=early.best_step, best_valid_loss=early.best_loss,
                        evals_since_best=early.evals_since_best)
        if step % config.checkpoint_every == 0 or done():
            save(step)
        if stop.due(step, done=done()):
            if step % config.checkpoint_every:
                save(step)
            interrupted = True
            break
    progress.close()

    wall_s = wall_offset + time.perf_counter() - wall_start
    model_dir = run_dir / "model"
    if interrupted:
        final_model = None
    elif early.enabled and early.best_step >= 0:  # the best evaluation's weights, not the last ones
        final_model = _model_with(model, best_weights, sharded) if dist_info.is_main else None
    else:
        final_model = _savable(model, None, sharded)[0]
    if dist_info.is_main and not interrupted:
        save_checkpoint(model_dir, final_model, tokenizer, layout, codec=codec,
                        extra={"preset": config.preset,
                               "step": early.best_step if early.enabled and early.best_step >= 0 else state["step"],
                               "run_id": run_id, "sequence_layout": config.sequence_layout, "text_frontend": config.text_frontend,
                               **({"alignments": str(alignments_path)} if alignments_path else {})})
    _barrier(dist_info)
    kept_best = early.enabled and early.best_step >= 0
    result = LMTrainResult(
        run_id=run_id, run_dir=str(run_dir), model_dir=str(model_dir), preset=config.preset,
        n_params=counts.n_params, n_params_non_embedding=counts.n_params_non_embedding,
        tokens_seen=int(state["tokens_seen"]), steps=int(state["step"]), flops=float(state["flops"]),
        flops_non_embedding=float(state["flops_non_embedding"]),
        final_train_loss=float(state["last_train_loss"]),
        final_valid_loss=float(early.best_loss if kept_best else state["last_valid_loss"]),
        wall_s=wall_s, tokens_per_s=state["tokens_seen"] / max(state["train_time_s"], 1e-9),
        n_train_sequences=len(train_set), n_dropped=train_set.n_dropped, n_truncated=train_set.n_truncated,
        completed=not interrupted,
        stopped_early=early.stopped and not budget_spent(),
        **({"best_step": early.best_step, "best_valid_loss": early.best_loss,
            "best_tokens_seen": int(best_at["tokens_seen"]), "best_flops": float(best_at["flops"]),
            "best_flops_non_embedding": float(best_at["flops_non_embedding"]),
            "last_valid_loss": float(state["last_valid_loss"])} if kept_best else {}),
    )
    if run is not None:
        run.summary(**result.to_dict(), world_size=dist_info.world_size)
    if interrupted:
        stop.leave_resumable(run)
    return result


def _weights_snapshot(model: Any, sharded: bool) -> dict[str, Any] | None:
    """A CPU copy of the model's weights (sharded: gathered to rank 0, a collective; None elsewhere)."""
    if sharded:
        from workbench.lm.sharded import full_state

        state = full_state(model, None)[0]
        return None if state is None else {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _model_with(model: Any, weights: dict[str, Any], sharded: bool) -> Any:
    """A model `save_pretrained` can write holding `weights` (rank 0). Unsharded: the training
    model itself, loaded with them (training is over)."""
    if sharded:
        from workbench.lm.sharded import plain_model

        return plain_model(model, weights)
    model.load_state_dict(weights)
    return model


def _savable(model: Any, optimizer: Any, sharded: bool) -> tuple[Any, Any]:
    """(a model `save_pretrained` can write, the optimizer's state dict). Sharded: the full
    weights and optimizer state gathered to rank 0 (a collective; other ranks get None)."""
    if not sharded:
        return model, optimizer.state_dict() if optimizer is not None else None
    from workbench.lm.sharded import full_state, plain_model

    model_state, optimizer_state = full_state(model, optimizer)
    return (plain_model(model, model_state) if model_state is not None else None), optimizer_state


def main(argv: list[str] | None = None) -> None:
    """CLI, also the torchrun entry point:
    ``torchrun --nproc_per_node 2 -m workbench.lm.train SHARDS --profile smoke --set batch_size=2``."""
    from workbench.config import ConfigError, parse_overrides

    parser = argparse.ArgumentParser(prog="python -m workbench.lm.train", description=main.__doc__)
    parser.add_argument("shards_dir")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override; VALUE typed as YAML (5e-5 is a float)")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--root", default=None)
    parser.add_argument("--result-json", default=None, help="rank 0 writes the LMTrainResult here")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    config = for_profile(LMTrainConfig, args.profile)
    config = from_params(LMTrainConfig, overrides, base=config) if overrides else config
    result = train_lm(config, args.shards_dir, run_id=args.run_id, root=args.root)
    if int(os.environ.get("RANK", "0")) == 0:
        text = json.dumps(result.to_dict(), indent=2)
        if args.result_json:
            atomic_write_text(args.result_json, text + "\n")
        else:
            print(text)


if __name__ == "__main__":
    main()


__all__ = ["LMTrainConfig", "LMTrainResult", "CosineWithWarmup", "train_lm", "measure_peak_flops", "main"]
