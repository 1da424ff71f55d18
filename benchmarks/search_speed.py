"""Speed of the search machinery on a small random LM (a cpu-ladder size), as ratios against baselines
measured in the same run:

1. best-of-8 as ONE batched, KV-cached `generate` call vs 8 sequential single-sample calls
   (baseline: the sequential calls); same number of new tokens per sequence.
2. one beam step (B=2 beams × N=4 continuations, M=25 tokens, continuing from the beams' cached
   prefixes: fork rows, sample M tokens, prune) vs plain batched sampling of the same 8×M tokens
   with `generate` from the prompt (baseline). Also shown: the same beam step re-running the whole
   prefix without a cache (what a search that does not keep past_key_values would pay), and the
   full beam step with codec decoding of the 8 partial clips (untrained codec of the given profile)
   and, optionally, a verifier scoring them.

    .venv/bin/python benchmarks/search_speed.py --preset cpu-3m --prefix-tokens 100
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ as a folder of scripts
from timing import best_of  # noqa: E402


@dataclass(frozen=True)
class Timing:
    name: str
    wall_s: float
    baseline: str
    baseline_s: float

    @property
    def ratio(self) -> float:
        return self.wall_s / self.baseline_s




def main(argv: list[str] | None = None) -> None:
    from transformers.utils import logging as hf_logging

    from workbench.codec.config import CodecConfig
    from workbench.codec.interface import WorkbenchCodec
    from workbench.codec.model import build_model as build_codec
    from workbench.config import for_profile
    from workbench.lm.generate import SamplingConfig, generate_speech_tokens
    from workbench.lm.layout import build_inference_prompt
    from workbench.lm.model import build_model
    from workbench.lm.text_tokenizer import train_text_tokenizer
    from workbench.search.base import Scorer, SearchCompute, VoicePrompt
    from workbench.search.decoding import Sampler, extend, prefill

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-3m", help="LM preset (cpu ladder)")
    parser.add_argument("--codec-profile", default="cpu", help="codec profile (codebook size, decode cost)")
    parser.add_argument("--new-tokens", type=int, default=100, help="tokens per sequence in benchmark 1")
    parser.add_argument("--prefix-tokens", type=int, default=100, help="beam prefix length before the timed step")
    parser.add_argument("--step-tokens", type=int, default=25)
    parser.add_argument("--verifier", default="", help="also score the partial clips (e.g. resemblyzer)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest is reported")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        codec = WorkbenchCodec(build_codec(for_profile(CodecConfig, args.codec_profile)))
    texts = ["the quick brown fox jumps over the lazy dog", "speech synthesis with a plain llama"] * 4
    lm_tok = train_text_tokenizer(texts, codebook_size=codec.codebook_size, text_vocab_size=300)
    tok, layout = lm_tok.tokenizer, lm_tok.layout
    model = build_model(args.preset, layout, seed=0, pad_token_id=tok.pad_token_id).eval()
    n_params = sum(p.numel() for p in model.parameters())
    prompt = build_inference_prompt(tok, layout, texts[0])
    # A random model over ~1,000 codes samples end-of-speech with probability ~1e-3 per token, so
    # nearly every sequence runs to the cap and both sides generate the same number of tokens.
    n_new = args.new_tokens

    def batched() -> int:
        out = generate_speech_tokens(model, layout, [prompt], SamplingConfig(num_return_sequences=8, seed=0,
                                                                             max_new_tokens=n_new))
        return out.n_tokens_generated

    def sequential() -> int:
        return sum(generate_speech_tokens(model, layout, [prompt], SamplingConfig(seed=s, max_new_tokens=n_new))
                   .n_tokens_generated for s in range(8))

    batched()  # warm-up (first-call allocations)
    t_seq = best_of(sequential, args.repeats)
    t_batch = best_of(batched, args.repeats)

    width, n_cont, m = 2, 4, args.step_tokens
    # A reference clip for speaker verifiers: 2 s of the (untrained) codec's audio.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        ref_codes = torch.randint(0, codec.codebook_size, (int(2 * codec.frame_rate_hz),))
    reference = VoicePrompt(codes=ref_codes, text=texts[1], wav=codec.decode(ref_codes[None])[0],
                            sample_rate=codec.sample_rate)
    ids = prompt.input_ids

    def beam_state():  # two beams holding a prefix of `prefix_tokens` tokens, cached
        state = prefill(model, ids).select([0, 0])
        return extend(model, state, Sampler(model, layout, SamplingConfig(), seed=0), args.prefix_tokens)

    def beam_step(state, decode: bool, scorer=None, verifier=None):  # type: ignore[no-untyped-def]
        sampler = Sampler(model, layout, SamplingConfig(), seed=1)
        state = state.select(torch.arange(width).repeat_interleave(n_cont))
        state = extend(model, state, sampler, m)
        if decode:
            codes = [layout.codes_from_ids(state.generated(r)) for r in range(state.n_rows)]
            wavs = scorer.decode(codes)
            if verifier is not None:
                scorer.score(verifier, codes, wavs)
        return state.select([0, 1])

    def timed_beam(decode: bool, verifier=None) -> float:  # type: ignore[no-untyped-def]
        best = float("inf")
        for _ in range(args.repeats):
            state = beam_state()  # not timed: the prefix exists before the step
            scorer = Scorer(codec, texts[0], reference, SearchCompute())
            start = time.perf_counter()
            beam_step(state, decode, scorer, verifier)
            best = min(best, time.perf_counter() - start)
        return best

    def no_cache_step() -> None:
        # What a search without past_key_values pays: every one of the 8 rows re-runs prompt +
        # prefix (one batched forward), then samples the same M tokens.
        from transformers import DynamicCache

        from workbench.search.decoding import DecodeState

        state = beam_state()
        sequences = state.sequences.repeat_interleave(n_cont, dim=0)
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=sequences[:, :-1], use_cache=True, logits_to_keep=1, cache=cache)
        rows = sequences.shape[0]
        fresh = DecodeState(cache=cache, sequences=sequences, prompt_len=state.prompt_len,
                            ended=torch.zeros(rows, dtype=torch.bool), n_new=state.n_new.repeat_interleave(n_cont))
        extend(model, fresh, Sampler(model, layout, SamplingConfig(), seed=1), m)

    def timed_no_cache() -> float:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            no_cache_step()
            best = min(best, time.perf_counter() - start)
        return best - t_prefix

    def plain_sampling() -> None:
        generate_speech_tokens(model, layout, [prompt], SamplingConfig(num_return_sequences=width * n_cont, seed=0,
                                                                       max_new_tokens=m))

    t_plain = best_of(plain_sampling, args.repeats)
    t_beam_lm = timed_beam(decode=False)
    t_beam_decode = timed_beam(decode=True)
    t_prefix = best_of(beam_state, args.repeats)  # subtracted: building the beams is not the step
    t_no_cache = timed_no_cache()
    timings = [
        Timing("best-of-8, one batched generate", t_batch, "8 sequential samples", t_seq),
        Timing(f"beam step LM only (B={width}, N={n_cont}, M={m}, cached prefix {args.prefix_tokens})", t_beam_lm,
               f"batched sampling of {width * n_cont}x{m} tokens", t_plain),
        Timing("beam step re-running prompt + prefix without cache", t_no_cache,
               f"batched sampling of {width * n_cont}x{m} tokens", t_plain),
        Timing("beam step LM + codec decode of 8 partials", t_beam_decode,
               f"batched sampling of {width * n_cont}x{m} tokens", t_plain),
    ]
    if args.verifier:
        from workbench import verifiers

        verifier = verifiers.get(args.verifier)
        timed_beam(decode=True, verifier=verifier)  # warm-up: model load
        t_full = timed_beam(decode=True, verifier=verifier)
        timings.append(Timing(f"beam step LM + decode + {args.verifier} on 8 partials", t_full,
                              f"batched sampling of {width * n_cont}x{m} tokens", t_plain))

    print(f"LM {args.preset} ({n_params / 1e6:.2f}M params, vocab {layout.vocab_size}), codec {args.codec_profile} "
          f"({codec.codebook_size} codes), prompt {len(prompt)} tokens, {args.threads} thread(s), "
          f"best of {args.repeats}")
    print(f"{'measurement':<78} {'wall s':>8}  {'ratio':>7}  baseline (wall s)")
    for t in timings:
        print(f"{t.name:<78} {t.wall_s:8.3f}  {t.ratio:6.2f}x  {t.baseline} ({t.baseline_s:.3f})")
    print(f"speed-up of batching best-of-8: {t_seq / t_batch:.2f}x")


if __name__ == "__main__":
    main()
