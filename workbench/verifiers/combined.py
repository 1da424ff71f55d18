"""Verifiers built from other verifiers, behind the same protocol.

- `weighted`: a weighted mean of the components' scores, each first mapped onto 0-1 by its
  `score_range`, so that WER, cosine and MOS can be mixed.
- `lexicographic`: rank by a primary verifier; candidates whose primary scores are within
  `tolerance` of each other count as tied and are ordered by a secondary verifier (e.g. "best
  speaker similarity, and among near-equals the lowest WER").
"""

from __future__ import annotations

from typing import Mapping, Sequence

from workbench.verifiers.base import (AudioLike, PromptLike, Verifier, VerifierError, VerifierResult, get,
                                      normalise_score, register)

VerifierSpec = Verifier | str


def _build(spec: VerifierSpec) -> Verifier:
    return get(spec) if isinstance(spec, str) else spec


@register("weighted")
class WeightedVerifier:
    """score = sum_i w_i * normalised_i / sum_i w_i, in [0, 1]; raw = the same value;
    components = each component's own result."""

    score_range: tuple[float, float] = (0.0, 1.0)

    def __init__(self, weights: Mapping[str, float] | Sequence[tuple[VerifierSpec, float]]) -> None:
        pairs = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
        if not pairs:
            raise VerifierError("weighted verifier needs at least one (verifier, weight) pair")
        for spec, weight in pairs:
            if not weight >= 0.0:  # also rejects NaN
                raise VerifierError(f"weight of {spec!r} must be >= 0, got {weight}")
        total = sum(w for _, w in pairs)
        if total <= 0:
            raise VerifierError(f"weights must not all be zero: {pairs}")
        self.components: list[Verifier] = [_build(spec) for spec, _ in pairs]
        self.weights: list[float] = [float(w) / total for _, w in pairs]
        self.name = "weighted(" + ",".join(f"{v.name}={w:g}" for v, w in zip(self.components, self.weights)) + ")"

    def evaluate(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
                 prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[VerifierResult]:
        per_component = [v.evaluate(audios, sample_rate, texts, prompts) for v in self.components]
        results = []
        for item in zip(*per_component):
            value = sum(w * normalise_score(r.score, v.score_range)
                        for w, r, v in zip(self.weights, item, self.components))
            results.append(VerifierResult(self.name, value, value, components=tuple(item)))
        return results

    def score(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
              prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[float]:
        return [r.score for r in self.evaluate(audios, sample_rate, texts, prompts)]


def lexicographic_scores(primary: Sequence[float], secondary_normalised: Sequence[float],
                         tolerance: float) -> list[float]:
    """Scalar scores whose order is: primary first, near-ties broken by secondary.

    Greedy grouping from the top: the best remaining primary score leads a group holding every
    remaining candidate within `tolerance` below it. A candidate scores its group leader's primary
    plus tolerance/2 * its secondary (0-1). Leaders of successive groups differ by more than
    `tolerance`, so groups never interleave and the argmax is the best secondary among the
    near-best primaries. The scores are relative to the batch they were computed in.
    """
    if not tolerance >= 0.0:
        raise VerifierError(f"tolerance must be >= 0, got {tolerance}")
    order = sorted(range(len(primary)), key=lambda i: primary[i], reverse=True)
    scores = [0.0] * len(primary)
    position = 0
    while position < len(order):
        leader = primary[order[position]]
        while position < len(order) and primary[order[position]] >= leader - tolerance:
            i = order[position]
            scores[i] = leader + 0.5 * tolerance * secondary_normalised[i]
            position += 1
    return scores


@register("lexicographic")
class LexicographicVerifier:
    """Primary score, ties within `tolerance` (in the primary's score units) broken by the
    secondary. score: see `lexicographic_scores` (batch-relative); raw = the primary's score."""

    def __init__(self, primary: VerifierSpec, secondary: VerifierSpec, tolerance: float = 0.0) -> None:
        if not tolerance >= 0.0:
            raise VerifierError(f"tolerance must be >= 0, got {tolerance}")
        self.primary = _build(primary)
        self.secondary = _build(secondary)
        self.tolerance = float(tolerance)
        low, high = self.primary.score_range
        self.score_range: tuple[float, float] = (low, high + 0.5 * self.tolerance)
        self.name = f"lexicographic({self.primary.name}>{self.secondary.name},tol={self.tolerance:g})"

    def evaluate(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
                 prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[VerifierResult]:
        first = self.primary.evaluate(audios, sample_rate, texts, prompts)
        second = self.secondary.evaluate(audios, sample_rate, texts, prompts)
        tie_break = [normalise_score(r.score, self.secondary.score_range) for r in second]
        scores = lexicographic_scores([r.score for r in first], tie_break, self.tolerance)
        return [VerifierResult(self.name, s, a.score, components=(a, b)) for s, a, b in zip(scores, first, second)]

    def score(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
              prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[float]:
        return [r.score for r in self.evaluate(audios, sample_rate, texts, prompts)]


def weighted(weights: Mapping[str, float] | Sequence[tuple[VerifierSpec, float]]) -> WeightedVerifier:
    """`weighted({"pocketsphinx": 1, "resemblyzer": 1})` or `weighted([(verifier, 0.7), ...])`."""
    return WeightedVerifier(weights)


def lexicographic(primary: VerifierSpec, secondary: VerifierSpec, tolerance: float = 0.0) -> LexicographicVerifier:
    """`lexicographic("resemblyzer", "pocketsphinx", tolerance=0.01)`."""
    return LexicographicVerifier(primary, secondary, tolerance)
