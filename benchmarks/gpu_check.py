"""One GPU check of the paper-scale path, in at most 8 minutes on one GPU; prints ratios measured in
the same run and writes them as JSON.

1. LM training step, the paper's Llama-3.2-1B shape at max_seq_len 2048, batch 8 rows, bf16
   autocast, through the workbench's own `train_lm` on synthetic token shards (1,200 utterances
   of 150-250 codes from a 65,536-code codebook, a ~40-token text prompt each, like Kathleen under
   X-codec2): real-token tokens/s and MFU (FLOPs of `workbench.lm.flops`, N = all parameters,
   over the bf16 dense peak: 989 TFLOP/s for H100/H200) for
   (a) one utterance per row, padded (the measured baseline: MFU 0.04-0.07 on an H200),
   (b) packed rows (`packing`), (c) packed rows with `compile` (inductor).
   Each is the loop's own log window after the warm-up steps (compilation included in the
   first window, not in the measured one).
2. Codec: the gpu-1b codec profile (219M parameters, GAN on, batch 16 x 6 s) on synthetic
   harmonic audio through `train_codec`: steps/s and peak GPU memory; when the batch does not fit,
   the batch is halved until it does and the check says so.
3. Generation, best-of-8 with the 1B shape in bf16: the lean KV-cached loop
   (`workbench.lm.fast_generate`, what `generate_speech_tokens` uses) against `model.generate`,
   tokens/s, and whether both drew the same samples for one seed.

Nothing is downloaded: the package is imported from this checkout, data are synthesised (or
``--shards DIR`` names token shards to train on instead).

    python benchmarks/gpu_check.py --out gpu_check.json     # on a GPU machine (<= 8 min)
    python benchmarks/gpu_check.py --tiny                    # CPU, seconds: cpu-0.1m, smoke codec
    python benchmarks/gpu_check.py --cpu                     # CPU, minutes: cpu-1m, inductor compile

``--tiny`` is what the test suite runs so that the script never rots; its compiled arm uses the
"eager" backend (Dynamo tracing only, no kernels), so its compile ratio means nothing. ``--cpu``
is the no-regression check of `compile` on CPU with inductor (about 2 minutes of compiling).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the package from this checkout, whatever is installed

import torch  # noqa: E402

WORDS = ("the a of and to in is was that for on with as by at from his her they we you it this "
         "quick brown fox jumps over lazy dog river mountain evening morning window garden city "
         "small large quiet loud bright dark cold warm old new early late under between after").split()
DENSE_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
                   "L40S": 362e12, "4090": 165e12}


@dataclass(frozen=True)
class Mode:
    name: str
    preset: str
    max_seq_len: int
    batch_size: int
    codebook: int
    n_utterances: int
    eager_steps: int
    compiled_steps: int
    compile_backend: str
    codec_profile: str
    codec_steps: int
    gen_new_tokens: int
    gen_repeats: int


MODES = {
    "gpu": Mode("gpu", "llama-3.2-1b", 2048, 8, 65_536, 1200, 12, 16, "inductor", "gpu-1b", 6, 200, 2),
    "cpu": Mode("cpu", "cpu-1m", 1024, 8, 1000, 400, 20, 30, "inductor", "cpu", 4, 100, 2),
    "tiny": Mode("tiny", "cpu-0.1m", 512, 4, 1000, 80, 4, 4, "eager", "smoke", 2, 16, 1),
}


@dataclass
class Report:
    mode: str
    device: str
    torch_version: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, baseline: str = "", baseline_value: float = math.nan,
            target: str = "") -> None:
        ratio = value / baseline_value if baseline_value and math.isfinite(baseline_value) else math.nan
        self.rows.append(dict(name=name, value=value, unit=unit, baseline=baseline,
                              baseline_value=baseline_value, ratio=ratio, target=target))

    def format(self) -> str:
        lines = [f"gpu_check ({self.mode}) on {self.device}, torch {self.torch_version}",
                 f"{'measurement':<46} {'value':>12} {'unit':<8} {'baseline':<34} {'baseline':>12} {'ratio':>7}  target"]
        for r in self.rows:
            base = f"{r['baseline_value']:12.4g}" if math.isfinite(r["baseline_value"]) else f"{'':>12}"
            ratio = f"{r['ratio']:7.3f}" if math.isfinite(r["ratio"]) else f"{'':>7}"
            lines.append(f"{r['name']:<46} {r['value']:12.4g} {r['unit']:<8} {r['baseline']:<34} {base} {ratio}  {r['target']}")
        lines.append("")
        lines.extend(f"- {n}" for n in self.notes)
        return "\n".join(lines)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(22, 30))) + "."


def synthetic_shards(out: Path, n: int, codebook: int) -> Path:
    from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards

    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    utts = [TokenizedUtterance(f"u{i:05d}", "spk", _text(rng), "valid" if i % 40 == 0 else "train",
                               torch.randint(0, codebook, (rng.randint(150, 250),), generator=gen))
            for i in range(n)]
    write_token_shards(out, utts, CodecInfo(codebook, 50.0, 16000, "synthetic"))
    return out


def peak_flops(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in DENSE_BF16_PEAK.items():
            if key in name:
                return value, f"bf16 dense datasheet peak of {name}"
    from workbench.lm.train import measure_peak_flops

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = 8192 if device.type == "cuda" else 512
    return measure_peak_flops(device, dtype, size=size), f"measured {dtype} matmul peak ({size}^2)"


# ---------------------------------------------------------------------------------------------
# 1. LM training step
# ---------------------------------------------------------------------------------------------


def lm_window(run_dir: str) -> tuple[float, float]:
    """(tokens/s, FLOP/s) of the loop's last log window."""
    from workbench.runs import read_metrics

    logs = [m for m in read_metrics(run_dir) if "train_loss" in m]
    if len(logs) < 2:
        raise RuntimeError(f"{run_dir}: fewer than 2 log windows")
    last, before = logs[-1], logs[-2]
    tokens = last["tokens_seen"] - before["tokens_seen"]
    seconds = tokens / last["tokens_per_s"]
    return last["tokens_per_s"], (last["flops"] - before["flops"]) / seconds


