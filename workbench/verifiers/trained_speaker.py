"""`workbench-speaker`: cosine similarity of the workbench's own speaker embeddings
(`workbench.checkmodels.speaker_model`), a speaker model independent of the one search optimises."""

from __future__ import annotations

import torch

from workbench.checkmodels.common import ModelCache
from workbench.checkmodels.speaker_model import SAMPLE_RATE_HZ, SpeakerEncoder, load_model, resolve_model_path
from workbench.verifiers.base import SpeakerVerifierBase, register
from workbench.verifiers.trained_models import TrainedModelVerifier


_cached_model: ModelCache[SpeakerEncoder] = ModelCache(load_model)


@register("workbench-speaker")
class WorkbenchSpeakerVerifier(TrainedModelVerifier, SpeakerVerifierBase):
    """Cosine similarity of the workbench's own ECAPA-TDNN embeddings (audio vs prompt).
    `model`: run directory or model file; None = newest finished `speaker` run under `root`."""

    name = "workbench-speaker"
    sample_rate_hz = SAMPLE_RATE_HZ
    resolve_model_path = staticmethod(resolve_model_path)

    def embed(self, wavs: list[torch.Tensor]) -> torch.Tensor:
        return _cached_model(self.model_path).embed(wavs, self.batch_size)
