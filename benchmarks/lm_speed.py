"""Speed of the LM training loop and of generation, each as a ratio against a baseline measured in
the same process (the machine is shared and noisy, so only same-run ratios mean anything):

1. training tokens/s of the workbench loop (`train_lm` on synthetic token shards) vs a bare
   forward / backward / AdamW-step loop on the same model, the same batches in the same order
   (target >= 0.95). Both sides are timed the same way: a global optimizer-step hook stamps the
   end of every step, so a step's time is the whole loop iteration (data, loss, backward,
   clipping, optimizer, logging) and start-up (tokenizer, encoding, run directory, model build)
   and the final eval / checkpoint are excluded. The first `--warmup-steps` steps are dropped
   (optimizer-state allocation); sides alternate over `--rounds` rounds and every step keeps its
   fastest round, since batches of the same index have the same shape on both sides. Below the
   table, each piece of work the loop does beyond the bare loop is timed alone (data, accounting,
   its loss, clipping, two-group AdamW, schedule, logging) to show where a gap comes from.
2. model FLOPs utilisation: training FLOPs/s (`workbench.lm.flops.training_flops`, N = all
   parameters, padding excluded) over this CPU's fp32 matmul peak (`measure_peak_flops`,
   best of a timed square matmul at the start and end of the run, same thread count).
3. generation tokens/s with the KV cache (`model.generate(use_cache=True)`) vs without it
   (`use_cache=False`): greedy, same prompt, same number of new tokens (end token suppressed).
4. best-of-8 as one `generate(num_return_sequences=8)` call vs 8 sequential single samples
   (seeded sampling, temperature 0.8, same number of new tokens per sample).
5. sampling tokens/s of the lean loop (`workbench.lm.fast_generate`, what
   `generate_speech_tokens` uses) vs `model.generate`, batch 1 and best-of-8, seeded sampling at
   temperature 0.8 with the speech-only mask (target >= 3); the notes say whether both drew
   identical samples.
6. training tokens/s with scheduled sampling on the model's own samples
   (`speech_input_noise_source="model"`, rate 0.4: one extra forward pass without gradients) vs
   the same loop with uniform input noise at the same rate (one pass), the same batches; both
   sides `train_lm`, alternating rounds, per-step best.

Models are random-initialised presets over a tiny trained BPE plus 1,000 speech codes; training
sequences are a ~40-token prompt and 150-250 speech tokens.

    .venv/bin/python benchmarks/lm_speed.py                    # cpu-1m, 1 thread, ~1.5 min
    .venv/bin/python benchmarks/lm_speed.py --quick            # ~15 s: a smoke check
    .venv/bin/python benchmarks/lm_speed.py --preset cpu-3m --threads 2
    .venv/bin/python benchmarks/lm_speed.py --generation-only --preset cpu-0.1m   # rows 3-5 only
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ as a folder of scripts
from timing import best_of  # noqa: E402

CODEBOOK_SIZE = 1000
FRAME_RATE_HZ = 50.0
WORDS = ("the a of and to in is was that for on with as by at from his her they we you it this "
         "quick brown fox jumps over lazy dog river mountain evening morning window garden city "
         "small large quiet loud bright dark cold warm old new early late under between after "
         "before speech model sound voice token music paper light water stone").split()


@dataclass(frozen=True)
class Row:
    """One line of the result table: `value` of the thing measured against `baseline_value` of
    the named baseline; `ratio` is value / baseline_value (higher is better for every row)."""

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value


@dataclass
class LMSpeedResult:
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    overhead_ms: dict[str, float] = field(default_factory=dict)  # per training step
    step_gap_ms: float = math.nan  # measured: workbench step minus bare step


@dataclass(frozen=True)
class Settings:
    preset: str
    threads: int
    batch_size: int
    warmup_steps: int
    steps: int
    rounds: int
    n_utterances: int
    new_tokens: int
    gen_repeats: int
    peak_sizes: tuple[int, ...]


def settings_from_args(args: argparse.Namespace) -> Settings:
    quick = args.quick
    return Settings(
        preset=args.preset,
        threads=args.threads,
        batch_size=args.batch_size or (4 if quick else 8),
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else (1 if quick else 2),
        steps=args.steps or (3 if quick else 12),
        rounds=args.rounds or (1 if quick else 4),
        n_utterances=48 if quick else 160,
        new_tokens=args.new_tokens or (24 if quick else 200),
        gen_repeats=args.repeats or (1 if quick else 3),
        peak_sizes=(512,) if quick else (512, 1024),
    )


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(22, 30))) + "."


def synthetic_utterances(n: int, seed: int = 0) -> list[Any]:
    """`n` utterances: ~25-word texts (a ~40-token prompt) with 150-250 random codes each;
    every 20th is in the valid split."""
    from workbench.data.token_shards import TokenizedUtterance

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        n_frames = rng.randint(150, 250)
        codes = torch.randint(0, CODEBOOK_SIZE, (n_frames,), generator=gen)
        out.append(TokenizedUtterance(f"u{i:05d}", "spk", _text(rng), "valid" if i % 20 == 0 else "train", codes))
    return out


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------


def step_end_times(fn: Callable[[], Any]) -> tuple[list[float], Any]:
    """Run `fn` and return the perf_counter stamp taken right after every optimizer step in it
    (a global hook: the same clock for the workbench loop and the bare loop), and fn's result."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    stamps: list[float] = []
    handle = register_optimizer_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    try:
        result = fn()
    finally:
        handle.remove()
    return stamps, result


