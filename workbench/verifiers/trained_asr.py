"""A small character-level CTC recogniser that the workbench trains itself, and its verifier.

Why: pocketsphinx is the only ASR model that ships offline here; a second, independent content
verifier lets search results be re-checked by a model that search did not optimise against (the
paper re-checks SIM with a second speaker model for the same reason, Llasa §5).

Model (`CTCRecognizer`): per-utterance normalised log-mel (80 bins, 10 ms hop) -> one strided
convolution (stride 4, 40 ms frames: read speech has ~12-15 characters per second, so CTC keeps
room for blanks between doubled letters) -> residual blocks of depthwise conv + LayerNorm + MLP
(ConvNeXt-style; convolutions keep both CPU cores busy where a recurrent layer would step frame
by frame) -> optionally a bidirectional GRU -> linear layer over blank + the characters `normalize_text` can emit. Greedy CTC
decoding. Padded frames are zeroed after every block, so a clip decodes the same alone or in a
padded batch.

The verifier `workbench-asr` loads a trained model from a run directory or a checkpoint file
(`model=`); without `model=` it takes the newest finished `asr` run under the runs root.
Training lives in `workbench.verifiers.train_asr`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.verifiers import trained_models
from workbench.verifiers.asr import ASRVerifierBase
from workbench.verifiers.base import VerifierError, register

# Blank first (CTC convention), then every character `normalize_text` leaves after spelling
# digits out: space, apostrophe, a-z.
BLANK = "_"
ALPHABET = (BLANK, " ", "'") + tuple("abcdefghijklmnopqrstuvwxyz")
MODEL_FILE = trained_models.MODEL_FILE
SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True)
class ASRModelSpec:
    """Architecture and front end of a `CTCRecognizer`; stored in every checkpoint so a model
    file is self-describing."""

    n_mels: int = 80
    n_fft: int = 400  # 25 ms window at 16 kHz
    hop_length: int = 160  # 10 ms
    stride: int = 4  # frames merged by the front-end convolution (40 ms output frames)
    width: int = 192
    n_blocks: int = 5
    kernel_size: int = 9  # depthwise kernel, in output frames (9 x 40 ms = 0.36 s)
    mlp_ratio: int = 2
    dropout: float = 0.1
    rnn_layers: int = 0  # bidirectional GRU layers after the conv blocks (width/2 per direction)
    vocab: tuple[str, ...] = ALPHABET

    def __post_init__(self) -> None:
        for name in ("n_mels", "n_fft", "hop_length", "stride", "width", "n_blocks", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"ASRModelSpec.{name} = {getattr(self, name)}: must be >= 1")
        if self.rnn_layers < 0 or (self.rnn_layers and self.width % 2):
            raise ValueError(f"ASRModelSpec.rnn_layers = {self.rnn_layers} with width {self.width}: "
                             "need rnn_layers >= 0 and an even width")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"ASRModelSpec.kernel_size = {self.kernel_size}: must be odd and >= 1")
        if not self.vocab or self.vocab[0] != BLANK:
            raise ValueError(f"ASRModelSpec.vocab must start with the blank {BLANK!r}, got {self.vocab[:3]!r}")


# ---------------------------------------------------------------------------------------------
# Text <-> ids


def encode_text(text: str, vocab: tuple[str, ...] = ALPHABET) -> list[int]:
    """Ids of a normalised transcript (see `normalize_text`); raises on a character outside `vocab`."""
    index = {c: i for i, c in enumerate(vocab)}
    try:
        return [index[c] for c in text]
    except KeyError as error:
        raise ValueError(f"character {error.args[0]!r} of {text!r} is not in the ASR vocabulary") from None


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: tuple[str, ...] = ALPHABET) -> list[str]:
    """Best-path CTC decoding of (batch, frames, vocab) scores: argmax per frame, merge repeats,
    drop blanks, collapse spaces."""
    best = log_probs.argmax(dim=-1).cpu()
    texts = []
    for row, length in zip(best, lengths.tolist()):
        ids = row[:length].tolist()
        chars = [vocab[i] for j, i in enumerate(ids) if i != 0 and (j == 0 or i != ids[j - 1])]
        texts.append(" ".join("".join(chars).split()))
    return texts


# ---------------------------------------------------------------------------------------------
# Features


def log_mel_features(wav: torch.Tensor, spec: ASRModelSpec) -> torch.Tensor:
    """(frames, n_mels) log-mel of a 1-D 16 kHz waveform, mean- and variance-normalised over the
    utterance per bin: removes the recording channel's spectral tilt and the level, which differ
    between corpora far more than the speech does."""
    from workbench.audio import log_mel

    feats = log_mel(wav.float(), SAMPLE_RATE_HZ, n_fft=spec.n_fft, hop_length=spec.hop_length,
                    n_mels=spec.n_mels).T  # (frames, n_mels)
    mean = feats.mean(dim=0, keepdim=True)
    std = feats.std(dim=0, keepdim=True, unbiased=False) if feats.shape[0] > 1 else torch.ones_like(mean)
    return (feats - mean) / (std + 1e-5)


def pad_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (frames, n_mels) tensors into (batch, max_frames, n_mels) plus their lengths."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    batch = torch.zeros(len(features), int(lengths.max()), features[0].shape[1])
    for i, f in enumerate(features):
        batch[i, :f.shape[0]] = f
    return batch, lengths


# ---------------------------------------------------------------------------------------------
# Model


class ConvBlock(nn.Module):
    """Depthwise conv over time (context) -> LayerNorm -> pointwise MLP (mixing), residual."""

    def __init__(self, width: int, kernel_size: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * width, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (batch, frames, width); mask: (batch, frames, 1), 1 on real frames.
        h = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return (x + self.mlp(self.norm(h))) * mask


class CTCRecognizer(nn.Module):
    """Normalised log-mel frames -> per-frame log-probabilities over `spec.vocab` (blank = 0)."""

    def __init__(self, spec: ASRModelSpec) -> None:
        super().__init__()
        self.spec = spec
        # Kernel 2*stride-1 centred on each output frame: neighbouring windows overlap by a frame.
        kernel = 2 * spec.stride + 1
        self.front = nn.Conv1d(spec.n_mels, spec.width, kernel, stride=spec.stride, padding=kernel // 2)
        self.front_norm = nn.LayerNorm(spec.width)
        self.blocks = nn.ModuleList(ConvBlock(spec.width, spec.kernel_size, spec.mlp_ratio, spec.dropout)
                                    for _ in range(spec.n_blocks))
        # Optional recurrent layers: a GRU carries context across the whole utterance, which
        # helps CTC spell; packed sequences keep padding out of the recurrence.
        self.rnn = (nn.GRU(spec.width, spec.width // 2, num_layers=spec.rnn_layers, batch_first=True,
                           bidirectional=True) if spec.rnn_layers else None)
        self.out_norm = nn.LayerNorm(spec.width)
        self.head = nn.Linear(spec.width, len(spec.vocab))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames of inputs with `lengths` frames (the strided convolution's arithmetic)."""
        kernel = 2 * self.spec.stride + 1
        return (lengths + 2 * (kernel // 2) - kernel) // self.spec.stride + 1

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (batch, frames, n_mels), zero beyond `lengths` -> (log_probs (batch, out_frames,
        vocab), out_lengths)."""
        out_lengths = self.output_lengths(lengths)
        x = self.front(features.transpose(1, 2)).transpose(1, 2)
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < out_lengths[:, None]).unsqueeze(-1)
        mask = mask.to(x.dtype)
        x = nn.functional.gelu(self.front_norm(x)) * mask
        for block in self.blocks:
            x = block(x, mask)
        if self.rnn is not None:
            packed = nn.utils.rnn.pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.rnn(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
            x = x + h  # residual: the conv features stay available to the head
        return self.head(self.out_norm(x)).log_softmax(dim=-1), out_lengths

    @torch.no_grad()
    def transcribe(self, wavs: list[torch.Tensor], batch_size: int = 16) -> list[str]:
        """Greedy transcripts of 1-D 16 kHz waveforms (normalised text: lowercase, no punctuation)."""
        was_training = self.training
        self.eval()
        try:
            # Sort by length so each padded batch wastes little compute; restore the order after.
            order = sorted(range(len(wavs)), key=lambda i: wavs[i].numel())
            out: list[str] = [""] * len(wavs)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                features, lengths = pad_features([log_mel_features(wavs[i], self.spec) for i in idx])
                log_probs, out_lengths = self(features, lengths)
                for i, text in zip(idx, greedy_decode(log_probs, out_lengths, self.spec.vocab)):
                    out[i] = text
            return out
        finally:
            self.train(was_training)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Saving and loading


def save_model(model: CTCRecognizer, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a self-describing model file (spec + weights + `extra` metadata), atomically."""
    from workbench.atomic import atomic_torch_save

    spec = asdict(model.spec)
    spec["vocab"] = list(spec["vocab"])
    return atomic_torch_save({"format": "workbench-ctc-asr/1", "spec": spec,
                              "state_dict": model.state_dict(), "extra": extra or {}}, path)


def load_model(path: str | Path) -> CTCRecognizer:
    """A `CTCRecognizer` in eval mode from a model file, or a run directory holding `model.pt`."""
    path = resolve_model_path(path)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "workbench-ctc-asr/1":
        raise VerifierError(f"{path}: not a workbench CTC ASR model file (format "
                            f"{blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    spec_dict = dict(blob["spec"])
    spec_dict["vocab"] = tuple(spec_dict["vocab"])
    model = CTCRecognizer(ASRModelSpec(**spec_dict))
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def resolve_model_path(model: str | Path | None, root: str | Path | None = None) -> Path:
    """The model file for `model`: a file as is, a run directory's `model.pt`, or (None) the newest
    finished `asr` run under the runs root that has one."""
    return trained_models.resolve_model_path(model, root, verifier="workbench-asr", run_kind="asr",
                                             trainer="workbench.verifiers.train_asr.train_asr")


_cached_model: trained_models.ModelCache[CTCRecognizer] = trained_models.ModelCache(load_model)


# ---------------------------------------------------------------------------------------------
# The verifier


@register("workbench-asr")
class WorkbenchASRVerifier(trained_models.TrainedModelVerifier, ASRVerifierBase):
    """Content verifier from the workbench's own CTC model: score = 1 - WER of its greedy
    transcript against the target text (shared normaliser). `model`: run directory or model file;
    None = newest finished `asr` run under `root` (default: $WORKBENCH_RUNS or ./runs).
    The model loads on first use and is cached per process."""

    name = "workbench-asr"
    sample_rate_hz = SAMPLE_RATE_HZ
    resolve_model_path = staticmethod(resolve_model_path)

    def transcribe_prepared(self, wavs: list[torch.Tensor]) -> list[str]:
        network = _cached_model(self.model_path)
        return network.transcribe(wavs, batch_size=self.batch_size)
