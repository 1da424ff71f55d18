"""A speaker-embedding model the workbench trains itself (the model; its training is
`workbench.checkmodels.speaker_train`, its verifier `workbench.verifiers.trained_speaker`).

Why: resemblyzer is the only pretrained speaker model offline here; Llasa §5 re-checks speaker
similarity with a second, independent model (ECAPA) so that search cannot just game the one it
optimises. `workbench-speaker` is that second model: speechbrain's ECAPA-TDNN at small width,
trained from scratch with an additive angular margin softmax (AAM, "ArcFace") on every
multi-speaker corpus at hand.

    from workbench.config import for_profile
    from workbench.checkmodels.speaker_train import SpeakerTrainConfig, train_speaker
    result = train_speaker(for_profile(SpeakerTrainConfig, "cpu"))   # reused if already trained
    result.eval["unseen"].eer
    workbench.verifiers.get("workbench-speaker").score(audios, 16000, prompts=prompt)

Data: each corpus's manifest splits decide what is held out. Speakers with no train/valid
utterance (the split code holds whole speakers out: two synthetic voices, one FSDD speaker, one
VCTK speaker, ...) are never seen in training; the test utterances of the other speakers are
held-out clips of seen speakers. Speaker labels are "corpus/speaker".

Training: random 2 s crops (short clips wrap around), class-balanced batches (a few clips of each
of several speakers), AAM margin ramped in over the first steps (a full margin on an untrained
network slows the start), AdamW with warm-up and cosine decay. Resume from
`<run>/checkpoints/last.pt` (written atomically); the final embedding model is `<run>/model.pt`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from workbench.checkmodels import common
from workbench.audio import equal_length_batches
from workbench.errors import VerifierError

RUN_KIND = "speaker"
MODEL_FILE = common.MODEL_FILE
CHECKPOINT_FILE = "checkpoints/last.pt"
SAMPLE_RATE_HZ = 16000
MODEL_FORMAT = "workbench-speaker/1"


@dataclass(frozen=True)
class SpeakerModelSpec:
    """Front end and ECAPA-TDNN shape; stored in each model file."""

    n_mels: int = 80
    n_fft: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    channels: int = 128  # of the four TDNN/SE-Res2Net blocks (the published model uses 512 / 1024)
    embedding_dim: int = 128
    res2net_scale: int = 4
    attention_channels: int = 64
    se_channels: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"SpeakerModelSpec.{name} = {value}: must be >= 1")
        if self.channels % self.res2net_scale:
            raise ValueError(f"SpeakerModelSpec.channels = {self.channels} must be divisible by "
                             f"res2net_scale = {self.res2net_scale}")


def speaker_features(wav: torch.Tensor, spec: SpeakerModelSpec) -> torch.Tensor:
    """(frames, n_mels) log-mel, mean-normalised per bin over the clip (removes the channel's
    fixed spectral colouring and the level; the variance is kept, it carries voice quality)."""
    from workbench.audio import log_mel

    feats = log_mel(wav.float(), SAMPLE_RATE_HZ, n_fft=spec.n_fft, hop_length=spec.hop_length, n_mels=spec.n_mels).T
    return feats - feats.mean(dim=0, keepdim=True)


class SpeakerEncoder(nn.Module):
    """(batch, frames, n_mels) features -> (batch, embedding_dim) speaker embeddings."""

    def __init__(self, spec: SpeakerModelSpec) -> None:
        super().__init__()
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        self.spec = spec
        c = spec.channels
        self.ecapa = ECAPA_TDNN(spec.n_mels, lin_neurons=spec.embedding_dim, channels=[c, c, c, c, 3 * c],
                                res2net_scale=spec.res2net_scale, attention_channels=spec.attention_channels,
                                se_channels=spec.se_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.ecapa(features).squeeze(1)

    @torch.no_grad()
    def embed(self, wavs: Sequence[torch.Tensor], batch_size: int = 16) -> torch.Tensor:
        """(n, embedding_dim) embeddings of 1-D 16 kHz waveforms. Only equal-length clips share a
        batch (see `equal_length_batches`: convolutions and pooling would see the padding)."""
        was_training = self.training
        self.eval()
        try:
            out: list[torch.Tensor] = [torch.empty(0)] * len(wavs)
            for indices in equal_length_batches(list(wavs), batch_size):
                feats = torch.stack([speaker_features(wavs[i], self.spec) for i in indices])
                feats = feats.to(next(self.parameters()).device)  # inputs go where the weights are
                for i, e in zip(indices, self(feats).cpu()):
                    out[i] = e
            return torch.stack(out)
        finally:
            self.train(was_training)


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (Deng et al. 2019): the target logit is s*cos(theta + m),
    so same-speaker embeddings must lie within an angle m closer than any other class's centre."""

    def __init__(self, embedding_dim: int, n_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, embedding_dim) * 0.01)
        self.scale = scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy loss, accuracy of the margin-free logits)."""
        cosine = nn.functional.normalize(embeddings) @ nn.functional.normalize(self.weight).T
        cosine = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
        target = cosine.gather(1, labels[:, None])
        theta = torch.acos(target)
        # Past theta + m = pi, cos would rise again; use the monotone extension cos(theta) - m*sin(m)
        # there (the usual ArcFace guard), so the penalty keeps growing with the angle.
        with_margin = torch.where(theta + margin < math.pi, torch.cos(theta + margin),
                                  target - margin * math.sin(margin))
        logits = cosine.scatter(1, labels[:, None], with_margin) * self.scale
        accuracy = (cosine.argmax(dim=1) == labels).float().mean()
        return nn.functional.cross_entropy(logits, labels), accuracy


# ---------------------------------------------------------------------------------------------
# Saving and loading


def save_model(model: SpeakerEncoder, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    from workbench.atomic import atomic_torch_save

    return atomic_torch_save({"format": MODEL_FORMAT, "spec": asdict(model.spec), "state_dict": model.state_dict(),
                              "extra": extra or {}}, path)


def resolve_model_path(model: str | Path | None, root: str | Path | None = None) -> Path:
    """A model file as is, a run directory's `model.pt`, or (None) the newest finished
    `speaker` run under the runs root that has one."""
    return common.resolve_model_path(model, root, verifier="workbench-speaker", run_kind=RUN_KIND,
                                             trainer="workbench.checkmodels.speaker_train.train_speaker")


def load_model(path: str | Path) -> SpeakerEncoder:
    """A `SpeakerEncoder` in eval mode from a model file or a run directory."""
    path = resolve_model_path(path)
    from workbench.checkpoints import load_weights_only

    blob = load_weights_only(path)  # refuses a file that holds more than weights
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise VerifierError(f"{path}: not a workbench speaker model file")
    model = SpeakerEncoder(SpeakerModelSpec(**blob["spec"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval()