def step_durations(stamps: list[float], warmup_steps: int, steps: int) -> list[float]:
    """Durations of steps warmup_steps+1 .. warmup_steps+steps (1-based), i.e. of the batches at
    0-based indices warmup_steps .. warmup_steps+steps-1: stamp[s] - stamp[s-1]."""
    if len(stamps) != warmup_steps + steps:
        raise RuntimeError(f"expected {warmup_steps + steps} optimizer steps, saw {len(stamps)}")
    return [stamps[s] - stamps[s - 1] for s in range(warmup_steps, warmup_steps + steps)]




# ---------------------------------------------------------------------------------------------
# 1 + 2: training loop vs bare loop, MFU
# ---------------------------------------------------------------------------------------------


def bare_training_loop(model: Any, batches: list[Any], config: Any) -> None:
    """The baseline: forward with HF's own shifted-label loss, backward, AdamW step, nothing else
    (no clipping, schedule, accounting, logging; batches already collated)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                  eps=1e-8, weight_decay=config.weight_decay)
    model.train()
    for batch in batches:
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def measure_overheads(model: Any, batches: list[Any], make_stream: Callable[[], Any], config: Any,
                      repeats: int, log_dir: Path) -> dict[str, float]:
    """Per-step cost (ms) of what the workbench loop does beyond the bare loop, each piece timed
    alone (best of `repeats`; comparisons interleaved), to say where a gap comes from."""
    import contextlib

    import torch.nn.functional as F

    from workbench.lm.flops import training_flops
    from workbench.lm.layout import IGNORE_INDEX
    from workbench.lm.train import CosineWithWarmup, _make_optimizer, _sum_loss
    from workbench.runs import start_run

    n = len(batches)
    out: dict[str, float] = {}

    def pull() -> None:
        stream = make_stream()
        for _ in range(n):
            next(stream)

    out["next(stream): batch order + collate"] = best_of(pull, repeats) / n * 1e3

    def accounting() -> None:
        for b in batches:
            f = training_flops(model.config, b.seq_lens)
            torch.tensor([b.n_loss_tokens, b.n_tokens, f.with_embedding, f.non_embedding], dtype=torch.float64)

    out["FLOP / target-token accounting"] = best_of(accounting, repeats) / n * 1e3

    # Loss, forward + backward of the whole model on real batches (interleaved, best of repeats):
    # the loop's `_sum_loss` slices logits[:, :-1], so reshape copies a (batch, time, vocab) tensor
    # and backward scatters its gradient into a fresh zero tensor; HF's labels= loss shifts the
    # labels instead and views the logits. "label shift" is the loop's sum-CE written HF's way.
    model.train()
    nullctx = contextlib.nullcontext()

    def loop_loss(b: Any) -> None:
        piece = _sum_loss(model, b, nullctx)
        (piece * (1.0 / max(1, b.n_loss_tokens))).backward()
        float(piece.detach())

    def hf_loss(b: Any) -> None:
        model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss.backward()

    def label_shift_loss(b: Any) -> None:
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        targets = F.pad(b.labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        piece = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction="sum")
        (piece * (1.0 / max(1, b.n_loss_tokens))).backward()
        float(piece.detach())

    sample = batches[:2]
    fns = (loop_loss, hf_loss, label_shift_loss)
    best = {(fn, i): math.inf for fn in fns for i in range(len(sample))}
    for _ in range(repeats):  # interleaved per batch; every (loss, batch) keeps its fastest time
        for i, b in enumerate(sample):
            for fn in fns:
                start = time.perf_counter()
                fn(b)
                best[fn, i] = min(best[fn, i], time.perf_counter() - start)
                model.zero_grad(set_to_none=True)

    def mean_best(fn: Callable[[Any], None]) -> float:
        return sum(best[fn, i] for i in range(len(sample))) / len(sample)

    out["loss: loop's _sum_loss minus HF labels= loss (fwd+bwd)"] = (mean_best(loop_loss) - mean_best(hf_loss)) * 1e3
    out["  (HF-style label shift minus HF labels= loss: same work, noise)"] = (
        mean_best(label_shift_loss) - mean_best(hf_loss)) * 1e3

    hf_loss(batches[-1])  # gradients for clipping and the optimizer steps
    out["clip_grad_norm_(1.0)"] = best_of(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0),
                                          repeats) * 1e3
    one_group = torch.optim.AdamW(model.parameters(), lr=1e-9, betas=(config.beta1, config.beta2), eps=1e-8,
                                  weight_decay=config.weight_decay)
    two_groups = _make_optimizer(model, config)
    for group in two_groups.param_groups:
        group["lr"] = 1e-9
    t_one = t_two = math.inf
    for _ in range(repeats):
        t_one = min(t_one, best_of(one_group.step, 1))
        t_two = min(t_two, best_of(two_groups.step, 1))
    out["AdamW step: loop's 2 param groups minus 1 group"] = (t_two - t_one) * 1e3
    model.zero_grad(set_to_none=True)

    sched = torch.optim.lr_scheduler.LambdaLR(one_group, CosineWithWarmup(1000, 0.03, 0.1))
    one_group.step()  # no gradients left: a no-op that tells the scheduler the optimizer stepped
    out["LambdaLR step + get_last_lr"] = best_of(lambda: (sched.get_last_lr(), sched.step()), repeats) * 1e3

    with start_run("lm", config, root=log_dir, run_id="log-cost") as run:
        t_log = best_of(lambda: run.log(1, train_loss=1.0, lr=1e-3, grad_norm=1.0, tokens_seen=1, flops=1.0,
                                        flops_non_embedding=1.0, tokens_per_s=1.0, mfu=0.1, epoch=0), repeats)
    out[f"run.log (fsynced line) / log_every={config.log_every}"] = t_log / config.log_every * 1e3
    return out


@dataclass(frozen=True)
class TrainTiming:
    """Summed best-of-rounds times of the timed steps, and what those steps held."""

    tokens: int  # real (non-padding) tokens
    flops: float  # training FLOPs, N = all parameters
    flops_non_embedding: float
    workbench_s: float
    bare_s: float


def bench_training(s: Settings, peak_flops_per_s: float, work: Path, result: LMSpeedResult) -> TrainTiming:
    from workbench.config import for_profile
    from workbench.data.token_shards import CodecInfo, read_token_shards, write_token_shards
    from workbench.lm.data import BatchStream, encode_utterances, split_utterances
    from workbench.lm.flops import count_params, training_flops
    from workbench.lm.model import build_llama_config, build_model
    from workbench.lm.text_tokenizer import load_lm_tokenizer
    from workbench.lm.train import LMTrainConfig, train_lm

    shards = work / "shards"
    write_token_shards(shards, synthetic_utterances(s.n_utterances),
                       CodecInfo(CODEBOOK_SIZE, FRAME_RATE_HZ, 16000, "synthetic"))
    total_steps = s.warmup_steps + s.steps
    # The cpu profile's recipe; eval and checkpoint only at the end (outside the timed steps),
    # logging every 10 steps as in the profile; peak given so no matmul runs at start-up.
    config = for_profile(
        LMTrainConfig, "cpu", preset=s.preset, batch_size=s.batch_size, max_steps=total_steps,
        num_threads=s.threads, peak_flops_per_s=peak_flops_per_s, progress=False,
        eval_every=10**9, checkpoint_every=10**9, eval_batches=1, log_every=10,
    )
    root = work / "runs"

    def workbench_run(index: int) -> Any:
        return train_lm(config, shards, run_id=f"bench-{index}", root=root)

    # Warm-up run (imports, tokenizer, first-call kernels); its tokenizer fixes the batches.
    first = workbench_run(0)
    lm_tok = load_lm_tokenizer(Path(first.run_dir) / "tokenizer")
    tok, layout = lm_tok.tokenizer, lm_tok.layout
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else layout.speech_generation_end
    _, utterances = read_token_shards(shards)
    train_utts, _ = split_utterances(utterances, train_split=config.train_split, valid_split=config.valid_split,
                                     valid_fraction=config.valid_fraction)
    train_set = encode_utterances(train_utts, tok, layout, config.max_seq_len, config.too_long)

    def make_stream() -> BatchStream:
        return BatchStream(train_set, config.batch_size, pad_id, seed=config.seed)

    stream = make_stream()
    batches = [next(stream) for _ in range(total_steps)]
    if sum(b.n_tokens for b in batches) != first.tokens_seen:
        raise RuntimeError(f"replicated batches hold {sum(b.n_tokens for b in batches)} tokens, train_lm saw "
                           f"{first.tokens_seen}: the baseline would not train on the same batches")

    def bare_run() -> None:
        model = build_model(config.preset, layout, seed=config.seed, bos_token_id=tok.bos_token_id,
                            pad_token_id=pad_id, max_position_embeddings=config.max_seq_len)
        bare_training_loop(model, batches, config)

    wb_rounds: list[list[float]] = []
    bare_rounds: list[list[float]] = []
    for r in range(s.rounds):
        # Alternate which side goes first so slow drifts in machine load hit both.
        order = ("wb", "bare") if r % 2 else ("bare", "wb")
        for side in order:
            if side == "wb":
                stamps, res = step_end_times(lambda: workbench_run(r + 1))
                if res.tokens_seen != first.tokens_seen:
                    raise RuntimeError("train_lm saw different batches between rounds")
                wb_rounds.append(step_durations(stamps, s.warmup_steps, s.steps))
            else:
                stamps, _ = step_end_times(bare_run)
                bare_rounds.append(step_durations(stamps, s.warmup_steps, s.steps))

    timed = batches[s.warmup_steps:]
    tokens = sum(b.n_tokens for b in timed)
    padded = sum(b.input_ids.numel() for b in timed)
    model_config = build_llama_config(config.preset, layout, bos_token_id=tok.bos_token_id, pad_token_id=pad_id,
                                      max_position_embeddings=config.max_seq_len)
    flops = sum(training_flops(model_config, b.seq_lens).with_embedding for b in timed)
    flops_ne = sum(training_flops(model_config, b.seq_lens).non_embedding for b in timed)
    wb_s = sum(min(step) for step in zip(*wb_rounds))
    bare_s = sum(min(step) for step in zip(*bare_rounds))
    wb_tps, bare_tps = tokens / wb_s, tokens / bare_s

    result.rows.append(Row("train tokens/s: workbench train_lm loop", wb_tps, "tok/s",
                           "bare fwd/bwd/AdamW loop", bare_tps, ">= 0.95"))
    counts = count_params(model_config)
    result.notes.append(
        f"training: {s.preset} ({counts.n_params / 1e6:.2f}M params, {counts.n_params_non_embedding / 1e6:.2f}M "
        f"non-embedding, vocab {model_config.vocab_size}), batch {s.batch_size}, sequence lengths "
        f"{min(n for b in timed for n in b.seq_lens)}-{max(n for b in timed for n in b.seq_lens)}, "
        f"{tokens} real tokens ({tokens / padded:.0%} of padded) in {s.steps} timed steps after "
        f"{s.warmup_steps} warm-up, per-step best of {s.rounds} round(s)")
    result.step_gap_ms = (wb_s - bare_s) / s.steps * 1e3
    per_round = [sum(b) / sum(w) for w, b in zip(wb_rounds, bare_rounds)]
    per_step = sorted(min(b) / min(w) for w, b in zip(zip(*wb_rounds), zip(*bare_rounds)))
    result.notes.append(
        f"training: per-step time workbench {wb_s / s.steps * 1e3:.1f} ms, bare {bare_s / s.steps * 1e3:.1f} ms, "
        f"gap {(wb_s - bare_s) / s.steps * 1e3:+.1f} ms; ratio per round (sums) "
        f"{', '.join(f'{x:.3f}' for x in per_round)}; median per-step ratio {per_step[len(per_step) // 2]:.3f}; "
        f"train_lm's own tokens_per_s (in-loop clock, all steps of the warm-up run) {first.tokens_per_s:.0f}")
    model = build_model(config.preset, layout, seed=config.seed, bos_token_id=tok.bos_token_id,
                        pad_token_id=pad_id, max_position_embeddings=config.max_seq_len)
    result.overhead_ms.update(measure_overheads(model, timed, make_stream, config,
                                                repeats=2 if s.steps < 5 else 5, log_dir=work / "log-cost"))
    return TrainTiming(tokens=tokens, flops=flops, flops_non_embedding=flops_ne, workbench_s=wb_s, bare_s=bare_s)


def bench_own_sample_noise(s: Settings, peak_flops_per_s: float, work: Path, result: LMSpeedResult) -> None:
    """Row 6: what scheduled sampling on the model's own samples costs per training step."""
    from workbench.config import for_profile
    from workbench.lm.train import LMTrainConfig, train_lm

    shards = work / "shards"  # written by bench_training
    total_steps = s.warmup_steps + s.steps
    configs = {source: for_profile(
        LMTrainConfig, "cpu", preset=s.preset, batch_size=s.batch_size, max_steps=total_steps,
        num_threads=s.threads, peak_flops_per_s=peak_flops_per_s, progress=False, eval_every=10**9,
        checkpoint_every=10**9, eval_batches=1, log_every=10, speech_input_noise=0.4,
        speech_input_noise_source=source) for source in ("uniform", "model")}
    rounds: dict[str, list[list[float]]] = {"uniform": [], "model": []}
    tokens = 0
    for r in range(s.rounds):
        for source in (("uniform", "model") if r % 2 else ("model", "uniform")):
            stamps, res = step_end_times(lambda: train_lm(configs[source], shards, run_id=f"noise-{source}-{r}",
                                                          root=work / "runs"))
            rounds[source].append(step_durations(stamps, s.warmup_steps, s.steps))
            tokens = res.tokens_seen
    own_s = sum(min(step) for step in zip(*rounds["model"]))
    uniform_s = sum(min(step) for step in zip(*rounds["uniform"]))
    per_token = tokens / total_steps  # same batches on both sides: tokens per step is equal
    result.rows.append(Row("train tokens/s: own-sample input noise", per_token * s.steps / own_s, "tok/s",
                           "uniform input noise (one pass)", per_token * s.steps / uniform_s))


