"""Codec model: shapes and frame rates, FSQ code range and index layout (against the
transformers X-codec2 reference), config validation, semantic branch, overfitting one batch."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from workbench.codec.config import CodecConfig
from workbench.codec.model import build_model
from workbench.config import ConfigError, for_profile

from tiny_models import save_tiny_wav2vec2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**overrides) -> CodecConfig:
    return for_profile(CodecConfig, "smoke", **overrides)


def test_profiles_have_the_paper_rates():
    for profile in ("smoke", "cpu", "gpu-1b"):
        config = for_profile(CodecConfig, profile)
        assert config.sample_rate == 16000 and config.hop_length == 320
        assert config.frame_rate_hz == 50.0 and config.n_fft == 1280
    assert for_profile(CodecConfig, "gpu-1b").codebook_size == 65536
    assert for_profile(CodecConfig, "cpu").codebook_size == 625


@pytest.mark.parametrize("n_samples", [16000, 15999, 16001, 320])
def test_encode_decode_shapes_follow_the_hop(n_samples):
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    wav = torch.randn(2, 1, n_samples) * 0.1
    with torch.no_grad():
        encoding = model.encode(wav)
        frames = math.ceil(n_samples / 320)
        assert encoding.codes.shape == (2, frames) and encoding.codes.dtype == torch.long
        assert encoding.latents.shape == (2, frames, model.config.latent_dim)
        assert model.decode(encoding.codes).shape == (2, 1, frames * 320)
        assert model(wav).audio.shape == wav.shape


def test_other_rates_and_strides():
    config = tiny_config(sample_rate=24000, strides=(2, 4, 5, 6))  # hop 240 -> 100 Hz
    assert config.frame_rate_hz == 100.0
    model = build_model(config).eval()
    with torch.no_grad():
        assert model.encode(torch.zeros(1, 1, 24000)).codes.shape == (1, 100)


def test_decode_of_encode_codes_is_the_forward_reconstruction():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    wav = torch.randn(1, 1, 3200) * 0.1
    with torch.no_grad():
        from_codes = model.decode(model.encode(wav).codes)
        assert torch.allclose(from_codes, model(wav).audio, atol=1e-5)


def test_fsq_codes_cover_the_range_and_round_trip():
    model = build_model(tiny_config(fsq_levels=(8, 5, 5, 5)))
    fsq = model.quantizer
    assert fsq.codebook_size == 1000
    indices = torch.arange(1000)
    values = fsq._indices_to_codes(indices)  # normalised per-dimension values in [-1, 1]
    assert values.abs().max() <= 1.0
    assert torch.equal(fsq.codes_to_indices(values), indices)
    # extreme inputs still give codes inside the codebook
    codes = fsq(torch.randn(2, 50, model.config.latent_dim) * 100)[1]
    assert int(codes.min()) >= 0 and int(codes.max()) < 1000
    with pytest.raises(ValueError, match="outside"):
        model.decode(torch.tensor([[1000]]))


def test_fsq_index_layout_matches_the_transformers_reference():
    """Same levels -> same code for the same index as transformers' Xcodec2 FSQ, so a code
    stream means the same thing in both (first level varies fastest)."""
    from transformers import Xcodec2Config
    from transformers.models.xcodec2.modeling_xcodec2 import Xcodec2FiniteScalarQuantization

    levels = [4, 4, 4, 4, 4, 4, 4, 4]
    model = build_model(tiny_config(fsq_levels=tuple(levels)))
    reference = Xcodec2FiniteScalarQuantization(Xcodec2Config(quantization_levels=levels))
    indices = torch.randint(0, 65536, (500,), generator=torch.Generator().manual_seed(0))
    ours = model.quantizer._indices_to_codes(indices)
    theirs = reference.codebook[indices]
    assert torch.allclose(ours, theirs.float())


def test_config_validation_names_the_bad_value():
    with pytest.raises(ConfigError, match="not a multiple of hop"):
        tiny_config(strides=(3, 7))
    with pytest.raises(ConfigError, match="level"):
        tiny_config(fsq_levels=(2, 4))
    with pytest.raises(ConfigError, match="fsq_levlels"):
        for_profile(CodecConfig, "smoke", fsq_levlels=(4,))


def test_semantic_branch_with_a_tiny_teacher(tmp_path):
    torch.manual_seed(0)
    save_tiny_wav2vec2(tmp_path, num_hidden_layers=2)
    config = tiny_config(semantic_model_path=str(tmp_path), semantic_layer=1)
    model = build_model(config)
    assert model.teacher is not None
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert not any(k.startswith("_teacher") for k in model.state_dict())  # never saved
    out = model(torch.randn(2, 1, 6400) * 0.1)
    assert out.semantic_pred.shape == out.semantic_target.shape == (2, 20, 16)
    loss = torch.nn.functional.mse_loss(out.semantic_pred, out.semantic_target) + out.audio.abs().mean()
    loss.backward()
    assert model.semantic_adapter.conv1.weight.grad is not None


def test_overfits_one_batch():
    """Mel loss on one fixed batch of real speech falls well below its start."""
    from workbench.audio import load_audio
    from workbench.codec.losses import MultiScaleMelLoss

    torch.manual_seed(0)
    config = tiny_config(encoder_channels=8, encoder_max_channels=32, latent_dim=32, decoder_dim=64,
                         decoder_intermediate_dim=128, fsq_levels=(5, 5, 5))
    model = build_model(config)
    wav, _ = load_audio("/work/shared/data/kathleen/flac16k/arctic_a0002.flac")
    batch = torch.stack([wav[0, 8000:14400], wav[0, 20000:26400]]).unsqueeze(1)
    mel = MultiScaleMelLoss(16000, (256, 1024), (20, 40))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.8, 0.9))
    losses = []
    for _ in range(60):
        loss = mel(model(batch).audio, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.6 * losses[0], losses[::10]


def test_fsq_values_round_to_the_codes():
    """`fsq_values` is FSQ's bound before rounding: rounding it gives back the code index."""
    torch.manual_seed(0)
    config = tiny_config(fsq_levels=(8, 5, 3))
    model = build_model(config).eval()
    with torch.no_grad():
        encoding = model.encode(torch.randn(2, 1, 6400) * 0.1)
    levels = torch.tensor(config.fsq_levels)
    basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
    digits = encoding.fsq_values.round().long() + levels // 2
    assert ((digits >= 0) & (digits < levels)).all()
    assert torch.equal((digits * basis).sum(-1), encoding.codes)


