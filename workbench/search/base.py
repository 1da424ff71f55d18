"""Types, registry and scoring shared by every search strategy (Llasa §5, docs/reference.md §5).

A strategy is a function of one `SearchRequest` (the loaded LM, the codec, the sentence, the
verifiers, the budget and the knobs; the `SearchStrategy` signature) registered by name with
`@register("name")`; `get(name)` returns it. Every strategy returns a `SearchResult` holding the
chosen codes and audio, every final candidate with its score (for best/worst export and preference
pairs), the per-step record of process-verifier decisions, and a `SearchCompute` with the measured
cost, so that strategies can be compared at equal compute rather than at equal nominal budget.

Compute conventions (the same for all strategies, so that they share one x axis):
- tokens_generated: new LM tokens that belong to some sequence, counting each sequence's end token
  and stopping there. Positions a batched loop computes for an already-finished row are waste
  that a smarter batcher would avoid, so they are not counted.
- lm_flops: forward FLOPs (N = all parameters, `workbench.lm.flops`) of every prompt prefill
  actually run plus every counted token; a prefix shared through the KV cache is paid once.
- codec_decodes: sequences decoded to audio (one per sequence, however they were batched).
- verifier_calls: clips scored by a verifier (a combined verifier counts once per clip).
- wall_s: wall time of the whole strategy call, scoring included.
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, TypeVar

import torch

from workbench.codec.interface import Codec
from workbench.lm.generate import SamplingConfig
from workbench.lm.model import LoadedLM
from workbench.verifiers.base import Verifier, VerifierResult


class SearchError(ValueError):
    """Bad search input (unknown strategy, bad budget or option); the message names the value."""


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class VoicePrompt:
    """A voice-cloning prompt: the reference clip, its transcript and its codec codes.

    The LM continues after `codes` (Llasa's continuation recipe); speaker verifiers compare the
    generated audio with `wav`."""

    codes: torch.Tensor  # (frames,) long, in [0, codebook_size)
    text: str
    wav: torch.Tensor  # (samples,) float at `sample_rate`
    sample_rate: int


@dataclass(frozen=True)
class SearchVerifiers:
    """Which verifier steers partial sequences (process) and which picks among complete ones
    (outcome). `process=None` means the outcome verifier does both."""

    outcome: Verifier
    process: Verifier | None = None

    @property
    def process_or_outcome(self) -> Verifier:
        return self.process if self.process is not None else self.outcome


@dataclass(frozen=True)
class SearchOptions:
    """Strategy knobs beyond the budget (defaults are the paper's where it gives one).

    step_tokens: M, tokens between process-verifier decisions (25 = 0.5 s at 50 Hz, Llasa §5).
    beam_width: B; None derives it from the budget (`beam_shape`).
    partial_s: seconds of audio steered by the process verifier in `partial_mix` (2 s in the paper).
    seconds_per_word, margin_s: cap on new tokens when `sampling.max_new_tokens` is 0
        (`max_new_tokens_for`): a random or weak model may never emit end-of-speech.
    """

    step_tokens: int = 25
    beam_width: int | None = None
    partial_s: float = 2.0
    seconds_per_word: float = 0.4
    margin_s: float = 1.0

    def __post_init__(self) -> None:
        if self.step_tokens < 1:
            raise SearchError(f"step_tokens must be >= 1, got {self.step_tokens}")
        if self.beam_width is not None and self.beam_width < 1:
            raise SearchError(f"beam_width must be >= 1, got {self.beam_width}")
        if not self.partial_s > 0:
            raise SearchError(f"partial_s must be > 0, got {self.partial_s}")


@dataclass(frozen=True)
class SearchRequest:
    """One strategy call: what every strategy needs, typed. `verifiers` may be a lone `Verifier`
    (it is then the outcome verifier and steers nothing); `budget` is the number of candidates
    (`sample` records it and draws one)."""

    lm: LoadedLM  # its model, tokenizer and layout; the model is used as it is (put it in eval mode)
    codec: Codec  # decodes candidates for the verifiers; its frame rate sets the token cap
    text: str
    verifiers: SearchVerifiers | Verifier
    budget: int = 1
    sampling: SamplingConfig = SamplingConfig()
    seed: int = 0
    prompt: VoicePrompt | None = None
    options: SearchOptions = SearchOptions()

    def __post_init__(self) -> None:
        if int(self.budget) < 1:
            raise SearchError(f"budget must be >= 1, got {self.budget}")

    @property
    def chosen_by(self) -> SearchVerifiers:
        return as_search_verifiers(self.verifiers)

    @property
    def frame_rate_hz(self) -> float:
        return float(self.codec.frame_rate_hz)


def max_new_tokens_for(text: str, frame_rate_hz: float, seconds_per_word: float = 0.4,
                       margin_s: float = 1.0) -> int:
    """Cap on generated frames for `text`: seconds_per_word per word plus a margin (0.4 s/word is
    20 frames per word at 50 Hz; read English runs at about 2.5-3 words/s) + 1 for the end token."""
    n_words = max(1, len(text.split()))
    frames = (n_words * seconds_per_word + margin_s) * frame_rate_hz
    return int(math.ceil(round(frames, 6))) + 1  # round: 0.4 s x 50 Hz must not become 20.000001


def beam_shape(budget: int, beam_width: int | None = None) -> tuple[int, int]:
    """(B beams, N continuations per beam) for a budget of `budget` candidates.

    B·N = budget live sequences per step, so a beam step generates as many tokens as best-of-N
    does at the same budget and the extra cost of beam search is the decodes and verifier calls
    (the paper's B = N = 16 corresponds to budget 256). Without `beam_width`, B is the largest
    divisor of the budget not above its square root: 1→(1,1), 2→(1,2), 4→(2,2), 8→(2,4), 16→(4,4).
    """
    if budget < 1:
        raise SearchError(f"budget must be >= 1, got {budget}")
    if beam_width is not None:
        return beam_width, max(1, math.ceil(budget / beam_width))
    width = max(d for d in range(1, int(math.isqrt(budget)) + 1) if budget % d == 0)
    return width, budget // width


# ---------------------------------------------------------------------------------------------
# Outputs


@dataclass
class Candidate:
    """One complete (or length-capped) sequence that reached the final choice."""

    codes: torch.Tensor  # (frames,) long, generated codes only (voice-prompt codes excluded)
    ended: bool  # reached end-of-speech (False: cut at the token cap)
    score: float  # the choosing verifier's score (higher is better)
    verifier: str
    result: VerifierResult | None = None  # None for a sequence too short to decode (not scored)
    wav: torch.Tensor | None = None  # (samples,) decoded audio

    @property
    def n_frames(self) -> int:
        return int(self.codes.numel())


@dataclass(frozen=True)
class SearchStep:
    """One scoring decision: which verifier scored how many candidates and how many were kept."""

    index: int
    phase: str  # "process" (partial sequences) or "outcome" (complete sequences)
    verifier: str
    n_candidates: int
    n_kept: int
    n_finished: int  # candidates that had reached end-of-speech
    n_kept_finished: int  # kept candidates that had ended (they leave the beam for the final pick)
    frames: int  # generated frames of the longest candidate at this step
    seconds: float  # frames / frame_rate_hz
    tokens_generated: int
    scores: tuple[float, ...]


@dataclass
class SearchCompute:
    tokens_generated: int = 0
    codec_decodes: int = 0
    verifier_calls: int = 0
    lm_flops: float = 0.0
    wall_s: float = 0.0


@dataclass
class SearchResult:
    strategy: str
    text: str
    budget: int
    codes: torch.Tensor  # chosen, (frames,) long
    wav: torch.Tensor  # chosen, (samples,) float; empty when the chosen sequence is empty
    sample_rate: int
    score: float
    verifier: str  # the verifier that made the final choice
    chosen_index: int
    candidates: list[Candidate]
    compute: SearchCompute
    steps: list[SearchStep] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen_index]

    @property
    def worst(self) -> Candidate:
        return min(self.candidates, key=lambda c: c.score)


# ---------------------------------------------------------------------------------------------
# Registry


class SearchStrategy(Protocol):
    def __call__(self, request: SearchRequest) -> SearchResult: ...


_STRATEGIES: dict[str, SearchStrategy] = {}
S = TypeVar("S", bound=Callable[..., SearchResult])


def register(name: str) -> Callable[[S], S]:
    """Register a strategy function under `name` (decorator)."""

    def decorator(function: S) -> S:
        if name in _STRATEGIES and _STRATEGIES[name] is not function:
            raise SearchError(f"search strategy {name!r} is already registered to {_STRATEGIES[name]!r}")
        _STRATEGIES[name] = function  # type: ignore[assignment]
        return function

    return decorator


def available() -> list[str]:
    return sorted(_STRATEGIES)


def get(name: str) -> SearchStrategy:
    """The strategy registered as `name` (``sample``, ``best_of_n``, ``beam``, ``partial_mix``)."""
    if name not in _STRATEGIES:
        close = difflib.get_close_matches(name, _STRATEGIES, n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SearchError(f"unknown search strategy {name!r}{hint} (available: {', '.join(available())})")
    return _STRATEGIES[name]


# ---------------------------------------------------------------------------------------------
# Decoding and scoring with accounting


class Scorer:
    """Decodes codes with the codec and scores the audio with a verifier, counting both.

    Verifiers score audio (the protocol of `workbench.verifiers`). A verifier that sets
    ``accepts_codes = True`` also receives ``codes=`` (a list of (frames,) tensors), which lets
    token-level heuristics and test verifiers score without a trained codec.
    """

    def __init__(self, codec: Codec, text: str, prompt: VoicePrompt | None, compute: SearchCompute) -> None:
        self.codec = codec
        self.text = text
        self.prompt = prompt
        self.compute = compute
        self.sample_rate = int(codec.sample_rate)

    # Fewer frames than this are not decoded (and score below the verifier's range): 20 ms is
    # no speech, and a codec decoder with GroupNorm over time (the smoke-profile codec) cannot
    # normalise a single frame.
    min_frames = 2

    def decode(self, codes: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        """Audio of each code sequence (None for one shorter than `min_frames`). Equal lengths
        share one batched decode call; every sequence counts as one decode."""
        wavs: list[torch.Tensor | None] = [None] * len(codes)
        by_length: dict[int, list[int]] = {}
        for i, c in enumerate(codes):
            if c.numel() >= self.min_frames:
                by_length.setdefault(int(c.numel()), []).append(i)
        for indices in by_length.values():
            batch = torch.stack([codes[i] for i in indices])
            audio = self.codec.decode(batch)
            for row, i in enumerate(indices):
                wavs[i] = audio[row]
        self.compute.codec_decodes += sum(len(v) for v in by_length.values())
        return wavs

    def score(self, verifier: Verifier, codes: Sequence[torch.Tensor],
              wavs: Sequence[torch.Tensor | None]) -> tuple[list[float], list[VerifierResult | None]]:
        """Scores (higher is better) of each sequence. One without audio (too short to decode) is
        not sent to the verifier and scores 1 below the verifier's nominal range."""
        present = [i for i, w in enumerate(wavs) if w is not None]
        floor = float(verifier.score_range[0]) - 1.0
        scores = [floor] * len(codes)
        results: list[VerifierResult | None] = [None] * len(codes)
        if present:
            kwargs: dict[str, Any] = {}
            if getattr(verifier, "accepts_codes", False):
                kwargs["codes"] = [codes[i] for i in present]
            prompts = self.prompt.wav if self.prompt is not None else None
            sample_rate = self.sample_rate
            if prompts is not None and self.prompt.sample_rate != sample_rate:
                from workbench.audio import resample

                prompts = resample(prompts, self.prompt.sample_rate, sample_rate)
            evaluated = verifier.evaluate([wavs[i] for i in present], sample_rate,
                                          texts=[self.text] * len(present), prompts=prompts, **kwargs)
            for i, result in zip(present, evaluated):
                scores[i] = float(result.score)
                results[i] = result
            self.compute.verifier_calls += len(present)
        return scores, results


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def as_search_verifiers(verifiers: SearchVerifiers | Verifier) -> SearchVerifiers:
    return verifiers if isinstance(verifiers, SearchVerifiers) else SearchVerifiers(outcome=verifiers)


__all__ = [
    "Candidate", "Scorer", "SearchCompute", "SearchError", "SearchOptions", "SearchRequest", "SearchResult",
    "SearchStep", "SearchStrategy", "SearchVerifiers", "VoicePrompt", "as_search_verifiers", "available", "beam_shape", "get",
    "max_new_tokens_for", "register",
]
