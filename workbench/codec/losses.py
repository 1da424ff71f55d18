"""Codec losses: multi-scale log-mel L1 (DAC / X-codec2 reconstruction loss), least-squares GAN
losses and feature matching (HiFi-GAN), semantic reconstruction MSE (X-codec2)."""

from __future__ import annotations

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
