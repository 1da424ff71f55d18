"""The verifier protocol, its result type, the registry, and input handling shared by all verifiers.

A verifier scores generated speech; higher is always better so that search code (best-of-N, beam
search with a process verifier, Llasa §5) can take an argmax without knowing what is measured.
Each verifier also reports its raw metric (WER, cosine, MOS) through `evaluate`.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence, TypeVar, Union, runtime_checkable

import numpy as np
import torch

from workbench.audio import equal_length_batches, load_audio, resample  # noqa: F401 - re-exported
from workbench.errors import VerifierError  # noqa: F401 - re-exported

AudioLike = Union[torch.Tensor, np.ndarray]
# A reference clip may also be given as a file path; it is read and resampled on demand.
PromptLike = Union[torch.Tensor, np.ndarray, str, Path]


@dataclass(frozen=True)
class MosScores:
    """DNSMOS P.835 sub-scores on the 1-5 MOS scale (signal, background, overall) plus P.808."""

    sig: float
    bak: float
    ovrl: float
    p808: float


@dataclass(frozen=True)
class VerifierResult:
    """One audio's verdict.

    score: the value search maximises (higher is better).
    raw: the metric in its usual units: WER as a fraction (ASR), cosine similarity (speaker),
        `MosScores` (quality); for combined verifiers the combined value before any nudging.
    transcript: the recognised text (ASR verifiers only), before normalisation.
    components: the component results of a combined verifier, in the order given.
    """

    verifier: str
    score: float
    raw: float | MosScores
    transcript: str | None = None
    components: tuple["VerifierResult", ...] = ()


@runtime_checkable
class Verifier(Protocol):
    """What search code relies on. `score_range` is the nominal (worst, best) of `score`, used to
    put different verifiers on a common 0-1 scale when they are combined."""

    name: str
    score_range: tuple[float, float]

    def score(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
              prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[float]: ...

    def evaluate(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
                 prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[VerifierResult]: ...


# ----------------------------------------------------------------------------------------------
# Registry: a decorator instead of an if/elif chain, so later verifiers (a workbench-trained ASR
# or speaker model) register from their own modules without touching this one.

_REGISTRY: dict[str, Callable[..., Verifier]] = {}
F = TypeVar("F", bound=Callable[..., Verifier])


def register(name: str) -> Callable[[F], F]:
    """Register a verifier factory (a class or function taking keyword options) under `name`."""

    def decorator(factory: F) -> F:
        existing = _REGISTRY.get(name)
        # The same definition met twice (a module run with `python -m` is imported once more as
        # __main__) is not a clash; two different factories under one name are.
        same = existing is not None and existing.__qualname__ == factory.__qualname__ and "__main__" in (
            existing.__module__, factory.__module__)
        if existing is not None and existing is not factory and not same:
            raise VerifierError(f"verifier name {name!r} is already registered to {existing!r}")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available() -> list[str]:
    """Registered verifier names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **options: object) -> Verifier:
    """Build the verifier registered as `name` with keyword `options` (e.g. `model=` a local path).

    Models load lazily on first use and are cached per process, so calling this is cheap.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise VerifierError(f"unknown verifier {name!r}{hint} (available: {', '.join(available())})")
    return _REGISTRY[name](**options)


# ----------------------------------------------------------------------------------------------
# Input handling


def as_waveform(audio: AudioLike, index: int = 0) -> torch.Tensor:
    """A 1-D float32 CPU tensor from a 1-D array/tensor or a (1, samples) one; rejects empty,
    multi-channel and non-finite audio, naming the item."""
    wav = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio)
    wav = wav.detach().to("cpu", torch.float32)
    if wav.dim() == 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.dim() != 1:
        raise VerifierError(f"audio {index}: expected a 1-D waveform (or shape (1, samples)), "
                            f"got shape {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise VerifierError(f"audio {index}: empty waveform")
    if not torch.isfinite(wav).all():
        raise VerifierError(f"audio {index}: waveform has NaN or infinite samples")
    return wav


def prepare_audios(audios: Sequence[AudioLike], sample_rate: int, target_sample_rate: int) -> list[torch.Tensor]:
    """Validate a batch and resample each clip to the model's rate."""
    if isinstance(audios, (torch.Tensor, np.ndarray)):
        # A single 1-D tensor would silently iterate over samples; demand a list.
        raise VerifierError(f"audios must be a list of 1-D waveforms, got a single {type(audios).__name__} "
                            f"of shape {tuple(audios.shape)}")
    if int(sample_rate) <= 0:
        raise VerifierError(f"sample_rate must be positive, got {sample_rate}")
    return [resample(as_waveform(a, i), int(sample_rate), target_sample_rate) for i, a in enumerate(audios)]