def test_codebook_entropy_loss_is_zero_when_spread_and_one_when_collapsed():
    from workbench.codec.losses import codebook_entropy_loss, fsq_code_probabilities

    levels = (4, 3)
    # every code centre once: (k0 - 2, k1 - 1)
    grid = torch.tensor([[k0 - 2.0, k1 - 1.0] for k1 in range(3) for k0 in range(4)])
    probs = fsq_code_probabilities(grid, levels, temperature=0.05)
    assert probs.shape == (12, 12)
    assert torch.allclose(probs.sum(-1), torch.ones(12))
    assert codebook_entropy_loss(grid, levels, temperature=0.05).item() < 1e-3
    collapsed = torch.zeros(12, 2)
    assert codebook_entropy_loss(collapsed, levels, temperature=0.05).item() > 0.99
    # half the frames on one code: entropy log(2)-ish of log(12) -> loss in between
    half = torch.cat([grid[:6], torch.zeros(6, 2)])
    assert 0.1 < codebook_entropy_loss(half, levels, temperature=0.05).item() < 0.6
    # the gradient pushes a crowded frame sitting near a boundary toward the unused side
    values = torch.tensor([[0.0, 0.0]] * 7 + [[0.4, 0.0]], requires_grad=True)
    codebook_entropy_loss(values, levels, temperature=0.3).backward()
    assert values.grad[-1, 0] < 0  # descent increases the value: toward the empty code at +1
    with pytest.raises(ValueError, match="dimensions"):
        codebook_entropy_loss(torch.zeros(4, 3), levels)


def test_multi_resolution_stft_loss_orders_distortions():
    from workbench.codec.losses import MultiResolutionSTFTLoss

    torch.manual_seed(0)
    loss = MultiResolutionSTFTLoss((256, 512))
    t = torch.arange(8000) / 16000
    clean = (0.3 * torch.sin(2 * math.pi * 440 * t)).view(1, 1, -1)
    assert loss(clean, clean).item() < 1e-6
    slightly = loss(clean + 0.003 * torch.randn_like(clean), clean).item()
    badly = loss(clean + 0.1 * torch.randn_like(clean), clean).item()
    assert 0 < slightly < badly
    # spectral convergence alone of silence against the tone is 1 per resolution
    assert loss(torch.zeros_like(clean), clean).item() > 1.0