# ---------------------------------------------------------------------------------------------
# 3 + 4: generation
# ---------------------------------------------------------------------------------------------


def bench_generation(s: Settings, result: LMSpeedResult) -> None:
    from workbench.lm.layout import build_inference_prompt
    from workbench.lm.model import build_model
    from workbench.lm.text_tokenizer import train_text_tokenizer

    rng = random.Random(1)
    texts = [_text(rng) for _ in range(200)]
    lm_tok = train_text_tokenizer(texts, CODEBOOK_SIZE, text_vocab_size=512)
    tok, layout = lm_tok.tokenizer, lm_tok.layout
    pad_id = tok.pad_token_id
    model = build_model(s.preset, layout, seed=0, bos_token_id=tok.bos_token_id, pad_token_id=pad_id).eval()
    prompt = build_inference_prompt(tok, layout, texts[0])
    ids = torch.tensor([prompt.input_ids])
    mask = torch.ones_like(ids)
    n = s.new_tokens
    # min_new_tokens = max_new_tokens: the end token is suppressed, so every call produces exactly
    # n tokens whatever the random model prefers.
    common = dict(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, max_length=None,
                  pad_token_id=pad_id)
    greedy = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    sampled = dict(do_sample=True, temperature=0.8, top_p=1.0, top_k=0)
    outputs: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def gen(name: str, use_cache: bool) -> None:
        outputs[name] = model.generate(**common, **greedy, use_cache=use_cache)

    @torch.no_grad()
    def batched() -> None:
        torch.manual_seed(0)
        out = model.generate(**common, **sampled, num_return_sequences=8)
        assert out.shape == (8, ids.shape[1] + n), out.shape

    @torch.no_grad()
    def sequential() -> None:
        for seed in range(8):
            torch.manual_seed(seed)
            out = model.generate(**common, **sampled, num_return_sequences=1)
            assert out.shape == (1, ids.shape[1] + n), out.shape

    gen("cached", True)  # warm-up
    t_cache = t_nocache = t_batched = t_seq = math.inf
    for _ in range(s.gen_repeats):  # interleaved so load changes hit both sides
        t_cache = min(t_cache, best_of(lambda: gen("cached", True), 1))
        t_nocache = min(t_nocache, best_of(lambda: gen("uncached", False), 1))
    batched()  # warm-up
    for _ in range(s.gen_repeats):
        t_seq = min(t_seq, best_of(sequential, 1))
        t_batched = min(t_batched, best_of(batched, 1))
    for name in ("cached", "uncached"):
        if outputs[name].shape[1] != ids.shape[1] + n:
            raise RuntimeError(f"{name} generation made {outputs[name].shape[1] - ids.shape[1]} tokens, not {n}")
    same = torch.equal(outputs["cached"], outputs["uncached"])
    result.rows.append(Row("generate tokens/s: KV cache", n / t_cache, "tok/s", "no cache (use_cache=False)",
                           n / t_nocache))
    result.rows.append(Row("best-of-8 samples/s: one batched generate", 8 / t_batched, "samples/s",
                           "8 sequential generate calls", 8 / t_seq))
    bench_fast_loop(s, result, model, ids, mask, layout, pad_id)
    result.notes.append(
        f"generation: {s.preset}, prompt {len(prompt)} tokens, {n} new tokens (greedy for cache vs no cache, "
        f"identical tokens: {'yes' if same else 'no (fp32 rounding flips an argmax of the random model)'}), "
        f"best of {s.gen_repeats}; walls: cached {t_cache:.2f} s, uncached {t_nocache:.2f} s, "
        f"best-of-8 batched {t_batched:.2f} s, sequential {t_seq:.2f} s")


