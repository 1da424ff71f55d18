"""Reconstruction metrics, each named once and computed the same way everywhere.

STOI and PESQ come from the `pystoi` and `pesq` packages (ITU-T P.862.2 wide-band at 16 kHz and
P.862.1 narrow-band at 8 kHz); inputs at other rates are resampled first. All functions take 1-D
float tensors or arrays (reference first, then the degraded signal) of equal length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    return x


def _same_length(reference, degraded) -> tuple[np.ndarray, np.ndarray]:
    ref, deg = _numpy(reference), _numpy(degraded)
    if ref.shape != deg.shape:
        raise ValueError(f"reference and degraded lengths differ: {ref.shape[0]} vs {deg.shape[0]}")
    return ref, deg


def _resampled(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return x
    from workbench.audio import resample

    return resample(torch.from_numpy(x).float(), from_rate, to_rate).double().numpy()


def stoi(reference, degraded, sample_rate: int) -> float:
    """Short-time objective intelligibility (Taal et al. 2011), 0-1, higher is better."""
    from pystoi import stoi as _stoi

    ref, deg = _same_length(reference, degraded)
    return float(_stoi(ref, deg, sample_rate, extended=False))


def pesq_wb(reference, degraded, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.0-4.64) at 16 kHz."""
    from pesq import pesq

    ref, deg = _same_length(reference, degraded)
    return float(pesq(16000, _resampled(ref, sample_rate, 16000), _resampled(deg, sample_rate, 16000), "wb"))


def pesq_nb(reference, degraded, sample_rate: int) -> float:
    """Narrow-band PESQ (MOS-LQO, about 1.0-4.55) at 8 kHz."""
    from pesq import pesq

    ref, deg = _same_length(reference, degraded)
    return float(pesq(8000, _resampled(ref, sample_rate, 8000), _resampled(deg, sample_rate, 8000), "nb"))


def si_sdr(reference, estimate) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019); mean removed first."""
    ref, est = _same_length(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    scale = np.dot(est, ref) / max(np.dot(ref, ref), 1e-12)
    target = scale * ref
    noise = est - target
    return float(10 * np.log10(max(np.dot(target, target), 1e-12) / max(np.dot(noise, noise), 1e-12)))


def mel_distance(reference, degraded, sample_rate: int) -> float:
    """Mean absolute difference of natural-log mel spectrograms (80 mels, n_fft 1024, hop 256,
    floor 1e-5): the usual "mel distance" of codec papers; 0 for identical signals."""
    from workbench.audio import log_mel

    ref, deg = _same_length(reference, degraded)
    a = log_mel(torch.from_numpy(ref).float(), sample_rate)
    b = log_mel(torch.from_numpy(deg).float(), sample_rate)
    return float((a - b).abs().mean())


@dataclass(frozen=True)
class CodebookStats:
    codebook_size: int
    n_codes_used: int
    usage: float  # n_codes_used / codebook_size
    perplexity: float  # exp(entropy of the code histogram), in codes; codebook_size at most
    n_frames: int


def codebook_stats(codes: torch.Tensor | np.ndarray, codebook_size: int) -> CodebookStats:
    """Usage and perplexity of a flat set of codes."""
    flat = torch.as_tensor(codes).reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
        raise ValueError(f"codes outside [0, {codebook_size}): {int(flat.min())}..{int(flat.max())}")
    counts = torch.bincount(flat, minlength=codebook_size).double()
    total = counts.sum()
    if total == 0:
        return CodebookStats(codebook_size, 0, 0.0, 0.0, 0)
    p = counts[counts > 0] / total
    entropy = float(-(p * p.log()).sum())
    used = int((counts > 0).sum())
    return CodebookStats(codebook_size=codebook_size, n_codes_used=used, usage=used / codebook_size,
                         perplexity=math.exp(entropy), n_frames=int(total))


def bitrate_bps(frame_rate_hz: float, codebook_size: int, n_codebooks: int = 1) -> float:
    """Nominal bitrate: frames per second x bits per frame."""
    return frame_rate_hz * n_codebooks * math.log2(codebook_size)