def bench_lm(mode: Mode, shards: Path, root: Path, peak: float, report: Report) -> None:
    from workbench.config import for_profile
    from workbench.lm.train import LMTrainConfig, train_lm

    base = for_profile(LMTrainConfig, "gpu-1b" if mode.name == "gpu" else "cpu")
    arms = {
        "padded": dict(packing=False, compile=False, max_steps=mode.eager_steps),
        "packed": dict(packing=True, compile=False, max_steps=mode.eager_steps),
        "packed+compile": dict(packing=True, compile=True, max_steps=mode.compiled_steps),
    }
    results: dict[str, tuple[float, float, float]] = {}
    for name, arm in arms.items():
        steps = arm["max_steps"]
        config = for_profile(
            LMTrainConfig, "gpu-1b" if mode.name == "gpu" else "cpu", preset=mode.preset,
            max_seq_len=mode.max_seq_len, batch_size=mode.batch_size, grad_accum=1, lr=base.lr,
            eval_every=10**9, eval_batches=1, checkpoint_every=10**9, log_every=steps // 2, progress=False,
            peak_flops_per_s=peak, compile_backend=mode.compile_backend,
            num_threads=1 if mode.name != "gpu" else 0, **arm)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = train_lm(config, shards, run_id=f"lm-{name.replace('+', '-')}", root=root)
        wall = time.perf_counter() - start
        tokens_per_s, flops_per_s = lm_window(result.run_dir)
        from workbench.runs import read_metrics

        attention = next((m.get("attention") for m in read_metrics(result.run_dir) if m.get("event") == "start"), "?")
        # train_lm ends with a checkpoint (1B: weights + AdamW state, ~20 GB): free the disk now
        shutil.rmtree(result.run_dir, ignore_errors=True)
        memory = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else math.nan
        results[name] = (tokens_per_s, flops_per_s / peak, memory)
        gpu_memory = f", peak GPU memory {memory:.1f} GB" if math.isfinite(memory) else ""
        report.notes.append(f"LM {name}: {steps} steps in {wall:.0f} s wall (start-up and compile included), "
                            f"window tokens/s {tokens_per_s:,.0f}, MFU {flops_per_s / peak:.3f}{gpu_memory}, "
                            f"final train loss {result.final_train_loss:.3f}, attention {attention}")
    padded, packed, compiled = results["padded"], results["packed"], results["packed+compile"]
    report.add(f"LM step tokens/s, {mode.preset} packed", packed[0], "tok/s", "padded rows", padded[0])
    report.add(f"LM MFU, {mode.preset} packed", packed[1], "of peak", "padded rows", padded[1],
               ">= 0.40 (H200)" if mode.name == "gpu" else "")
    report.add(f"LM step tokens/s, {mode.preset} packed+compile", compiled[0], "tok/s", "packed, eager", packed[0],
               ">= 1" if mode.name != "tiny" else "")
    report.add(f"LM MFU, {mode.preset} packed+compile", compiled[1], "of peak", "packed, eager", packed[1])