def bench_fast_loop(s: Settings, result: LMSpeedResult, model: Any, ids: torch.Tensor, mask: torch.Tensor,
                    layout: Any, pad_id: int) -> None:
    """5: the lean sampling loop (workbench.lm.fast_generate) against `model.generate`, seeded
    sampling at temperature 0.8 with the speech-only mask, batch 1 and best-of-8, exactly `n`
    new tokens on both sides (transformers' own min-new-tokens processor on both)."""
    from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor, TemperatureLogitsWarper

    from workbench.lm.fast_generate import fast_generate
    from workbench.lm.generate import _SpeechOnly

    n, end = s.new_tokens, layout.speech_generation_end
    speech_only = _SpeechOnly(layout, model.config.vocab_size)
    speech_only.blocked = speech_only.blocked.to(ids.device)
    min_new = MinNewTokensLengthLogitsProcessor(ids.shape[1], n, end)
    outputs: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def hf(k: int) -> None:
        torch.manual_seed(0)
        outputs[f"hf{k}"] = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=n, max_length=None, do_sample=True,
            temperature=0.8, top_p=1.0, top_k=0, num_return_sequences=k, eos_token_id=end, pad_token_id=pad_id,
            min_new_tokens=n, logits_processor=LogitsProcessorList([speech_only]))

    def fast(k: int) -> None:
        torch.manual_seed(0)
        # generate's order: its min-new-tokens processor, the custom one, then temperature
        outputs[f"fast{k}"] = fast_generate(
            model, ids, mask, max_new_tokens=n, eos_token_id=end, pad_token_id=pad_id, do_sample=True,
            processors=[min_new, speech_only, TemperatureLogitsWarper(0.8)], num_return_sequences=k)

    for k in (1, 8):
        hf(k), fast(k)  # warm-up
        t_hf = t_fast = math.inf
        for _ in range(max(2, s.gen_repeats)):  # interleaved so load changes hit both sides
            t_hf = min(t_hf, best_of(lambda: hf(k), 1))
            t_fast = min(t_fast, best_of(lambda: fast(k), 1))
        same = torch.equal(outputs[f"hf{k}"], outputs[f"fast{k}"])
        label = "batch 1" if k == 1 else "best-of-8"
        result.rows.append(Row(f"sample tokens/s: lean loop, {label}", k * n / t_fast, "tok/s",
                               f"model.generate, {label}", k * n / t_hf, ">= 3"))
        result.notes.append(f"lean loop, {label}: identical samples to model.generate with seed 0: "
                            f"{'yes' if same else 'NO'}; walls {t_fast:.3f} s vs {t_hf:.3f} s")


