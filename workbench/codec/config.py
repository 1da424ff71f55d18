"""`CodecConfig`: every size, rate and loss weight of the codec and its training, with profiles.

Profiles (see `workbench.config.for_profile`):

- ``smoke``: a few seconds on a CPU; tiny widths, a few steps. Checks plumbing, not quality.
- ``cpu``: the real 2-core run on Kathleen (16 kHz, 50 tokens/s, one FSQ codebook), 2,500
  steps (~14 minutes on a lightly loaded machine). Everything here is bought in steps per minute: on the shared
  2 cores a step of batch 8 x 1 s takes 0.3-0.9 s, so 15 minutes is ~1-2k steps, and each choice
  below was measured in short pilot trainings (3-5.5 min, 3-4 runs side by side so that they
  share the machine's load; valid mel, and STOI/usage on 10 Kathleen test utterances).

  * Codebook: FSQ (5, 5, 5, 5) = 625 codes, not the paper's [4]*8 = 65,536 (Kathleen's ~3
    held-out minutes are ~7k frames: 65,536 codes could be at most ~11 % used, and most would
    never get a gradient in 15 minutes) and not (8, 5, 5, 5) = 1,000 (the first cpu run:
    perplexity 34 of 1,000, usage 0.21). Equal-level 5s keep every dimension's bins equally
    easy to fill, and 625 codes are ~11 frames each on the test set; pilots at ~115 steps with
    the same regulariser: usage 0.26 of 625 vs 0.19 of 1,000 (perplexity 53 vs 80), valid mel
    0.435 vs 0.439, STOI 0.568 vs 0.550 (too early for quality to separate).
  * ``code_entropy_weight=2``: the batch codebook-entropy regulariser on FSQ's soft code
    assignment (`losses.codebook_entropy_loss`). The mel loss alone lets the 4 FSQ inputs
    collapse onto a few bins (pilot without it: perplexity 13 of 625 after 260 steps). With it
    (same 260 steps, 5.5 min): perplexity 177 vs 13, valid mel 0.366 vs 0.379, STOI 0.639 vs
    0.619, i.e. more bits per frame and better reconstruction, not a trade. Weight 5 was not
    better than 2 at ~100 steps (perplexity 46 vs 53).
  * Encoder: strides (4, 4, 4, 5) from width 8 (8-16-32-64-128, then 256) instead of X-codec2's
    (2, 2, 4, 4, 5) from width 8: the same hop of 320 with one block fewer at 8-16 kHz, where the
    Snake activations are memory-bound; a training step measured ~25-30 % faster (0.30-0.43 s vs
    0.41-0.44 s, 1 thread). The decoder keeps 256 wide, 4 ResNet + 2 Transformer layers: a
    192-wide, 2-ResNet decoder ran ~20 % more steps but ended worse at equal wall time (valid
    mel 0.509 vs 0.459).
  * Loss: multi-scale mel only. Adding the multi-resolution linear STFT loss (weight 1) cost
    ~12 % of the steps and did not help at equal wall time (260-step pilots: valid mel 0.374 vs
    0.366, STOI 0.630 vs 0.639); it stays available (``stft_loss_weight``). The GAN is off: with
    the discriminators a step measured 3.6x slower (benchmarks/codec_speed.py).
  * Batch 8 x 1 s: batch 4 made a step only ~1.5x faster and was no better at equal wall time
    (valid mel 0.463 vs 0.459).
  * Schedule: lr 2e-3 (100 warm-up steps), cosine to 0.1x over ``max_steps=2500``, by steps
    only, so that a config determines its codec whatever the machine's load. (Earlier runs
    drove the cosine by the wall clock and stopped at 14 minutes: they reached 2,476-2,827
    steps, so 2,500 steps is the same amount of training; the wall time it takes is logged
    and reported, not targeted.)
  * Levers, off by default (ablation ``python -m workbench.codec.study --profile cpu --steps
    500``, every variant 500 steps from the same initial weights and crops, evaluated on the 47
    held-out Kathleen utterances and the 40 VCTK ones; wall time on the shared, heavily loaded
    2 cores, load average 6-9, and the wall-clock column only indicative)::

      variant       STOI   PESQ-WB  PESQ-NB  mel    SI-SDR  usage  perplexity  WER    SIM    VCTK STOI  s/step
      baseline      0.640  1.064    1.269    0.817  -34.5   0.974  488         0.974  0.581  0.558      1.70
      +ctc          0.647  1.070    1.295    0.849  -37.6   0.974  417         0.976  0.572  0.557      2.00
      +phase        0.641  1.066    1.283    0.837  -30.0   0.918  350         0.970  0.579  0.557      1.85
      +ctc +phase   0.648  1.073    1.310    0.826  -34.5   0.963  430         0.973  0.583  0.553      2.58
      +gan late     0.638  1.066    1.269    0.817  -36.2   0.974  492         0.970  0.589  0.552      3.65

    (WER: pocketsphinx on the resynthesis, 0.303 on the originals.) ``ctc_weight=1`` (batch of
    2 whole utterances <= 4 s): after 500 steps its CTC loss is still 2.6-2.9 nats per
    character, about a unigram model of the letters, i.e. the head has not yet learned to align
    and the codes carry no more words than the baseline's (WER 0.976 vs 0.974); it costs ~1.7x
    per step (benchmarks/codec_speed.py). ``complex_stft_loss_weight=10`` moves the output
    toward the original's phase (SI-SDR -30.0 vs -34.5 dB) but not PESQ (1.066 vs 1.064), with
    fewer codes in use (perplexity 350 vs 488), at 1.2-1.6x per step. The GAN for the last 100
    steps (``use_gan``, ``disc_warmup_steps=400``) changed nothing measurable in so few
    adversarial steps, at 5-6x per GAN step. No lever moved STOI, PESQ or WER by more than
    0.01 at 500 steps, so this profile keeps the baseline; the CTC objective needs a longer run to be judged (its loss had not broken away
    from the letter-frequency plateau; a probe at ``ctc_weight=5`` on this profile's 2,500-step
    schedule was still at 2.74-2.93 nats per character at steps 280-400, at ~1.7 steps/s on a
    then lightly loaded machine).

  * Semantic teacher: the study (`codec.study.CodecStudyConfig.semantic_teacher: asr`, the cpu
    default) sets ``semantic_model_path`` to the workbench ASR trained on the originals first
    (`codec.teachers.ASRTeacher`). At 2,500 steps it raised the held-out code information from
    0.31 to 0.43-0.59 nats per frame and a cpu-1m LM's text gain from 0.036 to 0.15-0.20 nats
    per token, for STOI 0.73-0.75 instead of 0.80 (docs/design.md, "Codes that carry the words").

  Results of the first cpu run (``runs/codec/cpu-kathleen``: (8,5,5,5), no regulariser, lr 1e-3,
  1,182 steps in 14 min): Kathleen test STOI 0.67, PESQ-WB 1.08, usage 0.21 (perplexity 34 of
  1,000). This profile (``runs/codec/cpu-kathleen-v2``, 2,634 steps in 14 min at ~3.2 steps/s
  on a then lightly loaded machine, 4.0M parameters): Kathleen test (47 utterances) STOI 0.79,
  PESQ-WB 1.13 (NB 1.45), usage 1.00 (perplexity 547 of 625), pocketsphinx WER 0.69 on the
  resynthesis vs 0.30 on the originals, resemblyzer similarity 0.75; VCTK (unseen speakers)
  STOI 0.65, usage 0.96; encode + decode RTF 0.03. PESQ is the gap, most likely the phase
  artefacts of an inverse-STFT head trained on magnitudes only (no GAN; the output is not
  phase-aligned at all, SI-SDR about -33 dB), plus ~9.3 bits per frame from a 4M-parameter model.
- ``gpu-1b`` (and the other gpu-* names): the paper's shape: [4]*8 FSQ, 1024-wide 12-layer
  Transformer decoder, GAN on after a warm-up, semantic teacher when a path is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from workbench.settings import stage_profiles

# Fields older codecs were saved with that no longer exist: the wall-clock schedule and stop
# (removed so that a config alone determines the codec). Dropped when such a codec is loaded.
RETIRED_FIELDS = ("max_train_wall_s", "schedule_on_wall_time")


def current_fields(params: dict[str, Any]) -> dict[str, Any]:
    """A saved codec's config without its retired fields (what `from_params` accepts now)."""
    return {k: v for k, v in params.items() if k not in RETIRED_FIELDS}


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
    # a speech encoder transformers loads (path or hub id), or a workbench ASR model file / asr
    # run directory (codec.teachers.ASRTeacher, whose last hidden layer is used: semantic_layer
    # applies to transformers teachers only)
    semantic_model_path: str | None = None
    semantic_layer: int = 16
    semantic_loss_weight: float = 5.0
    # --- losses ---------------------------------------------------------------------------------
    mel_loss_weight: float = 15.0
    mel_n_ffts: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)  # multi-scale (DAC-style)
    mel_n_mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    stft_loss_weight: float = 0.0  # multi-resolution linear STFT loss (Parallel WaveGAN); 0 = off
    stft_n_ffts: tuple[int, ...] = (512, 1024, 2048)
    # phase-aware loss on compressed complex spectra (losses.MultiResolutionComplexSTFTLoss); 0 = off
    complex_stft_loss_weight: float = 0.0
    complex_stft_n_ffts: tuple[int, ...] = (256, 512, 1024)
    complex_stft_compression: float = 0.3  # magnitude exponent c of |X|^c e^{i phase}
    # --- supervised semantic objective (codec.semantic_head): CTC on the quantised latents -----
    # against the transcript's characters; training only (the head is not part of codec.pt)
    ctc_weight: float = 0.0  # 0 = off: no head, no extra batch, training exactly as without it
    ctc_hidden_dim: int = 256
    ctc_kernel_size: int = 5
    ctc_batch_size: int = 4  # whole transcribed utterances per step, encoded beside the crops
    ctc_max_s: float = 6.0  # longer utterances are not used for CTC
    code_entropy_weight: float = 0.0  # FSQ codebook-entropy regulariser (see losses); 0 = off
    code_entropy_temperature: float = 0.3  # of the soft code assignment, in (level units)^2
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
    min_lr_ratio: float = 0.1  # cosine decay down to this fraction of the peak, at max_steps
    grad_clip_norm: float = 1000.0
    batch_size: int = 8
    segment_s: float = 1.0  # random training crops
    max_steps: int = 400_000  # the schedule and the stop: steps only, never the wall clock
    # --- bookkeeping ----------------------------------------------------------------------------
    eval_every: int = 5000
    checkpoint_every: int = 5000
    log_every: int = 50
    n_eval_utterances: int = 16
    eval_max_s: float = 4.0  # valid utterances cropped to this length for the periodic eval
    num_threads: int | None = None  # torch threads; None leaves torch's default
    # "auto": the GPU when CUDA is available, else the CPU; "cuda" means the current GPU
    device: str = "auto"
    seed: int = 0
    # --- fine-tuning a transformers X-codec2 checkpoint (see workbench.codec.hf_finetune) -------
    # a local X-codec2 folder (save_pretrained) or hub id: train_codec then fine-tunes it instead
    # of building a workbench model; the checkpoint's own rate, hop, codebook and widths are used
    # (the model-shape fields and sample_rate above are ignored), the loop, losses and schedule
    # are these
    init_from: str = ""
    finetune_train: str = "all"  # "all": all but the frozen semantic encoder; "decoder": codes fixed

    PROFILES: ClassVar[dict] = stage_profiles("codec")  # workbench/profiles.yaml

    def __post_init__(self) -> None:
        from workbench.checks import require_at_least
        from workbench.config import ConfigError

        require_at_least(self, 1, "sample_rate", "batch_size", "max_steps", "eval_every", "checkpoint_every",
                         "log_every")
        require_at_least(self, 0, "n_eval_utterances", "warmup_steps", "disc_warmup_steps")
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
        if self.finetune_train not in ("all", "decoder"):
            raise ConfigError(f"finetune_train {self.finetune_train!r}: expected 'all' or 'decoder'")
        if self.init_from and self.semantic_model_path:
            raise ConfigError("init_from and semantic_model_path: an X-codec2 checkpoint brings its own "
                              "semantic encoder; leave semantic_model_path unset when fine-tuning")
        if self.ctc_weight < 0 or self.complex_stft_loss_weight < 0:
            raise ConfigError(f"ctc_weight {self.ctc_weight} and complex_stft_loss_weight "
                              f"{self.complex_stft_loss_weight} must be >= 0")
        if self.ctc_weight and self.init_from:
            raise ConfigError(f"ctc_weight {self.ctc_weight} with init_from {self.init_from!r}: the CTC head "
                              "reads a workbench codec's quantised latents; fine-tuning X-codec2 does not support it")
        if self.ctc_weight and (self.ctc_batch_size < 1 or self.ctc_max_s <= 0):
            raise ConfigError(f"ctc_batch_size {self.ctc_batch_size} and ctc_max_s {self.ctc_max_s} must be positive")
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
