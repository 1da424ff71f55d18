"""Frozen semantic teachers of the codec: waveform -> per-frame features the codes must carry.

X-codec2 distils w2v-BERT 2.0 (layer 16): its features enter the encoder beside the acoustic ones,
and a head on the quantised latents must reconstruct them, so the single codebook is pushed to
hold what the teacher hears, i.e. phonetic content. No such pretrained encoder loads offline
here. Two kinds of teacher are accepted at ``CodecConfig.semantic_model_path``:

- ``TransformersTeacher``: any speech encoder transformers can load (the paper's choice);
- ``ASRTeacher``: the workbench's own character CTC recogniser (`workbench.checkmodels`), a
  model file or an ``asr`` run directory. Its last hidden layer is what spells the characters,
  so distilling it makes the codes supervised semantic tokens in CosyVoice's sense (tokens
  taken from an ASR encoder), trained on this corpus' own transcripts.

Either teacher is frozen, in eval mode, held outside the codec's module tree (not in its state
dict) and loaded again from its path when the codec is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _to_frames(hidden: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(B, T, D) at the teacher's frame rate -> (B, n_frames, D) at the codec's (linear)."""
    return F.interpolate(hidden.transpose(1, 2), size=n_frames, mode="linear",
                         align_corners=False).transpose(1, 2)


def _resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    import torchaudio.functional as AF

    return AF.resample(wav, from_rate, to_rate)


class TransformersTeacher(nn.Module):
    """A pretrained speech encoder loaded through transformers: hidden states of one layer."""

    def __init__(self, path: str, layer: int, sample_rate: int):
        super().__init__()
        from transformers import AutoFeatureExtractor, AutoModel

        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(path)
        except (OSError, ValueError):
            self.feature_extractor = None  # raw-waveform encoders (wav2vec2-style) without one
        self.layer = layer
        self.sample_rate = sample_rate
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, n_frames: int) -> torch.Tensor:
        """wav (B, L) -> features (B, n_frames, dim)."""
        if self.feature_extractor is not None:
            rate = getattr(self.feature_extractor, "sampling_rate", self.sample_rate)
            audio = wav if rate == self.sample_rate else _resample(wav, self.sample_rate, rate)
            inputs = self.feature_extractor([a.cpu().numpy() for a in audio], sampling_rate=rate,
                                            return_tensors="pt", padding=True)
            inputs = {k: v.to(wav.device) for k, v in inputs.items()}
        else:
            inputs = {"input_values": wav}
        outputs = self.model(**inputs, output_hidden_states=True)
        hidden = outputs.hidden_states[min(self.layer, len(outputs.hidden_states) - 1)]
        return _to_frames(hidden, n_frames)

    def train(self, mode: bool = True) -> "TransformersTeacher":  # frozen: always in eval mode
        return super().train(False)


class ASRTeacher(nn.Module):
    """The workbench CTC recogniser's last hidden layer (normalised, before its output layer).

    The recogniser hears 16 kHz log-mel at 40 ms frames; a codec at another rate gets its input
    resampled, and the features are interpolated to the codec's frames."""

    def __init__(self, path: str | Path, sample_rate: int):
        super().__init__()
        from workbench.checkmodels.asr_model import SAMPLE_RATE_HZ, load_model

        self.model = load_model(path).eval().requires_grad_(False)
        self.sample_rate = sample_rate
        self.asr_rate = SAMPLE_RATE_HZ
        self.dim = int(self.model.spec.width)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, n_frames: int) -> torch.Tensor:
        """wav (B, L) -> features (B, n_frames, width). Rows are equally long (crops, or one
        utterance), so each row's log-mel is normalised over the whole row as at ASR training."""
        from workbench.checkmodels.asr_model import log_mel_features, pad_features

        audio = wav if self.sample_rate == self.asr_rate else _resample(wav, self.sample_rate, self.asr_rate)
        features, lengths = pad_features([log_mel_features(row.float().cpu(), self.model.spec) for row in audio])
        device = next(self.model.parameters()).device
        hidden, _ = self.model.hidden_states(features.to(device), lengths.to(device))
        return _to_frames(hidden.to(wav.dtype), n_frames)

    def train(self, mode: bool = True) -> "ASRTeacher":  # frozen: always in eval mode
        return super().train(False)


def is_workbench_asr(path: str | Path) -> bool:
    """True for a workbench ASR model file or an ``asr`` run directory holding ``model.pt``."""
    from workbench.checkpoints import load_weights_only

    path = Path(path)
    file = path / "model.pt" if path.is_dir() else path
    if not file.is_file() or file.suffix != ".pt":
        return False
    blob = load_weights_only(file)
    return isinstance(blob, dict) and blob.get("format") == "workbench-ctc-asr/1"


def load_teacher(path: str, layer: int, sample_rate: int) -> nn.Module:
    """The teacher at `path`: the workbench ASR when the path holds one, else transformers'."""
    if is_workbench_asr(path):
        return ASRTeacher(path, sample_rate)
    return TransformersTeacher(path, layer, sample_rate)
