"""`CodecConfig`: every size, rate and loss weight of the codec and its training, with profiles.

Profiles (see `workbench.config.for_profile`):

- ``smoke``: a few seconds on a CPU; tiny widths, a few steps. Checks plumbing, not quality.
- ``cpu``: the real 2-core run on Kathleen (16 kHz, 50 tokens/s, one FSQ codebook), at most
  15 minutes of training wall time. The codebook is FSQ levels (8, 5, 5, 5) = 1,000 codes rather
  than the paper's [4]*8 = 65,536: Kathleen's ~52 training minutes are ~156k frames, and the
  ~3 held-out minutes are ~9k frames, so 65,536 codes could be at most ~14 % used on held-out
  data and most of them would never get a gradient in 15 minutes of training. (8,5,5,5) is the
  FSQ paper's recommended level set near 2^10 (Mentzer et al. 2023, Table 1). The GAN is off in
  this profile by default: with the discriminators on, a training step measured 3.6x slower
  (benchmarks/codec_speed.py: 1.5 vs 0.42 steps/s, 1 thread), i.e. ~375 instead of ~1,360 steps
  in 15 minutes, and the mel-only codec is still far from converged at that point. Measured result
  of this profile (1,182 steps in 14 min, run ``runs/codec/cpu-kathleen``): Kathleen test STOI
  0.67, PESQ-WB 1.08, code perplexity 34 of 1,000 (usage 0.21); the under-used codebook is the
  main limit (see the issue note).
- ``gpu-1b`` (and the other gpu-* names): the paper's shape: [4]*8 FSQ, 1024-wide 12-layer
  Transformer decoder, GAN on after a warm-up, semantic teacher when a path is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class CodecConfig:
    # --- signal -------------------------------------------------------------------------------
    sample_rate: int = 16000
    strides: tuple[int, ...] = (2, 2, 4, 4, 5)  # product = hop = sample_rate / frame_rate
    # --- acoustic encoder (strided convs with Snake) --------------------------------------------
    encoder_channels: int = 48  # width after the input conv; doubled at every stride
    encoder_max_channels: int = 1024
    encoder_res_units: int = 3  # residual units per stride block (dilations 1, 3, 9, ...)
    encoder_kernel_size: int = 7
    latent_dim: int = 1024  # encoder output width (before the FSQ projection)
    # --- quantiser: one FSQ codebook ------------------------------------------------------------
    fsq_levels: tuple[int, ...] = (4, 4, 4, 4, 4, 4, 4, 4)
    # --- decoder (Vocos-style: ConvNeXt and/or Transformer backbone, inverse-STFT head) --------
    decoder_dim: int = 1024
    decoder_intermediate_dim: int = 4096
    decoder_resnet_layers: int = 4  # X-codec2 ResNet blocks, split evenly around the Transformer
    decoder_transformer_layers: int = 12
    decoder_heads: int = 16
    decoder_dropout: float = 0.1  # inside the ResNet blocks, as in X-codec2
    encoder_anti_alias: bool = True  # X-codec2's 2x up/down-sampled Snake (slow on CPU)
    # --- optional frozen semantic teacher (X-codec2 uses w2v-BERT 2.0, layer 16) ---------------
    semantic_model_path: str | None = None  # local path or hub id loaded through transformers
    semantic_layer: int = 16
    semantic_loss_weight: float = 5.0
    # --- losses ---------------------------------------------------------------------------------
    mel_loss_weight: float = 15.0
    mel_n_ffts: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)  # multi-scale (DAC-style)
    mel_n_mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    use_gan: bool = True
    disc_warmup_steps: int = 0  # generator-only steps before the discriminators start
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mrsd_n_ffts: tuple[int, ...] = (2048, 1024, 512)
    disc_channels: int = 32  # base width of both discriminators
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 1.0
    # --- optimisation ---------------------------------------------------------------------------
    learning_rate: float = 1e-4
    disc_learning_rate: float = 1e-4
    adam_betas: tuple[float, float] = (0.8, 0.9)
    weight_decay: float = 0.01
    warmup_steps: int = 3000
    min_lr_ratio: float = 0.1  # cosine decay down to this fraction of the peak
    grad_clip_norm: float = 1000.0
    batch_size: int = 8
    segment_s: float = 1.0  # random training crops
    max_steps: int = 400_000
    max_train_wall_s: float | None = None  # stop early (and checkpoint) past this wall time
    # --- bookkeeping ----------------------------------------------------------------------------
    eval_every: int = 5000
    checkpoint_every: int = 5000
    log_every: int = 50
    n_eval_utterances: int = 16
    eval_max_s: float = 4.0  # valid utterances cropped to this length for the periodic eval
    num_threads: int | None = None  # torch threads; None leaves torch's default
    seed: int = 0

    PROFILES: ClassVar[dict] = {
        "smoke": dict(
            encoder_channels=4, encoder_max_channels=16, encoder_res_units=1, latent_dim=16,
            fsq_levels=(4, 4), decoder_dim=32, decoder_intermediate_dim=64,
            decoder_resnet_layers=2, decoder_transformer_layers=1, decoder_heads=2,
            decoder_dropout=0.0, encoder_anti_alias=False,
            mel_n_ffts=(256, 1024), mel_n_mels=(20, 40), use_gan=True, disc_warmup_steps=2,
            mpd_periods=(2, 3), mrsd_n_ffts=(512,), disc_channels=4, learning_rate=1e-3,
            disc_learning_rate=1e-3, warmup_steps=2, batch_size=2, segment_s=0.4, max_steps=6,
            eval_every=3, checkpoint_every=3, log_every=1, n_eval_utterances=2, eval_max_s=1.0,
            num_threads=1,
        ),
        "cpu": dict(
            encoder_channels=8, encoder_max_channels=256, encoder_res_units=1, latent_dim=256,
            fsq_levels=(8, 5, 5, 5), decoder_dim=256, decoder_intermediate_dim=768,
            decoder_resnet_layers=4, decoder_transformer_layers=2, decoder_heads=4,
            decoder_dropout=0.0, encoder_anti_alias=False,
            mel_n_ffts=(128, 256, 512, 1024, 2048), mel_n_mels=(20, 40, 80, 80, 80),
            use_gan=False, disc_warmup_steps=2000, disc_channels=8,
            learning_rate=1e-3, disc_learning_rate=2e-4, warmup_steps=100, batch_size=8,
            segment_s=1.0, max_steps=2000, max_train_wall_s=14 * 60.0,
            eval_every=400, checkpoint_every=200, log_every=20, n_eval_utterances=8,
            # one thread: on the shared, oversubscribed 2 cores a 2-thread step measured 3-6x
            # slower than a 1-thread step (threads wait on each other at every barrier)
            eval_max_s=3.0, num_threads=1,
        ),
        "gpu-1b": dict(disc_warmup_steps=0, batch_size=16, segment_s=6.0),
        "gpu-3b": dict(disc_warmup_steps=0, batch_size=16, segment_s=6.0),
        "gpu-8b": dict(disc_warmup_steps=0, batch_size=16, segment_s=6.0),
    }

    def __post_init__(self) -> None:
        from workbench.config import ConfigError

        if self.sample_rate % self.hop_length:
            raise ConfigError(f"sample_rate {self.sample_rate} is not a multiple of hop {self.hop_length} "
                              f"(strides {self.strides})")
        if len(self.mel_n_ffts) != len(self.mel_n_mels):
            raise ConfigError(f"mel_n_ffts {self.mel_n_ffts} and mel_n_mels {self.mel_n_mels} differ in length")
        if any(level < 3 for level in self.fsq_levels):
            raise ConfigError(f"fsq_levels {self.fsq_levels}: every level must be >= 3 "
                              "(level 2 needs FSQ's symmetry-preserving mode)")
        if self.decoder_dim % self.decoder_heads:
            raise ConfigError(f"decoder_dim {self.decoder_dim} not divisible by decoder_heads {self.decoder_heads}")
        if self.decoder_resnet_layers and self.decoder_dim % 32:
            raise ConfigError(f"decoder_dim {self.decoder_dim} must be a multiple of 32 "
                              "(the X-codec2 ResNet blocks use GroupNorm with 32 groups)")
        if self.segment_s * self.sample_rate < 2 * self.hop_length:
            raise ConfigError(f"segment_s {self.segment_s} is shorter than two frames")

    @property
    def hop_length(self) -> int:
        hop = 1
        for stride in self.strides:
            hop *= stride
        return hop

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def codebook_size(self) -> int:
        size = 1
        for level in self.fsq_levels:
            size *= level
        return size

    @property
    def n_fft(self) -> int:
        """Inverse-STFT head size: 4 x hop, as in X-codec2 (1280 at hop 320)."""
        return 4 * self.hop_length
