"""Verifiers: ASR / speaker / quality scorers behind one protocol (Llasa §5, inference-time search).

    from workbench import verifiers
    asr = verifiers.get("pocketsphinx")
    asr.score(audios, 16000, texts=texts)            # 1 - WER per clip, higher is better
    verifiers.get("resemblyzer").evaluate(audios, 24000, prompts=prompt_wav)  # raw = cosine
    verifiers.weighted({"pocketsphinx": 1.0, "resemblyzer": 1.0})
    verifiers.available()

Importing this package is cheap: each model loads on first use and is cached per process.
New verifiers (e.g. workbench-trained ASR or speaker models) register with `@register("name")`.
"""

from workbench.verifiers.base import (AudioLike, MosScores, PromptLike, Verifier, VerifierError, VerifierResult,
                                      available, get, register)
from workbench.verifiers.text import WordErrors, corpus_wer, normalize_text, wer, word_errors

# Importing these modules registers their verifiers (they import no model code at module level).
from workbench.verifiers import asr, combined, quality, speaker  # noqa: E402,F401  isort: skip
from workbench.verifiers import trained_asr, trained_speaker  # noqa: E402,F401  isort: skip
from workbench.verifiers.combined import lexicographic, weighted  # noqa: E402

__all__ = [
    "AudioLike", "MosScores", "PromptLike", "Verifier", "VerifierError", "VerifierResult", "WordErrors",
    "available", "corpus_wer", "get", "lexicographic", "normalize_text", "register", "weighted", "wer",
    "word_errors",
]