# ---------------------------------------------------------------------------------------------
# 2. Codec
# ---------------------------------------------------------------------------------------------


def synthetic_corpus(out: Path, n: int, seconds: float, sample_rate: int = 16000) -> Path:
    """Harmonic tones with a drifting pitch and a little noise (speech-like spectra, no download)."""
    from workbench.audio import save_audio

    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    rows = []
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    for i in range(n):
        f0 = 90 + 160 * torch.rand(1, generator=gen).item()
        pitch = f0 * (1 + 0.2 * torch.sin(2 * math.pi * 0.7 * t + i))
        phase = 2 * math.pi * torch.cumsum(pitch, 0) / sample_rate
        wav = sum(torch.sin(k * phase) / k for k in range(1, 9)) * 0.1
        wav = wav * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t).abs()) + 0.003 * torch.randn(t.shape, generator=gen)
        save_audio(out / f"s{i:03d}.wav", wav[None].float(), sample_rate)
        rows.append(f"s{i:03d}.wav\tspk{i % 4}\ts{i:03d}\tsynthetic tone {i}")
    (out / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    return out


def bench_codec(mode: Mode, root: Path, report: Report) -> None:
    from workbench.codec.config import CodecConfig
    from workbench.codec.train import train_codec
    from workbench.config import for_profile
    from workbench.runs import read_metrics

    profile = for_profile(CodecConfig, mode.codec_profile)
    corpus = synthetic_corpus(root / "corpus", 24, max(2.0, profile.segment_s + 2.0), profile.sample_rate)
    batch = profile.batch_size
    while batch >= 1:
        config = for_profile(CodecConfig, mode.codec_profile, batch_size=batch, max_steps=mode.codec_steps,
                             log_every=max(1, mode.codec_steps // 2), eval_every=10**9,
                             checkpoint_every=10**9, n_eval_utterances=1,
                             num_threads=1 if mode.name != "gpu" else None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            start = time.perf_counter()
            result = train_codec(config, corpus, run_id=f"codec-b{batch}", root=root, progress=False)
            wall = time.perf_counter() - start
        except torch.cuda.OutOfMemoryError:
            report.notes.append(f"codec {mode.codec_profile}: batch {batch} x {profile.segment_s:g} s does not fit "
                                f"in GPU memory; halving")
            batch //= 2
            continue
        logs = [m for m in read_metrics(result.run_dir) if "steps_per_s" in m]
        steps_per_s = logs[-1]["steps_per_s"]
        if torch.cuda.is_available():
            memory, where = torch.cuda.max_memory_allocated() / 1e9, "GPU"
        else:
            memory, where = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "host (process peak)"
        report.add(f"codec {mode.codec_profile} steps/s, batch {batch} x {profile.segment_s:g} s", steps_per_s,
                   "steps/s")
        report.add(f"codec {mode.codec_profile} peak {where} memory", memory, "GB")
        report.notes.append(f"codec {mode.codec_profile}: {result.n_params / 1e6:.0f}M parameters, "
                            f"{mode.codec_steps} steps in {wall:.0f} s wall (start-up included), GAN "
                            f"{'on' if config.use_gan else 'off'}, "
                            f"{batch * profile.segment_s * steps_per_s:.1f} s of audio per second of training")
        return
    report.notes.append(f"codec {mode.codec_profile}: not even batch 1 fits")


# ---------------------------------------------------------------------------------------------
# 3. Generation
# ---------------------------------------------------------------------------------------------


def bench_generation(mode: Mode, device: torch.device, report: Report) -> None:
    from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor, TemperatureLogitsWarper

    from workbench.lm.fast_generate import fast_generate
    from workbench.lm.generate import _SpeechOnly
    from workbench.lm.layout import build_inference_prompt
    from workbench.lm.model import build_model
    from workbench.lm.text_tokenizer import train_text_tokenizer

    rng = random.Random(1)
    texts = [_text(rng) for _ in range(200)]
    lm_tok = train_text_tokenizer(texts, mode.codebook, text_vocab_size=512)
    tok, layout = lm_tok.tokenizer, lm_tok.layout
    model = build_model(mode.preset, layout, seed=0, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    prompt = build_inference_prompt(tok, layout, texts[0])
    ids = torch.tensor([prompt.input_ids], device=device)
    mask = torch.ones_like(ids)
    n, end, pad = mode.gen_new_tokens, layout.speech_generation_end, tok.pad_token_id
    speech_only = _SpeechOnly(layout, model.config.vocab_size)
    speech_only.blocked = speech_only.blocked.to(device)
    min_new = MinNewTokensLengthLogitsProcessor(ids.shape[1], n, end, device=str(device))
    outputs: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def hf() -> None:
        torch.manual_seed(0)
        outputs["hf"] = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, max_length=None,
                                       do_sample=True, temperature=0.8, top_p=1.0, top_k=0, num_return_sequences=8,
                                       eos_token_id=end, pad_token_id=pad, min_new_tokens=n,
                                       logits_processor=LogitsProcessorList([speech_only]))
        _sync()

    def fast() -> None:
        torch.manual_seed(0)
        outputs["fast"] = fast_generate(model, ids, mask, max_new_tokens=n, eos_token_id=end, pad_token_id=pad,
                                        do_sample=True, num_return_sequences=8,
                                        processors=[min_new, speech_only, TemperatureLogitsWarper(0.8)])
        _sync()

    hf(), fast()  # warm-up
    t_hf = t_fast = math.inf
    for _ in range(max(1, mode.gen_repeats)):
        for fn, which in ((hf, "hf"), (fast, "fast")):
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if which == "hf":
                t_hf = min(t_hf, elapsed)
            else:
                t_fast = min(t_fast, elapsed)
    same = torch.equal(outputs["hf"].cpu(), outputs["fast"].cpu())
    agree = float((outputs["hf"].cpu() == outputs["fast"].cpu()).float().mean())
    report.add(f"best-of-8 tokens/s, {mode.preset} lean loop", 8 * n / t_fast, "tok/s", "model.generate",
               8 * n / t_hf, ">= 3 (cpu ladder)")
    report.notes.append(f"generation: {mode.preset} in {dtype}, prompt {ids.shape[1]} tokens, 8 x {n} new tokens, "
                        f"best of {mode.gen_repeats}; identical samples for seed 0: {'yes' if same else 'no'} "
                        f"({agree:.1%} of positions agree; bf16 rounding differs between fused and separate "
                        f"matmuls, so a GPU run may diverge after the first differing draw)")


# ---------------------------------------------------------------------------------------------


def run(mode: Mode, shards: Path | None = None, only: tuple[str, ...] = ("lm", "codec", "gen")) -> Report:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    report = Report(mode=mode.name, device=name, torch_version=torch.__version__)
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            root = Path(tmp)
            if "lm" in only:
                peak, peak_how = peak_flops(device)
                report.notes.append(f"MFU denominator: {peak / 1e12:.1f} TFLOP/s ({peak_how})")
                data = shards or synthetic_shards(root / "shards", mode.n_utterances, mode.codebook)
                bench_lm(mode, data, root / "runs", peak, report)
            if "codec" in only:
                bench_codec(mode, root / "codec", report)
            if "gen" in only:
                bench_generation(mode, device, report)
    finally:
        torch.set_num_threads(previous)
    report.notes.append(f"total wall {time.perf_counter() - start:.0f} s")
    if mode.name == "tiny":
        report.notes.append("tiny mode: the compiled arm uses the 'eager' backend (tracing only): its ratio "
                            "checks the plumbing, not compile's speed")
    return report


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--tiny", action="store_true", help="CPU, seconds (what the test suite runs)")
    which.add_argument("--cpu", action="store_true", help="CPU, minutes: compile no-regression check")
    parser.add_argument("--shards", type=Path, default=None, help="token shards to train on (default: synthetic)")
    parser.add_argument("--only", default="lm,codec,gen", help="comma-separated subset of lm,codec,gen")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    mode = MODES["tiny" if args.tiny else "cpu" if args.cpu else "gpu"]
    if mode.name == "gpu" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny or --cpu on a CPU machine")
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = set(only) - {"lm", "codec", "gen"}
    if unknown:
        raise SystemExit(f"--only {args.only!r}: unknown part(s) {sorted(unknown)}")
    report = run(mode, args.shards, only)
    print(report.format(), flush=True)
    if args.out:
        from workbench.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(asdict(report), indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
