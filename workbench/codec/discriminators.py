"""Discriminators of X-codec2's GAN stage: multi-period (HiFi-GAN, Kong et al. 2020) and
multi-resolution spectrogram (UnivNet / Vocos). Each returns, per sub-discriminator, its logits
and the list of intermediate feature maps used by the feature-matching loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass
class DiscriminatorOutput:
    logits: list[torch.Tensor]  # one per sub-discriminator
    features: list[list[torch.Tensor]]  # feature maps per sub-discriminator


def _conv_stack(convs: nn.ModuleList, out: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A sub-discriminator's convolutions (leaky ReLU after each) and output layer: its flattened
    logits and every layer's feature map."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        features.append(x)
    x = out(x)
    features.append(x)
    return x.flatten(1), features


def _run_all(discriminators: nn.ModuleList, wav: torch.Tensor) -> DiscriminatorOutput:
    """Every sub-discriminator's logits and feature maps on `wav`."""
    results = [d(wav) for d in discriminators]
    return DiscriminatorOutput([r[0] for r in results], [r[1] for r in results])


class PeriodDiscriminator(nn.Module):
    """Folds the waveform into (frames, period) and convolves along frames only, so that each
    column sees samples `period` apart: catches periodic (pitch-related) artefacts."""

    def __init__(self, period: int, channels: int):
        super().__init__()
        self.period = period
        widths = [1, channels, 4 * channels, 16 * channels, 32 * channels, 32 * channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(widths[i], widths[i + 1], (5, 1), (3 if i < 4 else 1, 1), (2, 0)))
            for i in range(5)
        )
        self.out = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), 1, (1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, channels, length = wav.shape
        if length % self.period:
            wav = F.pad(wav, (0, self.period - length % self.period), mode="reflect")
        x = wav.view(batch, channels, -1, self.period)
        return _conv_stack(self.convs, self.out, x)


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        return _run_all(self.discriminators, wav)


class SpectrogramDiscriminator(nn.Module):
    """2-D convs over one STFT magnitude (log-compressed) of the waveform."""

    def __init__(self, n_fft: int, channels: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, channels, (7, 5), (2, 2), (3, 2))),
            weight_norm(nn.Conv2d(channels, channels, (5, 3), (2, 1), (2, 1))),
            weight_norm(nn.Conv2d(channels, channels, (5, 3), (2, 1), (2, 1))),
            weight_norm(nn.Conv2d(channels, channels, 3, 1, 1)),
        ])
        self.out = weight_norm(nn.Conv2d(channels, 1, 3, 1, 1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(wav[:, 0], self.n_fft, self.hop_length, window=self.window,
                          return_complex=True, center=True)
        x = torch.log1p(spec.abs()).unsqueeze(1)  # (B, 1, freq, frames)
        return _conv_stack(self.convs, self.out, x)


class MultiResolutionSpectrogramDiscriminator(nn.Module):
    def __init__(self, n_ffts: tuple[int, ...] = (2048, 1024, 512), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(SpectrogramDiscriminator(n, channels) for n in n_ffts)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        return _run_all(self.discriminators, wav)


class CodecDiscriminators(nn.Module):
    """Both discriminators together; their outputs are concatenated lists."""

    def __init__(self, periods: tuple[int, ...], n_ffts: tuple[int, ...], channels: int):
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(periods, channels)
        self.mrsd = MultiResolutionSpectrogramDiscriminator(n_ffts, channels)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        a, b = self.mpd(wav), self.mrsd(wav)
        return DiscriminatorOutput(a.logits + b.logits, a.features + b.features)
