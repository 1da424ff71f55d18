"""ASR verifiers: content accuracy as 1 - WER against the target text (Llasa §5 uses Whisper-large-v3
WER for English). Both recognisers share `normalize_text` and the WER code in `text.py`.

- `pocketsphinx`: the English model ships in the wheel, so it runs offline here; weak (about a
  quarter of words wrong on clean read speech) but real and independent of anything we train.
- `whisper`: transformers' Whisper from a local folder or hub id (`model=`).
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np
import torch

from workbench.verifiers.base import (AudioLike, PromptLike, VerifierResult, check_texts, prepare_audios,
                                      register)
from workbench.verifiers.text import word_errors


class ASRVerifierBase:
    """Score = 1 - WER (so 1 is perfect and more errors score lower, without a floor at 0);
    raw = WER as a fraction; transcript = what was recognised."""

    name: str = "asr"
    sample_rate_hz: int = 16000
    # WER beyond 1 (more errors than words) is equally useless, so 0-1 of 1 - WER is the span
    # used when combining with other verifiers.
    score_range: tuple[float, float] = (0.0, 1.0)

    def transcribe_prepared(self, wavs: list[torch.Tensor]) -> list[str]:
        """Transcripts of 1-D waveforms already at `sample_rate_hz`."""
        raise NotImplementedError

    def transcribe(self, audios: Sequence[AudioLike], sample_rate: int) -> list[str]:
        """Raw (unnormalised) transcripts of audio at any sample rate."""
        return self.transcribe_prepared(prepare_audios(audios, sample_rate, self.sample_rate_hz))

    def evaluate(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
                 prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[VerifierResult]:
        wavs = prepare_audios(audios, sample_rate, self.sample_rate_hz)
        targets = check_texts(texts, len(wavs), self.name)
        hypotheses = self.transcribe_prepared(wavs) if wavs else []
        results = []
        for target, hypothesis in zip(targets, hypotheses):
            error_rate = word_errors(target, hypothesis).wer
            results.append(VerifierResult(self.name, 1.0 - error_rate, error_rate, transcript=hypothesis))
        return results

    def score(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
              prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[float]:
        return [r.score for r in self.evaluate(audios, sample_rate, texts, prompts)]


@functools.lru_cache(maxsize=2)
def _pocketsphinx_decoder(sample_rate_hz: int):
    # One decoder per process: building it loads the acoustic model, dictionary and LM (~0.5 s).
    from pocketsphinx import Decoder

    return Decoder(samprate=sample_rate_hz, logfn=os.devnull)


@register("pocketsphinx")
class PocketsphinxVerifier(ASRVerifierBase):
    """CMU pocketsphinx 5 with its bundled US-English acoustic model and trigram LM. Offline.

    Decodes one utterance at a time (the decoder is not batched); not thread-safe, like the
    decoder it wraps.
    """

    name = "pocketsphinx"

    def transcribe_prepared(self, wavs: list[torch.Tensor]) -> list[str]:
        decoder = _pocketsphinx_decoder(self.sample_rate_hz)
        transcripts = []
        for wav in wavs:
            # The decoder takes 16-bit little-endian PCM.
            pcm = (wav.clamp(-1.0, 1.0).numpy() * 32767.0).round().astype("<i2").tobytes()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            transcripts.append(hypothesis.hypstr if hypothesis is not None else "")
        return transcripts


@functools.lru_cache(maxsize=4)
def _whisper(model: str, device: str):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(model)
    network = WhisperForConditionalGeneration.from_pretrained(model).to(device).eval()
    return processor, network


@register("whisper")
class WhisperVerifier(ASRVerifierBase):
    """Whisper through transformers; `model` is a local folder (save_pretrained layout) or a hub id.

    The paper's English content verifier is Whisper-large-v3. Clips are padded/truncated to Whisper's
    30 s window, so longer audio is only partly transcribed.
    """

    name = "whisper"

    def __init__(self, model: str = "openai/whisper-large-v3", device: str = "cpu", language: str = "en",
                 batch_size: int = 8, max_new_tokens: int = 128) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
        self.model = str(model)
        self.device = device
        self.language = language
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    def transcribe_prepared(self, wavs: list[torch.Tensor]) -> list[str]:
        processor, network = _whisper(self.model, self.device)
        kwargs: dict[str, object] = {}
        if getattr(network.generation_config, "lang_to_id", None):
            # Multilingual checkpoints: fix language and task instead of letting Whisper detect
            # them, so a bad synthesis cannot be "recognised" as another language.
            kwargs.update(language=self.language, task="transcribe")
        # Whisper refuses prompts + new tokens beyond its decoder length; leave room for the
        # start/language/task/no-timestamps prefix.
        max_new = min(self.max_new_tokens, network.config.max_target_positions - 4)
        transcripts: list[str] = []
        for start in range(0, len(wavs), self.batch_size):
            chunk = [w.numpy().astype(np.float32) for w in wavs[start:start + self.batch_size]]
            features = processor(chunk, sampling_rate=self.sample_rate_hz, return_tensors="pt")
            input_features = features.input_features.to(self.device, network.dtype)
            with torch.inference_mode():
                tokens = network.generate(input_features, max_new_tokens=max_new, **kwargs)
            transcripts.extend(t.strip() for t in processor.batch_decode(tokens, skip_special_tokens=True))
        return transcripts