@contextlib.contextmanager
def _session(s: Settings) -> Iterator[LMSpeedResult]:
    """The settings every benchmark run shares: `s.threads` torch threads and no transformers
    chatter or progress bars, all restored afterwards."""
    from transformers.utils import logging as hf_logging

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bars
    try:
        yield LMSpeedResult(rows=[])
    finally:
        torch.set_num_threads(previous_threads)
        hf_logging.enable_progress_bar()


def _machine_note(s: Settings, load_start: float) -> str:
    return (f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {s.threads} thread(s); load average "
            f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")


def generation_only(s: Settings) -> LMSpeedResult:
    """Only rows 3-5 (no training benchmark): for a quick pass over the cpu ladder."""
    with _session(s) as result:
        load_start = os.getloadavg()[0]
        start = time.perf_counter()
        bench_generation(s, result)
        result.notes.insert(0, f"{_machine_note(s, load_start)}; total {time.perf_counter() - start:.0f} s")
    return result


# ---------------------------------------------------------------------------------------------


def run(s: Settings) -> LMSpeedResult:
    from workbench.lm.train import measure_peak_flops

    with _session(s) as result:
        load_start = os.getloadavg()[0]
        start = time.perf_counter()

        def peak() -> float:  # best over sizes: small ones may run from cache, large ones not
            return max(measure_peak_flops(torch.device("cpu"), torch.float32, size=n, repeats=10 if n <= 512 else 5)
                       for n in s.peak_sizes)

        peak_start = peak()
        with tempfile.TemporaryDirectory(prefix="lm_speed_") as tmp:
            train = bench_training(s, peak_start, Path(tmp), result)
            bench_own_sample_noise(s, peak_start, Path(tmp), result)
        bench_generation(s, result)
        peak_end = peak()
        best_peak = max(peak_start, peak_end)
        result.rows[1:1] = [
            Row("train MFU: workbench loop FLOP/s", train.flops / train.workbench_s / 1e9, "GFLOP/s",
                "fp32 matmul peak", best_peak / 1e9),
            Row("train MFU: bare loop FLOP/s", train.flops / train.bare_s / 1e9, "GFLOP/s",
                "fp32 matmul peak", best_peak / 1e9),
        ]
        result.notes.insert(2, (
            f"training: MFU counts N = all parameters (Chinchilla); with N = non-embedding parameters "
            f"workbench {train.flops_non_embedding / train.workbench_s / best_peak:.1%}, "
            f"bare {train.flops_non_embedding / train.bare_s / best_peak:.1%}"))
        result.notes.insert(0, (
            f"{_machine_note(s, load_start)}; fp32 matmul peak (best of "
            f"{'/'.join(f'{n}^2' for n in s.peak_sizes)}) {peak_start / 1e9:.1f} GFLOP/s at start, {peak_end / 1e9:.1f} at end (max used); "
            f"total {time.perf_counter() - start:.0f} s"))
    return result


def format_result(result: LMSpeedResult) -> str:
    lines = [f"{'measurement':<44} {'value':>10} {'unit':<9} {'baseline':<30} {'baseline':>10} {'ratio':>7}  target"]
    for r in result.rows:
        lines.append(f"{r.name:<44} {r.value:10.1f} {r.unit:<9} {r.baseline:<30} {r.baseline_value:10.1f} "
                     f"{r.ratio:7.3f}  {r.target}")
    if result.overhead_ms:
        lines.append("")
        lines.append("workbench loop work beyond the bare loop, per step, each piece timed alone:")
        for name, ms in result.overhead_ms.items():
            lines.append(f"  {name:<62} {ms:8.2f} ms")
        pieces = sum(ms for name, ms in result.overhead_ms.items() if not name.startswith(" "))
        lines.append(f"  {'sum of the pieces':<62} {pieces:8.2f} ms   (measured step gap "
                     f"{result.step_gap_ms:+.2f} ms)")
    lines.append("")
    lines.extend(f"- {note}" for note in result.notes)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> LMSpeedResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-1m", help="LM preset (cpu ladder)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=0, help="timed training steps per round (default 12, quick 3)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed first steps (default 2, quick 1)")
    parser.add_argument("--rounds", type=int, default=0, help="alternating rounds of both loops (default 4, quick 1)")
    parser.add_argument("--batch-size", type=int, default=0, help="sequences per step (default 8, quick 4)")
    parser.add_argument("--new-tokens", type=int, default=0, help="generated tokens (default 200, quick 24)")
    parser.add_argument("--repeats", type=int, default=0, help="generation repeats, best kept (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds) to check the script works")
    parser.add_argument("--generation-only", action="store_true",
                        help="skip the training benchmark (rows 3-5 only)")
    args = parser.parse_args(argv)
    s = settings_from_args(args)
    if s.warmup_steps < 1 or s.steps < 1 or s.rounds < 1:
        raise SystemExit(f"--warmup-steps {s.warmup_steps}, --steps {s.steps}, --rounds {s.rounds}: all must be >= 1")
    result = generation_only(s) if args.generation_only else run(s)
    print(format_result(result))
    return result


if __name__ == "__main__":
    main()
