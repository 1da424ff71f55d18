"""load_codec: workbench codecs and transformers X-codec2 checkpoints behind one interface."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import tiny_xcodec2_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def workbench_codec_file(tmp_path, smoke_codec_model):
    from workbench.codec.train import save_codec

    return save_codec(tmp_path / "run" / "codec.pt", smoke_codec_model, step=0), smoke_codec_model


def test_loads_a_workbench_codec_from_run_dir_or_file(workbench_codec_file):
    from workbench.codec import Codec, load_codec

    path, model = workbench_codec_file
    for target in (path.parent, path):
        codec = load_codec(target)
        assert isinstance(codec, Codec)
        assert (codec.sample_rate, codec.frame_rate_hz, codec.codebook_size) == (16000, 50.0, 16)
        wav = torch.randn(3, 16000) * 0.1
        codes = codec.encode(wav, 16000)
        assert codes.shape == (3, 50) and codes.dtype == torch.long
        assert 0 <= int(codes.min()) and int(codes.max()) < 16
        audio = codec.decode(codes)
        assert audio.shape == (3, 16000) and audio.dtype == torch.float32
        # the loaded weights are the saved ones: same codes as the original model
        with torch.no_grad():
            assert torch.equal(codes, model.eval().encode(wav.unsqueeze(1)).codes)


def test_workbench_codec_resamples_input(workbench_codec_file):
    from workbench.codec import load_codec

    codec = load_codec(workbench_codec_file[0])
    assert codec.encode(torch.zeros(8000), 8000).shape == (1, 50)  # 1 s at 8 kHz -> 50 frames
    with pytest.raises(ValueError, match="codes outside"):
        codec.decode(torch.tensor([[16]]))


def _tiny_xcodec2(path):
    model, extractor = tiny_xcodec2_model()
    model.save_pretrained(path)
    extractor.save_pretrained(path)
    return model, extractor


def test_loads_a_transformers_xcodec2_checkpoint(tmp_path):
    from workbench.codec import load_codec

    model, extractor = _tiny_xcodec2(tmp_path / "xcodec2")
    codec = load_codec(tmp_path / "xcodec2")
    assert (codec.sample_rate, codec.frame_rate_hz, codec.codebook_size) == (16000, 50.0, 64)
    wav = torch.randn(2, 16000) * 0.1
    codes = codec.encode(wav, 16000)
    assert codes.shape == (2, codec.n_frames(16000)) == (2, math.ceil(16001 / 320))
    assert int(codes.max()) < 64
    # numerically the reference: same codes and audio as calling Xcodec2Model directly
    with torch.no_grad():
        inputs = extractor([w.numpy() for w in wav], sampling_rate=16000, return_tensors="pt")
        reference = model(**inputs)
    assert torch.equal(codes, reference.audio_codes[:, 0].long())
    audio = codec.decode(codes)
    assert audio.shape == (2, codes.shape[1] * 320)
    with torch.no_grad():
        direct = model.decode(audio_codes=codes.unsqueeze(1)).audio_values[:, 0]
    assert torch.allclose(audio, direct)


def test_unrecognised_path_names_the_loaders(tmp_path):
    from workbench.codec import load_codec

    with pytest.raises(ValueError, match="workbench, xcodec2-hf"):
        load_codec(tmp_path)
