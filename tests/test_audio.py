import math

import numpy as np
import pytest
import torch

from workbench.audio import (AudioError, audio_info, load_audio, log_mel, loudness_lufs, normalize_loudness,
                             resample, save_audio, to_mono)


def sine(freq_hz: float, sample_rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(sample_rate * seconds)) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * freq_hz * t)).unsqueeze(0)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_save_load_round_trip_within_16_bit_precision(tmp_path, suffix):
    wav = sine(440, 16000)
    path = save_audio(tmp_path / f"a{suffix}", wav, 16000)
    loaded, rate = load_audio(path)
    assert rate == 16000 and loaded.shape == wav.shape
    assert float((loaded - wav).abs().max()) < 1 / 2**15 + 1e-6
    assert audio_info(path).n_frames == 16000


def test_load_real_flac_from_mirror(mirror):
    wav, rate = load_audio(mirror / "kathleen" / "flac16k" / "arctic_a0001.flac")
    assert rate == 16000 and wav.shape[0] == 1 and wav.shape[1] > 16000
    assert 0.05 < float(wav.abs().max()) <= 1.0


def test_load_resamples_on_request(tmp_path):
    path = save_audio(tmp_path / "a.wav", sine(300, 22050), 22050)
    wav, rate = load_audio(path, sample_rate=16000)
    assert rate == 16000 and wav.shape[-1] == 16000


def test_resample_preserves_frequency():
    out = resample(sine(1000, 48000), 48000, 16000)
    spectrum = torch.fft.rfft(out[0]).abs()
    peak_hz = int(spectrum.argmax()) * 16000 / out.shape[-1]
    assert abs(peak_hz - 1000) <= 2


def test_stereo_to_mono_averages():
    stereo = torch.stack([torch.ones(10), -torch.ones(10) * 0.5])
    assert torch.allclose(to_mono(stereo), torch.full((1, 10), 0.25))


def test_loudness_normalisation_hits_target():
    wav = sine(440, 16000, seconds=3.0, amplitude=0.05)
    out = normalize_loudness(wav, 16000, target_lufs=-23.0)
    assert abs(loudness_lufs(out, 16000) - (-23.0)) < 0.2


def test_loudness_normalisation_never_clips():
    wav = sine(440, 16000, seconds=2.0, amplitude=0.001)
    wav[0, 100] = 0.9  # one loud click: raising to -10 LUFS would clip it
    out = normalize_loudness(wav, 16000, target_lufs=-10.0)
    assert float(out.abs().max()) <= 0.99 + 1e-6


def test_log_mel_matches_direct_computation():
    """Cross-check against an independent construction: |STFT| -> slaney mel filterbank -> log."""
    import torchaudio.functional as F

    wav = sine(500, 16000) + 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    mel = log_mel(wav, 16000, n_fft=512, hop_length=128, n_mels=40)
    window = torch.hann_window(512)
    magnitude = torch.stft(wav, 512, 128, window=window, center=True, return_complex=True).abs()
    bank = F.melscale_fbanks(257, 0.0, 8000.0, 40, 16000, norm="slaney", mel_scale="slaney")
    reference = torch.log((bank.T @ magnitude).clamp_min(1e-5))
    assert mel.shape == (1, 40, 16000 // 128 + 1)
    assert torch.allclose(mel, reference, atol=1e-4)
    # the 500 Hz tone lands in the mel band whose centre is closest to 500 Hz
    assert int(mel[0].mean(-1).argmax()) == int(bank.argmax(dim=1)[int(500 / 8000 * 256)])


def test_unreadable_file_raises_audio_error_naming_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(bad)
