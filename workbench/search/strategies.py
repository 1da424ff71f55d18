"""The search strategies of Llasa §5, registered by name.

- ``sample``: one plain sample (the no-search baseline); the budget is ignored.
- ``best_of_n``: N complete samples drawn as one batch through `model.generate`
  (num_return_sequences, KV-cached); the outcome verifier keeps the best.
- ``beam``: beam search with a process verifier. Every M tokens each of B beams has sampled N
  continuations; the B·N partial sequences are decoded and scored and the top B kept (finished
  ones among them are set aside). Beams continue from their own KV cache, never re-running the
  prompt or the prefix. The outcome verifier makes the final pick among complete sequences.
- ``partial_mix``: the paper's best arm: beam search with the process verifier for the first
  `partial_s` seconds only, then best-of-N with the outcome verifier over full completions of
  the surviving prefixes (budget completions in all, spread evenly over the prefixes).

All take one `SearchRequest` (the `SearchStrategy` signature, `workbench.search.base`) and return
a `SearchResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch

from workbench.lm.generate import generate_speech_tokens, tts_prompt
from workbench.lm.guidance import guidance_for
from workbench.lm.interleaved import is_interleaved, n_units_in
from workbench.lm.layout import TokenLayout, TokenSequence
from workbench.search.base import (Candidate, Scorer, SearchCompute, SearchError, SearchRequest, SearchResult,
                                   SearchStep, SearchVerifiers, Stopwatch, beam_shape, max_new_tokens_for, register)
from workbench.search.decoding import DecodeState, Sampler, extend, prefill, prefill_flops, token_flops
from workbench.verifiers.base import Verifier

# ---------------------------------------------------------------------------------------------
# Shared pieces


def _prompt_ids(request: SearchRequest) -> list[int]:
    """The prompt in the LM's own layout (`tts_prompt`: Llasa's, or the interleaved one)."""
    tokenizer, layout, text, prompt = request.lm.tokenizer, request.lm.layout, request.text, request.prompt
    if prompt is None:
        return tts_prompt(tokenizer, layout, text).input_ids
    # Llasa's recipe joins transcript and target text; a space keeps the two words apart.
    prompt_text = prompt.text if prompt.text.endswith(" ") else prompt.text + " "
    return tts_prompt(tokenizer, layout, text, prompt_text=prompt_text, prompt_codes=prompt.codes).input_ids


def _token_cap(request: SearchRequest) -> int:
    sampling, options = request.sampling, request.options
    if sampling.max_new_tokens > 0:
        return sampling.max_new_tokens
    return max_new_tokens_for(request.text, request.frame_rate_hz, options.seconds_per_word, options.margin_s)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-call warning that max_new_tokens overrides the checkpoint's
    max_length (expected here: search always caps new tokens), once per candidate batch."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _choose(strategy: str, text: str, budget: int, scorer: Scorer, candidates: list[Candidate],
            verifier: Verifier, compute: SearchCompute, steps: list[SearchStep], clock: Stopwatch) -> SearchResult:
    if not candidates:
        raise SearchError(f"{strategy}: no candidate reached the final choice for text {text!r}")
    chosen = max(range(len(candidates)), key=lambda i: candidates[i].score)  # first of ties
    best = candidates[chosen]
    wav = best.wav if best.wav is not None else torch.zeros(0)
    compute.wall_s = clock.elapsed()
    return SearchResult(strategy=strategy, text=text, budget=int(budget), codes=best.codes, wav=wav,
                        sample_rate=scorer.sample_rate, score=best.score, verifier=verifier.name,
                        chosen_index=chosen, candidates=candidates, compute=compute, steps=steps)


def _score_complete(scorer: Scorer, verifier: Verifier, codes: list[torch.Tensor], ended: list[bool],
                    wavs: list[torch.Tensor | None] | None = None) -> list[Candidate]:
    wavs = scorer.decode(codes) if wavs is None else wavs
    scores, results = scorer.score(verifier, codes, wavs)
    return [Candidate(codes=c.cpu(), ended=e, score=s, verifier=verifier.name, result=r, wav=w)
            for c, e, s, r, w in zip(codes, ended, scores, results, wavs)]


def _outcome_step(index: int, verifier: Verifier, candidates: list[Candidate], tokens: int,
                  frame_rate_hz: float) -> SearchStep:
    frames = max((c.n_frames for c in candidates), default=0)
    best = max(candidates, key=lambda c: c.score) if candidates else None
    return SearchStep(index=index, phase="outcome", verifier=verifier.name, n_candidates=len(candidates),
                      n_kept=1, n_finished=sum(c.ended for c in candidates),
                      n_kept_finished=int(best is not None and best.ended), frames=frames,
                      seconds=frames / frame_rate_hz, tokens_generated=tokens,
                      scores=tuple(c.score for c in candidates))


# ---------------------------------------------------------------------------------------------
# Sampling-based strategies (model.generate, one batch)


def _sampled(strategy: str, n: int, request: SearchRequest) -> SearchResult:
    clock = Stopwatch()
    chooser = request.chosen_by.outcome
    compute = SearchCompute()
    scorer = Scorer(request.codec, request.text, request.prompt, compute)
    ids = _prompt_ids(request)
    config = dataclasses.replace(request.sampling, num_return_sequences=n, seed=int(request.seed),
                                 max_new_tokens=_token_cap(request))
    with _quiet_transformers():
        out = generate_speech_tokens(request.lm.model, request.lm.layout, [TokenSequence(input_ids=ids)], config,
                                     pad_token_id=request.lm.tokenizer.pad_token_id)
    compute.tokens_generated = out.n_tokens_generated
    compute.lm_flops = out.flops
    candidates = _score_complete(scorer, chooser, out.codes, out.ended)
    steps = [_outcome_step(0, chooser, candidates, out.n_tokens_generated, request.frame_rate_hz)]
    return _choose(strategy, request.text, request.budget, scorer, candidates, chooser, compute, steps, clock)


@register("sample")
def sample(request: SearchRequest) -> SearchResult:
    """One sample, scored by the outcome verifier (for the results table; the score chooses
    nothing). The budget is recorded but not used."""
    return _sampled("sample", 1, request)


@register("best_of_n")
def best_of_n(request: SearchRequest) -> SearchResult:
    """N = budget samples in one KV-cached batch; the outcome verifier picks the best."""
    return _sampled("best_of_n", int(request.budget), request)


# ---------------------------------------------------------------------------------------------
# Beam search with a process verifier


@dataclasses.dataclass
class _Scored:
    """A sequence as the process verifier last saw it (its audio kept to avoid a second decode)."""

    codes: torch.Tensor
    wav: torch.Tensor | None
    score: float
    result: Any


@dataclasses.dataclass
class _BeamOutcome:
    state: DecodeState | None  # surviving unfinished beams (None when all finished)
    alive: list[_Scored]  # the surviving beams, row by row, as last scored
    finished: list[_Scored]  # beams that ended while in the top B


def _account_tokens(compute: SearchCompute, config: Any, state: DecodeState, before: torch.Tensor) -> int:
    """Add the tokens generated since `before` (per-row n_new) and their FLOPs; returns the count."""
    added = 0
    for row in range(state.n_rows):
        start, stop = int(before[row]), int(state.n_new[row])
        if stop > start:
            added += stop - start
            # guided decoding runs every row twice (with and without its text)
            compute.lm_flops += (1 if state.guidance is None else 2) * token_flops(config, state.prompt_len, start, stop)
    compute.tokens_generated += added
    return added


def _beam_phase(model: Any, layout: TokenLayout, scorer: Scorer, verifier: Verifier, sampler: Sampler,
                state: DecodeState, *, width: int, n_continuations: int, step_tokens: int, stop_frames: int,
                steps: list[SearchStep], frame_rate_hz: float) -> _BeamOutcome:
    """Run process-verifier beam steps until `stop_frames` tokens have been generated per row or
    every beam has finished. `state` holds one row (the bare prompt)."""
    compute = scorer.compute
    finished: list[_Scored] = []
    alive_scored: list[_Scored] = []
    first = True
    while state.n_steps < stop_frames:
        # From the bare prompt, all B·N rows fork off the one prompt row so that B beams exist
        # after the first decision; later, each surviving beam forks N continuations. Forking
        # copies cache rows (index_select); nothing before the fork point is recomputed.
        repeats = width * n_continuations if first else n_continuations
        first = False
        state = state.select(torch.arange(state.n_rows).repeat_interleave(repeats))
        before = state.n_new.clone()
        state = extend(model, state, sampler, min(step_tokens, stop_frames - state.n_steps))
        added = _account_tokens(compute, model.config, state, before)
        codes = [layout.speech_codes(state.generated(r)).cpu() for r in range(state.n_rows)]
        wavs = scorer.decode(codes)
        scores, results = scorer.score(verifier, codes, wavs)
        # Top B of all candidates (ties: the earlier row); finished ones in the top B leave the
        # beam and wait for the final choice, so the live beam count can shrink.
        order = sorted(range(state.n_rows), key=lambda r: -scores[r])[:width]
        ended = state.ended.tolist()
        finished += [_Scored(codes[r], wavs[r], scores[r], results[r]) for r in order if ended[r]]
        alive = [r for r in order if not ended[r]]
        alive_scored = [_Scored(codes[r], wavs[r], scores[r], results[r]) for r in alive]
        steps.append(SearchStep(index=len(steps), phase="process", verifier=verifier.name,
                                n_candidates=state.n_rows, n_kept=len(order), n_finished=int(sum(ended)),
                                n_kept_finished=len(order) - len(alive),
                                frames=state.n_steps, seconds=state.n_steps / frame_rate_hz,
                                tokens_generated=added, scores=tuple(scores)))
        if not alive:
            return _BeamOutcome(state=None, alive=[], finished=finished)
        state = state.select(alive)
    return _BeamOutcome(state=state, alive=alive_scored, finished=finished)


def _reusable(process: Verifier, outcome: Verifier) -> bool:
    """Whether process scores of complete sequences can stand as outcome scores: same verifier,
    and not one whose scores are relative to the batch they were computed in (lexicographic)."""
    from workbench.verifiers.combined import LexicographicVerifier

    return process is outcome and not isinstance(outcome, LexicographicVerifier)


def _start(request: SearchRequest, compute: SearchCompute) -> tuple[DecodeState, Sampler]:
    model = request.lm.model
    ids = _prompt_ids(request)
    guidance = guidance_for(model, request.sampling.guidance_scale)
    state = prefill(model, ids, guidance)
    compute.lm_flops += (1 if guidance is None else 2) * prefill_flops(model.config, len(ids))
    return state, Sampler(model, request.lm.layout, request.sampling, request.seed)


@dataclasses.dataclass
class _BeamRun:
    """A beam-based strategy after its process-verifier beam phase."""

    clock: Stopwatch
    chosen_by: SearchVerifiers
    compute: SearchCompute
    scorer: Scorer
    sampler: Sampler
    cap: int  # token cap per sequence
    frame_rate_hz: float
    steps: list[SearchStep]
    outcome: _BeamOutcome


def _beam_run(request: SearchRequest, *, partial: bool) -> _BeamRun:
    """Start a beam-based strategy and run its beam phase, (B, N) from `beam_shape(budget,
    options.beam_width)`: up to the token cap, or (`partial`) over the first `options.partial_s`
    seconds."""
    clock = Stopwatch()
    options = request.options
    chosen_by = request.chosen_by
    compute = SearchCompute()
    scorer = Scorer(request.codec, request.text, request.prompt, compute)
    width, n_continuations = beam_shape(int(request.budget), options.beam_width)
    cap = _token_cap(request)
    if is_interleaved(request.lm.model):  # the cap counts frames; each unit adds its token and an end-of-unit
        cap += 2 * n_units_in(request.lm.layout, _prompt_ids(request)) + 1
    frame_rate_hz = request.frame_rate_hz
    stop_frames = min(cap, max(1, round(options.partial_s * frame_rate_hz))) if partial else cap
    state, sampler = _start(request, compute)
    steps: list[SearchStep] = []
    outcome = _beam_phase(request.lm.model, request.lm.layout, scorer, chosen_by.process_or_outcome, sampler,
                          state, width=width, n_continuations=n_continuations, step_tokens=options.step_tokens,
                          stop_frames=stop_frames, steps=steps, frame_rate_hz=frame_rate_hz)
    return _BeamRun(clock=clock, chosen_by=chosen_by, compute=compute, scorer=scorer, sampler=sampler, cap=cap,
                    frame_rate_hz=frame_rate_hz, steps=steps, outcome=outcome)


@register("beam")
def beam(request: SearchRequest) -> SearchResult:
    """Beam search with the process verifier every `options.step_tokens` tokens, (B, N) from
    `beam_shape(budget, options.beam_width)`; final pick by the outcome verifier among beams that
    ended and beams cut at the token cap."""
    run = _beam_run(request, partial=False)
    chosen_by, outcome = run.chosen_by, run.outcome
    # Beams that ended, and beams cut at the cap (complete as far as search goes).
    final = outcome.finished + outcome.alive
    ended = [True] * len(outcome.finished) + [False] * len(outcome.alive)
    if _reusable(chosen_by.process_or_outcome, chosen_by.outcome):
        # The last process step already scored these complete sequences with this verifier.
        candidates = [Candidate(codes=f.codes, ended=e, score=f.score, verifier=chosen_by.outcome.name,
                                result=f.result, wav=f.wav) for f, e in zip(final, ended)]
    else:
        candidates = _score_complete(run.scorer, chosen_by.outcome, [f.codes for f in final], ended,
                                     wavs=[f.wav for f in final])
    run.steps.append(_outcome_step(len(run.steps), chosen_by.outcome, candidates, 0, run.frame_rate_hz))
    return _choose("beam", request.text, request.budget, run.scorer, candidates, chosen_by.outcome, run.compute,
                   run.steps, run.clock)


@register("partial_mix")
def partial_mix(request: SearchRequest) -> SearchResult:
    """Process-verifier beam search over the first `options.partial_s` seconds, then `budget`
    full completions of the surviving prefixes (spread evenly; beams that already ended count
    as completions too), chosen by the outcome verifier (Llasa §5: SIM for 2 s, then WER)."""
    run = _beam_run(request, partial=True)
    model, layout, budget = request.lm.model, request.lm.layout, request.budget
    compute, scorer, outcome = run.compute, run.scorer, run.outcome
    codes = [f.codes for f in outcome.finished]
    wavs: list[torch.Tensor | None] = [f.wav for f in outcome.finished]
    ended = [True] * len(codes)
    tokens_before = compute.tokens_generated
    if outcome.state is not None:
        prefixes = outcome.state.n_rows
        n_completions = max(prefixes, int(budget) - len(codes))
        # Completion k continues prefix k mod B: as even a split as the numbers allow.
        rows = torch.arange(n_completions) % prefixes
        state = outcome.state.select(rows.sort().values)
        before = state.n_new.clone()
        state = extend(model, state, run.sampler, run.cap - state.n_steps)
        _account_tokens(compute, model.config, state, before)
        new_codes = [layout.speech_codes(state.generated(r)).cpu() for r in range(state.n_rows)]
        codes += new_codes
        wavs += scorer.decode(new_codes)
        ended += state.ended.tolist()
    candidates = _score_complete(scorer, run.chosen_by.outcome, codes, ended, wavs=wavs)
    run.steps.append(_outcome_step(len(run.steps), run.chosen_by.outcome, candidates,
                                   compute.tokens_generated - tokens_before, run.frame_rate_hz))
    return _choose("partial_mix", request.text, budget, scorer, candidates, run.chosen_by.outcome, compute,
                   run.steps, run.clock)


__all__ = ["beam", "best_of_n", "partial_mix", "sample"]
