"""Audio as float32 tensors shaped (channels, samples): load, save, resample, loudness, log-mel.

Pure functions. File I/O goes through soundfile (libsndfile reads WAV and FLAC without the
torchcodec/ffmpeg stack that torchaudio 2.9+ needs for `load`); signal processing uses torchaudio.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from workbench.errors import VerifierError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the reason."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    n_channels: int
    n_frames: int

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | Path) -> AudioInfo:
    """Header information without decoding the samples. Raises AudioError on an unreadable file."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as error:  # noqa: BLE001 - libsndfile raises a variety of types
        raise AudioError(f"{path}: unreadable audio ({error})") from None
    return AudioInfo(sample_rate=int(info.samplerate), n_channels=int(info.channels), n_frames=int(info.frames))


def load_audio(path: str | Path, sample_rate: int | None = None, mono: bool = True) -> tuple[torch.Tensor, int]:
    """Read a WAV/FLAC file as float32 in [-1, 1], shape (channels, samples).

    With `mono`, channels are averaged; with `sample_rate`, the signal is resampled to it.
    Returns (wav, sample_rate_of_wav).
    """
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # noqa: BLE001
        raise AudioError(f"{path}: unreadable audio ({error})") from None
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    if mono:
        wav = to_mono(wav)
    if sample_rate is not None and sample_rate != rate:
        wav = resample(wav, rate, sample_rate)
        rate = sample_rate
    return wav, int(rate)


def save_audio(path: str | Path, wav: torch.Tensor, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write (channels, samples) or (samples,) float audio; clipped to [-1, 1]. Atomic."""
    import soundfile as sf

    from workbench.atomic import _atomic_write

    wav = wav.detach().float().cpu()
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.dim() != 2:
        raise AudioError(f"{path}: expected (channels, samples) audio, got shape {tuple(wav.shape)}")
    data = wav.clamp(-1.0, 1.0).numpy().T
    fmt = "FLAC" if str(path).lower().endswith(".flac") else "WAV"
    return _atomic_write(path, lambda h: sf.write(h, data, sample_rate, subtype=subtype, format=fmt), "wb")


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """Average the channels: (channels, samples) -> (1, samples)."""
    if wav.dim() == 1:
        return wav.unsqueeze(0)
    return wav.mean(dim=0, keepdim=True)


def resample(wav: torch.Tensor, orig_sample_rate: int, new_sample_rate: int) -> torch.Tensor:
    """Band-limited resampling (torchaudio's windowed-sinc), any leading shape."""
    if orig_sample_rate == new_sample_rate:
        return wav
    import torchaudio.functional as F

    return F.resample(wav, int(orig_sample_rate), int(new_sample_rate))


def loudness_lufs(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness per ITU-R BS.1770-4 (torchaudio), in LUFS."""
    import torchaudio.functional as F

    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    return float(F.loudness(wav, sample_rate))


def normalize_loudness(wav: torch.Tensor, sample_rate: int, target_lufs: float = -23.0,
                       peak_limit: float = 0.99) -> torch.Tensor:
    """Scale to `target_lufs` integrated loudness; the gain is capped so that no peak exceeds
    `peak_limit` (a clipped signal would be worse than a slightly quiet one)."""
    current = loudness_lufs(wav, sample_rate)
    if not np.isfinite(current):  # silence: nothing to scale
        return wav
    gain = 10.0 ** ((target_lufs - current) / 20.0)
    peak = float(wav.abs().max())
    if peak * gain > peak_limit and peak > 0:
        gain = peak_limit / peak
    return wav * gain


@functools.lru_cache(maxsize=8)
def _mel_transform(sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float,
                   f_max: float | None):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=n_fft,
        n_mels=n_mels, f_min=f_min, f_max=f_max, power=1.0, center=True, norm="slaney",
        mel_scale="slaney",
    )


def log_mel(wav: torch.Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 256,
            n_mels: int = 80, f_min: float = 0.0, f_max: float | None = None,
            eps: float = 1e-5) -> torch.Tensor:
    """Log-magnitude mel spectrogram, shape (..., n_mels, frames); natural log, floored at `eps`."""
    transform = _mel_transform(sample_rate, n_fft, hop_length, n_mels, f_min, f_max).to(wav.device)
    return torch.log(transform(wav).clamp_min(eps))


def equal_length_batches(wavs: Sequence[torch.Tensor], batch_size: int) -> list[list[int]]:
    """Indices of `wavs` grouped into batches of equal-length clips, at most `batch_size` each.

    Speaker encoders are not padding-invariant (speechbrain's Fbank + ECAPA convolutions see the
    zero tail within their receptive field; WavLM's group-normalised conv front end normalises
    over it), so padding would make a clip's score depend on what else is in its batch. Search
    compares candidates scored in different calls, so only equal lengths are batched together.
    """
    if batch_size < 1:
        raise VerifierError(f"batch_size must be >= 1, got {batch_size}")
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(wavs):
        by_length.setdefault(int(w.numel()), []).append(i)
    return [group[s:s + batch_size] for group in by_length.values() for s in range(0, len(group), batch_size)]