def check_texts(texts: Sequence[str] | None, n: int, verifier: str) -> list[str]:
    if texts is None:
        raise VerifierError(f"verifier {verifier!r} needs texts (one target transcript per audio)")
    if isinstance(texts, str):
        raise VerifierError(f"verifier {verifier!r}: texts must be a list of strings, got a single string")
    texts = list(texts)
    if len(texts) != n:
        raise VerifierError(f"verifier {verifier!r}: {n} audios but {len(texts)} texts")
    return texts


def prepare_prompts(prompts: Sequence[PromptLike] | PromptLike | None, n: int, sample_rate: int,
                    target_sample_rate: int, verifier: str) -> list[torch.Tensor]:
    """One reference clip per audio at the model's rate. A single clip (array, tensor or path) is
    shared by the whole batch, the usual case in search where all candidates clone one prompt.
    Arrays are taken to be at `sample_rate` (the rate of the audios); paths are read from disk."""
    if prompts is None:
        raise VerifierError(f"verifier {verifier!r} needs prompts (the reference clip of the target speaker)")
    single = isinstance(prompts, (str, Path)) or (
        isinstance(prompts, (torch.Tensor, np.ndarray)) and (prompts.ndim == 1 or
                                                              (prompts.ndim == 2 and prompts.shape[0] == 1)))
    items = [prompts] if single else list(prompts)  # type: ignore[arg-type]
    if not single and len(items) != n:
        raise VerifierError(f"verifier {verifier!r}: {n} audios but {len(items)} prompts")
    loaded: list[torch.Tensor] = []
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            wav, _ = load_audio(item, sample_rate=target_sample_rate)
            loaded.append(as_waveform(wav, i))
        else:
            loaded.append(resample(as_waveform(item, i), int(sample_rate), target_sample_rate))
    return loaded * n if single else loaded


def normalise_score(value: float, score_range: tuple[float, float]) -> float:
    """Map a score onto 0-1 by its verifier's nominal range, clipped (so one wild value cannot
    dominate a weighted combination)."""
    low, high = score_range
    if not high > low:
        raise VerifierError(f"score_range must have high > low, got {score_range}")
    return float(min(1.0, max(0.0, (value - low) / (high - low))))


def finite_or_raise(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise VerifierError(f"{what} is not finite ({value})")
    return float(value)


# ----------------------------------------------------------------------------------------------
# Speaker verifiers share everything except how an embedding is computed.


class SpeakerVerifierBase:
    """Cosine similarity between each audio's speaker embedding and its prompt's.

    Subclasses set `name`, `sample_rate_hz` and implement `embed`. Prompt embeddings are cached by
    content: search scores many candidates (and many beam steps) against the same prompt.
    """

    name: str = "speaker"
    sample_rate_hz: int = 16000
    # Cosine lives in [-1, 1]; below 0 means "clearly not the speaker", so 0-1 is the useful span.
    score_range: tuple[float, float] = (0.0, 1.0)
    _prompt_cache_size = 64

    def __init__(self) -> None:
        self._prompt_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def embed(self, wavs: list[torch.Tensor]) -> torch.Tensor:
        """(n, dim) embeddings of 1-D waveforms at `sample_rate_hz`."""
        raise NotImplementedError

    def _embed_prompts(self, prompts: list[torch.Tensor]) -> torch.Tensor:
        # Hash each distinct tensor once: a shared prompt arrives as the same object n times.
        key_of_id = {id(p): hashlib.sha1(p.numpy().tobytes()).hexdigest() for p in prompts}
        keys = [key_of_id[id(p)] for p in prompts]
        missing = {k: p for k, p in zip(keys, prompts) if k not in self._prompt_cache}
        if missing:
            embeddings = self.embed(list(missing.values()))
            for k, e in zip(missing, embeddings):
                self._prompt_cache[k] = e
                if len(self._prompt_cache) > self._prompt_cache_size:
                    self._prompt_cache.popitem(last=False)
        return torch.stack([self._prompt_cache[k] for k in keys])

    def evaluate(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
                 prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[VerifierResult]:
        wavs = prepare_audios(audios, sample_rate, self.sample_rate_hz)
        refs = prepare_prompts(prompts, len(wavs), sample_rate, self.sample_rate_hz, self.name)
        if not wavs:
            return []
        emb = torch.nn.functional.normalize(self.embed(wavs).float(), dim=-1)
        ref = torch.nn.functional.normalize(self._embed_prompts(refs).float(), dim=-1)
        cosines = (emb * ref).sum(dim=-1).tolist()
        return [VerifierResult(self.name, finite_or_raise(c, f"{self.name} cosine of audio {i}"), float(c))
                for i, c in enumerate(cosines)]

    def score(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
              prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[float]:
        return [r.score for r in self.evaluate(audios, sample_rate, texts, prompts)]

    def similarity(self, a: AudioLike, b: AudioLike, sample_rate: int) -> float:
        """Cosine similarity of two clips' speaker embeddings (a convenience for analysis)."""
        return self.evaluate([a], sample_rate, prompts=[b])[0].raw  # type: ignore[return-value]
