"""Codec losses: multi-scale log-mel L1 (DAC / X-codec2 reconstruction loss), multi-resolution
linear STFT loss (Parallel WaveGAN), a phase-aware multi-resolution compressed complex STFT
loss, least-squares GAN losses and feature matching (HiFi-GAN),
semantic reconstruction MSE (X-codec2), and a codebook-entropy regulariser for FSQ (the batch
entropy term of MAGVIT-v2's LFQ, Yu et al. 2024, applied to FSQ's soft code assignments)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workbench.codec.discriminators import DiscriminatorOutput


class MultiScaleMelLoss(nn.Module):
    """Mean over scales of L1 between log10 mel spectrograms (hop = n_fft / 4 at every scale).

    Small windows constrain timing and, through overlap, the phase of the inverse-STFT head;
    large windows constrain pitch harmonics. The clamp floor keeps silence from dominating."""

    def __init__(self, sample_rate: int, n_ffts: tuple[int, ...], n_mels: tuple[int, ...],
                 floor: float = 1e-5):
        super().__init__()
        import torchaudio

        if len(n_ffts) != len(n_mels):
            raise ValueError(f"n_ffts {n_ffts} and n_mels {n_mels} differ in length")
        self.floor = floor
        self.transforms = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=n_fft // 4,
                n_mels=mels, power=1.0, center=True, norm="slaney", mel_scale="slaney",
            )
            for n_fft, mels in zip(n_ffts, n_mels)
        )

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for transform in self.transforms:
            log_pred = torch.log10(transform(prediction).clamp_min(self.floor))
            log_true = torch.log10(transform(target).clamp_min(self.floor))
            total = total + F.l1_loss(log_pred, log_true)
        return total / len(self.transforms)


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence plus log-magnitude L1 (Yamamoto et al. 2020).

    Linear-frequency magnitudes weigh the 4-8 kHz band that the mel scale compresses, and the
    spectral-convergence term (relative Frobenius error) weighs loud regions, which is where
    STOI and PESQ look; hop = n_fft / 4, Hann window."""

    def __init__(self, n_ffts: tuple[int, ...], eps: float = 1e-5):
        super().__init__()
        if not n_ffts:
            raise ValueError("MultiResolutionSTFTLoss needs at least one n_fft")
        self.n_ffts = tuple(n_ffts)
        self.eps = eps
        for n_fft in self.n_ffts:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def _magnitude(self, wav: torch.Tensor, n_fft: int) -> torch.Tensor:
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), n_fft, hop_length=n_fft // 4,
                          window=getattr(self, f"window_{n_fft}"), return_complex=True)
        return spec.abs().clamp_min(self.eps)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for n_fft in self.n_ffts:
            mag_pred = self._magnitude(prediction, n_fft)
            mag_true = self._magnitude(target, n_fft)
            convergence = torch.linalg.norm(mag_true - mag_pred) / torch.linalg.norm(mag_true).clamp_min(self.eps)
            total = total + convergence + F.l1_loss(torch.log(mag_pred), torch.log(mag_true))
        return total / len(self.n_ffts)


class MultiResolutionComplexSTFTLoss(nn.Module):
    """Phase-aware: mean over resolutions of L1 between the real and imaginary parts of
    power-law-compressed complex spectra, |X|^c * exp(i angle X) (c = 0.3, as in speech
    enhancement, so that quiet bins still count).

    The mel and linear STFT losses see magnitudes only, so the inverse-STFT head may output any
    phase (SI-SDR about -33 dB on the cpu codec) and PESQ hears the resulting phasiness; this loss
    is zero only when both magnitude and phase match. hop = n_fft / 4, Hann window."""

    def __init__(self, n_ffts: tuple[int, ...], compression: float = 0.3, eps: float = 1e-5):
        super().__init__()
        if not n_ffts:
            raise ValueError("MultiResolutionComplexSTFTLoss needs at least one n_fft")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        self.n_ffts = tuple(n_ffts)
        self.compression = compression
        self.eps = eps
        for n_fft in self.n_ffts:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def _compressed(self, wav: torch.Tensor, n_fft: int) -> torch.Tensor:
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), n_fft, hop_length=n_fft // 4,
                          window=getattr(self, f"window_{n_fft}"), return_complex=True)
        # |X|^c e^{i phi} = X |X|^(c-1); the floor keeps the gradient finite at silent bins
        scale = spec.abs().clamp_min(self.eps) ** (self.compression - 1)
        return torch.view_as_real(spec * scale)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for n_fft in self.n_ffts:
            total = total + F.l1_loss(self._compressed(prediction, n_fft), self._compressed(target, n_fft))
        return total / len(self.n_ffts)


def fsq_code_probabilities(fsq_values: torch.Tensor, levels: tuple[int, ...],
                           temperature: float) -> torch.Tensor:
    """Soft code assignment of every frame: (..., len(levels)) bounded FSQ values in level units
    -> (N, prod(levels)) probabilities, the product over dimensions of
    softmax_k(-(value - centre_k)^2 / temperature) with centres k - L // 2, k = 0..L-1."""
    if fsq_values.shape[-1] != len(levels):
        raise ValueError(f"fsq_values has {fsq_values.shape[-1]} dimensions, levels {levels} has {len(levels)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    values = fsq_values.reshape(-1, len(levels))
    joint = values.new_ones(values.shape[0], 1)
    for d, level in enumerate(levels):
        centres = torch.arange(level, dtype=values.dtype, device=values.device) - level // 2
        probs = torch.softmax(-(values[:, d : d + 1] - centres) ** 2 / temperature, dim=-1)
        joint = (joint.unsqueeze(-1) * probs.unsqueeze(1)).reshape(values.shape[0], -1)
    return joint


def codebook_entropy_loss(fsq_values: torch.Tensor, levels: tuple[int, ...],
                          temperature: float = 0.3) -> torch.Tensor:
    """1 - H(mean soft code distribution over the batch) / log(codebook size), in [0, 1].

    0 when the frames of the batch spread evenly over the whole codebook, 1 when they all sit on
    one code. Its gradient moves frames near a bin boundary toward the less used side, which
    counters the collapse of FSQ inputs onto a few codes (the cpu run without it: perplexity 34
    of 1,000). Only the batch term: rounding already makes each frame's code hard."""
    probs = fsq_code_probabilities(fsq_values, levels, temperature)
    mean = probs.mean(dim=0)
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum()
    return 1.0 - entropy / math.log(probs.shape[-1])


def discriminator_loss(real: DiscriminatorOutput, fake: DiscriminatorOutput) -> torch.Tensor:
    """LSGAN: real logits toward 1, generated toward 0; summed over sub-discriminators."""
    total = real.logits[0].new_zeros(())
    for r, f in zip(real.logits, fake.logits):
        total = total + torch.mean((1 - r) ** 2) + torch.mean(f ** 2)
    return total


def generator_adversarial_loss(fake: DiscriminatorOutput) -> torch.Tensor:
    total = fake.logits[0].new_zeros(())
    for f in fake.logits:
        total = total + torch.mean((1 - f) ** 2)
    return total


def feature_matching_loss(real: DiscriminatorOutput, fake: DiscriminatorOutput) -> torch.Tensor:
    """Mean L1 between the discriminator feature maps of real and generated audio (real detached)."""
    total = fake.logits[0].new_zeros(())
    count = 0
    for real_maps, fake_maps in zip(real.features, fake.features):
        for r, f in zip(real_maps, fake_maps):
            total = total + F.l1_loss(f, r.detach())
            count += 1
    return total / max(count, 1)


def semantic_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(prediction, target)
