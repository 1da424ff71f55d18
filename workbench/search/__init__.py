"""Inference-time search (Llasa §5): sample, best-of-N, beam search with a process verifier, and
partial process-then-outcome search, with measured compute.

    from workbench import search, verifiers
    strategy = search.get("partial_mix")
    result = strategy(search.SearchRequest(
        lm=load_lm(lm_dir), codec=load_codec(codec_dir), text="Hello there.", prompt=voice_prompt,
        verifiers=search.SearchVerifiers(outcome=verifiers.get("pocketsphinx"),
                                         process=verifiers.get("resemblyzer")),
        budget=8, sampling=SamplingConfig(), seed=0))
    result.wav, result.score, result.compute.lm_flops, result.candidates

Importing this package loads no model; the ablation runner lives in `workbench.search.ablation`.
"""

from workbench.search.base import (Candidate, SearchCompute, SearchError, SearchOptions, SearchRequest, SearchResult,
                                   SearchStep, SearchStrategy, SearchVerifiers, VoicePrompt, available, beam_shape,
                                   get, max_new_tokens_for, register)
from workbench.search import strategies  # noqa: E402,F401  (registers the built-in strategies)  isort: skip
from workbench.search.preferences import PreferencePair, export_preferences, preference_pair  # noqa: E402

__all__ = [
    "Candidate", "PreferencePair", "SearchCompute", "SearchError", "SearchOptions", "SearchRequest", "SearchResult",
    "SearchStep",
    "SearchStrategy", "SearchVerifiers", "VoicePrompt", "available", "beam_shape", "export_preferences", "get",
    "max_new_tokens_for", "preference_pair", "register",
]