def test_complex_stft_loss_is_zero_for_identical_signals_and_grows_with_a_planted_phase_shift():
    """Every partial of a harmonic tone shifted in phase by phi: the magnitudes (and so the mel
    loss) stay the same, the complex loss grows with phi up to phi = pi."""
    from workbench.codec.losses import MultiResolutionComplexSTFTLoss, MultiScaleMelLoss

    loss = MultiResolutionComplexSTFTLoss((256, 512))
    mel = MultiScaleMelLoss(16000, (256, 512), (20, 40))
    t = torch.arange(8000) / 16000

    def tone(phi: float) -> torch.Tensor:
        return sum(0.1 * torch.sin(2 * math.pi * f * t + phi) for f in (220, 440, 660, 880)).view(1, 1, -1)

    clean = tone(0.0)
    assert loss(clean, clean).item() == 0.0
    shifted = [loss(tone(phi), clean).item() for phi in (0.1, 0.5, 1.5, math.pi)]
    assert all(a < b for a, b in zip(shifted, shifted[1:])) and shifted[0] > 0
    # the magnitude-only mel loss barely sees even the largest shift (edge frames aside)
    assert mel(tone(math.pi), clean).item() < 0.05 * shifted[-1]
    # and a gradient reaches the prediction
    pred = tone(0.5).requires_grad_(True)
    loss(pred, clean).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_complex_stft_loss_rejects_bad_settings():
    from workbench.codec.losses import MultiResolutionComplexSTFTLoss

    with pytest.raises(ValueError, match="compression"):
        MultiResolutionComplexSTFTLoss((256,), compression=0.0)
    with pytest.raises(ValueError, match="n_fft"):
        MultiResolutionComplexSTFTLoss(())


def test_the_workbench_asr_is_a_frozen_teacher_whose_features_match_its_own_output_layer(tmp_path):
    """An ASR model file at semantic_model_path gives the ASR teacher: its features are exactly
    what the recogniser's output layer reads (its log-probabilities are recovered from them),
    interpolated to the codec's frames; the teacher is frozen and stays out of the codec's
    state dict, while the adapter that reads it trains."""
    from workbench.checkmodels.asr_model import (ASRModelSpec, CTCRecognizer, log_mel_features, pad_features,
                                                  save_model)
    from workbench.codec.teachers import ASRTeacher, is_workbench_asr

    torch.manual_seed(0)
    asr = CTCRecognizer(ASRModelSpec(width=32, n_blocks=2, kernel_size=3)).eval()
    path = save_model(asr, tmp_path / "model.pt")
    assert is_workbench_asr(path) and is_workbench_asr(tmp_path) and not is_workbench_asr(tmp_path / "nothing")
    model = build_model(tiny_config(semantic_model_path=str(tmp_path)))
    assert isinstance(model.teacher, ASRTeacher) and model.teacher.dim == 32
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert not any(k.startswith("_teacher") or k.startswith("model.") for k in model.state_dict())

    wav = torch.randn(2, 1, 16000) * 0.1  # 1 s: 25 ASR frames of 40 ms, 50 codec frames
    features, lengths = pad_features([log_mel_features(row[0], asr.spec) for row in wav])
    with torch.no_grad():
        log_probs, _ = asr(features, lengths)
        at_asr_rate = model.teacher(wav[:, 0], int(log_probs.shape[1]))  # no interpolation needed
        at_codec_rate = model.teacher(wav[:, 0], 50)
    torch.testing.assert_close(asr.head(at_asr_rate).log_softmax(-1), log_probs)
    assert at_codec_rate.shape == (2, 50, 32)

    out = model(wav)
    assert out.semantic_target.shape == out.semantic_pred.shape == (2, 50, 32)
    torch.nn.functional.mse_loss(out.semantic_pred, out.semantic_target).backward()
    assert model.semantic_adapter.conv1.weight.grad is not None
    assert model.semantic_adapter.conv1.weight.grad.abs().sum() > 0
