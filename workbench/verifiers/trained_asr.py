"""`workbench-asr`: the content verifier that runs the workbench's own CTC recogniser
(`workbench.checkmodels.asr_model`), an ASR independent of the one search optimises (Llasa §5)."""

from __future__ import annotations

from pathlib import Path

import torch

from workbench.checkmodels.asr_model import (DECODERS, SAMPLE_RATE_HZ, WORD_LM_FILE, CTCRecognizer, LexiconDecoding,
                                             lexicon_decoder, load_model, resolve_model_path)
from workbench.checkmodels.common import ModelCache
from workbench.verifiers.asr import ASRVerifierBase
from workbench.verifiers.base import VerifierError, register
from workbench.verifiers.trained_models import TrainedModelVerifier

_cached_model: ModelCache[CTCRecognizer] = ModelCache(load_model)


# ---------------------------------------------------------------------------------------------
# The verifier


@register("workbench-asr")
class WorkbenchASRVerifier(TrainedModelVerifier, ASRVerifierBase):
    """Content verifier from the workbench's own CTC model: score = 1 - WER of its transcript
    against the target text (shared normaliser). `model`: run directory or model file; None =
    newest finished `asr` run under `root` (default: $WORKBENCH_RUNS or ./runs). `decoder`: one of
    `DECODERS`; "lexicon-lm" needs the run's `words.arpa` beside the model file (runs trained
    before it existed: pass "lexicon" or "greedy"). Model and decoder load on first use and are
    cached per process."""

    name = "workbench-asr"
    sample_rate_hz = SAMPLE_RATE_HZ
    resolve_model_path = staticmethod(resolve_model_path)

    def __init__(self, model: str | Path | None = None, root: str | Path | None = None, batch_size: int = 16,
                 decoder: str = "lexicon-lm", decoding: LexiconDecoding = LexiconDecoding()) -> None:
        super().__init__(model, root, batch_size)
        if decoder not in DECODERS:
            raise VerifierError(f"{self.name}: decoder {decoder!r} is not one of {DECODERS}")
        self.decoder = decoder
        self.decoding = decoding

    def transcribe_prepared(self, wavs: list[torch.Tensor]) -> list[str]:
        network = _cached_model(self.model_path)
        decode = None
        if self.decoder != "greedy":
            lm = self.model_path.parent / WORD_LM_FILE if self.decoder == "lexicon-lm" else None
            if lm is not None and not lm.is_file():
                raise VerifierError(f"{self.name}: decoder 'lexicon-lm' needs {lm} (the run's word LM; "
                                    "runs trained before it existed lack it): retrain, or pass "
                                    "decoder='lexicon' or 'greedy'")
            decode = lexicon_decoder(network.spec.vocab, lm, self.decoding)
        return network.transcribe(wavs, batch_size=self.batch_size, decode=decode)
