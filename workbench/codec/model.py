"""The workbench codec model: X-codec2's design (Ye et al. 2025, Llasa §2), scaled by `CodecConfig`.

What comes from the reference implementation (transformers' ``Xcodec2Model``) and what not:

- Decoder: built from X-codec2's own modules: ``Xcodec2ResNetBlock`` (before and after the
  Transformer), ``Xcodec2DecoderLayer`` with ``Xcodec2RotaryEmbedding`` (RMSNorm, RoPE applied the
  way the reference applies it, i.e. per head rather than per time step, so that a
  reference-shaped decoder behaves like the published one) and ``Xcodec2ISTFTHead`` (Vocos
  "same"-padded inverse STFT, n_fft = 4 x hop). The widths and depths come from the config.
- Encoder: X-codec2's layout (input conv, one stride block per entry of ``strides`` doubling
  the width, residual units with dilations 1, 3, 9, SnakeBeta activations, output conv), written
  here because the reference hard-wires three residual units per block and wraps every Snake in
  2x anti-aliasing resampling, which costs most of the CPU time of a small model.
  ``encoder_anti_alias=True`` (the gpu default) uses the reference's anti-aliased activation.
  The activation itself is the reference ``Xcodec2SnakeBeta``.
- Quantiser: a LayerNorm (see `CodecModel`), then vector-quantize-pytorch's ``FSQ`` (one codebook, levels from the config, no
  commitment loss), which is what X-codec2's training code used; the reference's FSQ is a copy of
  it for inference with the same index layout (first level varies fastest).
- Semantic branch (optional): a frozen teacher from ``semantic_model_path``
  (`workbench.codec.teachers`: w2v-BERT 2.0 layer 16 in the paper, loaded through transformers,
  or the workbench's own CTC recogniser), X-codec2's
  ``Xcodec2SemanticAdapter`` conv stack, concatenation with the acoustic features, a linear
  fusion, then FSQ; a linear head on the quantised latent predicts the teacher features for the
  semantic reconstruction loss. No pretrained speech encoder loads offline here; the
  cpu profile's teacher is the workbench ASR trained on the corpus' own transcripts.

transformers is imported when a model is built, never when this module is imported;
vector-quantize-pytorch is imported with the module, so a missing one fails at import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Imported with the module, not in the constructor: a missing dependency must show when the codec
# is imported (or installed), not minutes into a training run.
from vector_quantize_pytorch import FSQ

from workbench.codec.config import CodecConfig
from workbench.codec.teachers import load_teacher


def _reference():
    """The transformers X-codec2 modelling module (imported lazily: it is slow to import)."""
    from transformers.models.xcodec2 import modeling_xcodec2

    return modeling_xcodec2


def reference_config(config: CodecConfig, semantic_dim: int = 0) -> Any:
    """An ``Xcodec2Config`` describing the decoder (and adapter) of `config`, used to build the
    reference modules with the workbench widths."""
    from transformers import Xcodec2Config

    ref_config = Xcodec2Config(
        hidden_size=config.decoder_dim,
        intermediate_size=config.decoder_intermediate_dim,
        num_hidden_layers=config.decoder_transformer_layers,
        num_attention_heads=config.decoder_heads,
        num_key_value_heads=config.decoder_heads,
        head_dim=config.decoder_dim // config.decoder_heads,
        downsampling_ratios=list(config.strides),
        sampling_rate=config.sample_rate,
        activation_dropout=config.decoder_dropout,
        quantization_levels=list(config.fsq_levels),
        semantic_model_config={"model_type": "wav2vec2-bert", "hidden_size": max(semantic_dim, 1),
                               "num_hidden_layers": 1, "num_attention_heads": 1,
                               "intermediate_size": 4},
    )
    # PyTorch's fused attention; set explicitly because the layers are used outside a
    # PreTrainedModel, which is what normally picks the implementation
    ref_config._attn_implementation = "sdpa"
    return ref_config


# ---------------------------------------------------------------------------------------------
# Acoustic encoder
# ---------------------------------------------------------------------------------------------

def _activation(channels: int, anti_alias: bool) -> nn.Module:
    ref = _reference()
    snake = ref.Xcodec2SnakeBeta(channels)
    return ref.Xcodec2AntiAliasedActivation1d(activation=snake) if anti_alias else snake


class ResidualUnit(nn.Module):
    """Snake -> dilated conv -> Snake -> 1x1 conv, plus the input (DAC / X-codec2 residual unit)."""

    def __init__(self, channels: int, dilation: int, kernel_size: int, anti_alias: bool):
        super().__init__()
        padding = (kernel_size - 1) * dilation // 2
        self.block = nn.Sequential(
            _activation(channels, anti_alias),
            nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=padding),
            _activation(channels, anti_alias),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Residual units at `in_channels`, then a strided conv to `out_channels`.

    Kernel 2*stride with padding ceil(stride/2) (as in X-codec2) maps a length that is a multiple
    of the stride to exactly length/stride, so the encoder gives one frame per hop."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, n_res_units: int,
                 kernel_size: int, anti_alias: bool):
        super().__init__()
        units = [ResidualUnit(in_channels, 3 ** i, kernel_size, anti_alias) for i in range(n_res_units)]
        self.block = nn.Sequential(
            *units,
            _activation(in_channels, anti_alias),
            nn.Conv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class AcousticEncoder(nn.Module):
    """Waveform (B, 1, L) with L a multiple of hop -> features (B, latent_dim, L / hop)."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        width = config.encoder_channels
        layers: list[nn.Module] = [nn.Conv1d(1, width, 7, padding=3)]
        for stride in config.strides:
            out_width = min(2 * width, config.encoder_max_channels)
            layers.append(EncoderBlock(width, out_width, stride, config.encoder_res_units,
                                       config.encoder_kernel_size, config.encoder_anti_alias))
            width = out_width
        layers += [_activation(width, config.encoder_anti_alias),
                   nn.Conv1d(width, config.latent_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)
        # Zero biases at init: speech enters at ~0.03 RMS, and PyTorch's default bias init
        # (~U(-0.4, 0.4) for the first conv) otherwise swamps it, so the initial encoder output
        # is nearly the same vector for every frame and all frames get one code (measured).
        for module in self.modules():
            if isinstance(module, nn.Conv1d) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.net(wav)


# ---------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------

class VocosDecoder(nn.Module):
    """Quantised latent (B, T, latent_dim) -> waveform (B, 1, T * hop).

    X-codec2's decoder with configurable depth: linear in, conv embedding, ResNet blocks, a
    non-causal Transformer, ResNet blocks, LayerNorm, inverse-STFT head."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        ref = _reference()
        ref_config = reference_config(config)
        n_prior = config.decoder_resnet_layers // 2
        n_post = config.decoder_resnet_layers - n_prior
        self.num_attention_heads = config.decoder_heads
        self.fc = nn.Linear(config.latent_dim, config.decoder_dim)
        self.embed = nn.Conv1d(config.decoder_dim, config.decoder_dim, 7, padding=3)
        self.prior_net = nn.ModuleList([ref.Xcodec2ResNetBlock(ref_config) for _ in range(n_prior)])
        self.rotary_emb = ref.Xcodec2RotaryEmbedding(config=ref_config)
        self.layers = nn.ModuleList(
            [ref.Xcodec2DecoderLayer(ref_config, i) for i in range(config.decoder_transformer_layers)]
        )
        self.post_net = nn.ModuleList([ref.Xcodec2ResNetBlock(ref_config) for _ in range(n_post)])
        self.norm = nn.LayerNorm(config.decoder_dim, eps=1e-6)
        self.head = ref.Xcodec2ISTFTHead(ref_config)
        # the reference builds these buffers in _init_weights; build them explicitly here
        self.head.window.copy_(torch.hann_window(config.n_fft))
        # start the magnitude near exp(-5): quiet output instead of loud noise at step 0
        with torch.no_grad():
            self.head.linear.bias[: config.n_fft // 2 + 1].fill_(-5.0)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.fc(latents).transpose(1, 2)).transpose(1, 2)
        for layer in self.prior_net:
            x = layer(x)
        if self.layers:
            position_ids = torch.arange(self.num_attention_heads, device=x.device).unsqueeze(0)
            position_embeddings = self.rotary_emb(x, position_ids)
            for layer in self.layers:
                x = layer(x, position_embeddings=position_embeddings)
        for layer in self.post_net:
            x = layer(x)
        return self.head(self.norm(x))


# ---------------------------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------------------------

@dataclass
class CodecEncoding:
    codes: torch.Tensor  # (B, T) long in [0, codebook_size)
    latents: torch.Tensor  # (B, T, latent_dim): quantised, projected back (decoder input)
    semantic_target: torch.Tensor | None = None  # (B, T, semantic_dim) teacher features
    # (B, T, len(fsq_levels)): FSQ inputs after the tanh bound, before rounding, in level units
    # (code k of a level-L dimension sits at k - L // 2); what the codebook-entropy loss reads
    fsq_values: torch.Tensor | None = None


@dataclass
class CodecOutput:
    audio: torch.Tensor  # (B, 1, L): reconstruction, same length as the input
    codes: torch.Tensor  # (B, T)
    semantic_pred: torch.Tensor | None = None
    semantic_target: torch.Tensor | None = None
    fsq_values: torch.Tensor | None = None  # see CodecEncoding


class CodecModel(nn.Module):
    """Encoder + one FSQ codebook + decoder. Waveforms are (B, 1, L) float at `sample_rate`."""

    def __init__(self, config: CodecConfig, teacher: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.hop_length = config.hop_length
        self.acoustic_encoder = AcousticEncoder(config)
        # the teacher is held outside the module tree: frozen, large, loaded from its own path
        self._teacher = [teacher] if teacher is not None else []
        semantic_dim = teacher.dim if teacher is not None else 0
        if teacher is not None:
            self.semantic_adapter = _reference().Xcodec2SemanticAdapter(reference_config(config, semantic_dim))
            self.fc_encoder = nn.Linear(config.latent_dim + semantic_dim, config.latent_dim)
            self.semantic_head = nn.Linear(config.latent_dim, semantic_dim)
        # LayerNorm fixes the scale entering FSQ's projection. Without it, the encoder output of a
        # small model starts ~100x narrower than one FSQ bin (every frame gets the same code), and
        # Adam then drives the projection into tanh saturation (measured: 1 code of 1,000 used
        # after 150 steps at lr 2e-3). With it, codes are spread over the bins from step 0.
        self.pre_quant_norm = nn.LayerNorm(config.latent_dim)
        self.quantizer = FSQ(levels=list(config.fsq_levels), dim=config.latent_dim)
        # spread the initial projections over several bins per dimension (std ~0.6 instead of ~0.15)
        with torch.no_grad():
            self.quantizer.project_in.weight.mul_(4.0)
        self.decoder = VocosDecoder(config)

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - torch's signature
        # .to(device) / .cuda() / .float() reach the teacher too, although it is outside the
        # module tree: a teacher left on the CPU fails the first GPU step.
        super()._apply(fn, recurse)
        for teacher in self._teacher:
            teacher._apply(fn, recurse)
        return self

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def pad_to_hop(self, wav: torch.Tensor) -> torch.Tensor:
        remainder = wav.shape[-1] % self.hop_length
        return F.pad(wav, (0, self.hop_length - remainder)) if remainder else wav

    def encode(self, wav: torch.Tensor) -> CodecEncoding:
        """wav (B, 1, L) -> codes (B, ceil(L / hop)); the input is zero-padded to a whole hop."""
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"encode expects (batch, 1, samples), got {tuple(wav.shape)}")
        wav = self.pad_to_hop(wav)
        features = self.acoustic_encoder(wav).transpose(1, 2)  # (B, T, latent)
        semantic_target = None
        if self.teacher is not None:
            semantic_target = self.teacher(wav[:, 0], features.shape[1])
            semantic = self.semantic_adapter(semantic_target.transpose(1, 2)).transpose(1, 2)
            features = self.fc_encoder(torch.cat([semantic, features], dim=-1))
        normed = self.pre_quant_norm(features)
        latents, codes = self.quantizer(normed)
        return CodecEncoding(codes=codes.long(), latents=latents, semantic_target=semantic_target,
                             fsq_values=self.fsq_values(normed))

    def fsq_values(self, normed: torch.Tensor) -> torch.Tensor:
        """The quantiser's bounded, not yet rounded inputs in level units: the same arithmetic as
        vector-quantize-pytorch's ``FSQ.bound`` (eps 1e-3), so ``round`` of this is the code."""
        levels = self.quantizer._levels.to(normed.dtype)
        z = self.quantizer.project_in(normed)
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.quantizer._levels % 2 == 0, 0.5, 0.0).to(normed.dtype)
        return torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T) -> waveform (B, 1, T * hop)."""
        if codes.dim() != 2:
            raise ValueError(f"decode expects (batch, frames) codes, got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes outside [0, {self.codebook_size}): min {int(codes.min())}, "
                             f"max {int(codes.max())}")
        return self.decoder(self.quantizer.indices_to_codes(codes))

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        encoding = self.encode(wav)
        audio = self.decoder(encoding.latents)[..., : wav.shape[-1]]
        semantic_pred = self.semantic_head(encoding.latents) if self.teacher is not None else None
        return CodecOutput(audio=audio, codes=encoding.codes, semantic_pred=semantic_pred,
                           semantic_target=encoding.semantic_target, fsq_values=encoding.fsq_values)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_model(config: CodecConfig) -> CodecModel:
    """A randomly initialised `CodecModel` (with its frozen teacher when the config names one)."""
    teacher = None
    if config.semantic_model_path:
        teacher = load_teacher(config.semantic_model_path, config.semantic_layer, config.sample_rate)
    return CodecModel(config, teacher)
