"""Fine-tuning a transformers X-codec2 checkpoint with `train_codec` (``CodecConfig.init_from``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.codec.config import CodecConfig
from workbench.config import for_profile
from tiny_models import tiny_xcodec2_model

KATHLEEN = Path("/work/shared/data/kathleen/flac16k")
SEGMENT_S = 0.3

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_pretrained_xcodec2(path: Path):
    """A tiny random ``Xcodec2Model`` (the construction of test_codec_interface) made to look
    trained enough to fine-tune: a random init has zero biases and an encoder output ~1e-4
    wide, so every frame gets the same all-zero code, the decoder input is exactly zero and the
    decoder gets no gradient. Small random biases and a project_in standardised on a speech clip
    spread the codes (~30 of 64 used) as a real checkpoint's are."""
    from workbench.audio import load_audio

    model, extractor = tiny_xcodec2_model()
    generator = torch.Generator().manual_seed(1)
    wav, _ = load_audio(str(KATHLEEN / "arctic_a0003.flac"), sample_rate=16000)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and not name.startswith("semantic_encoder."):
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        captured = {}
        hook = model.quantizer.project_in.register_forward_hook(lambda m, i, o: captured.setdefault("z", o))
        model(**extractor([wav[0, :16000]], sampling_rate=16000, return_tensors="pt"))
        hook.remove()
        z = captured["z"].reshape(-1, 3)
        mean, std = z.mean(0), z.std(0)
        project_in = model.quantizer.project_in
        project_in.weight.div_(std[:, None])
        project_in.bias.sub_(mean).div_(std)
    model.save_pretrained(path)
    extractor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _tiny_pretrained_xcodec2(tmp_path_factory.mktemp("xcodec2") / "tiny")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two Kathleen clips of exactly one training segment (so every batch is made of them) as
    the train split, and a third, longer one as valid."""
    import soundfile

    from workbench.audio import load_audio
    from workbench.data.manifest import Utterance, write_manifest

    folder = tmp_path_factory.mktemp("clips")
    utterances = []
    for name, split, seconds in (("arctic_a0001", "train", SEGMENT_S), ("arctic_a0002", "train", SEGMENT_S),
                                 ("arctic_a0004", "valid", 0.6)):
        wav, _ = load_audio(str(KATHLEEN / f"{name}.flac"), sample_rate=16000)
        clip = wav[0, 8000: 8000 + int(seconds * 16000)]  # skip the leading silence
        soundfile.write(folder / f"{name}.wav", clip.numpy(), 16000)
        utterances.append(Utterance(utterance_id=name, audio_path=f"{name}.wav", text="", speaker="kathleen",
                                    duration_s=seconds, sample_rate=16000, split=split))
    write_manifest(folder / "manifest.jsonl", utterances)
    return folder


def finetune_config(checkpoint: Path, **overrides) -> CodecConfig:
    base = dict(init_from=str(checkpoint), segment_s=SEGMENT_S, batch_size=2, use_gan=False,
                learning_rate=3e-3, warmup_steps=1, max_steps=8, eval_every=4, checkpoint_every=4,
                log_every=1, n_eval_utterances=1)
    base.update(overrides)
    return for_profile(CodecConfig, "smoke", **base)


def _train_clips(folder: Path) -> torch.Tensor:
    from workbench.audio import load_audio

    wavs = [load_audio(str(folder / f"{name}.wav"), sample_rate=16000)[0] for name in ("arctic_a0001", "arctic_a0002")]
    return torch.stack(wavs)  # (2, 1, samples)


def _trained_module(checkpoint: Path, run_dir: Path):
    from workbench.codec.hf_finetune import build_finetune_model

    module = build_finetune_model(str(checkpoint))
    module.load_checkpoint_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"])
    return module.eval()


def test_finetuning_fits_the_batch_and_saves_a_loadable_codec(tmp_path, checkpoint, clips):
    from workbench.codec import load_codec, train_codec
    from workbench.codec.hf_finetune import build_finetune_model
    from workbench.codec.interface import HFXcodec2Codec
    from workbench.codec.losses import MultiScaleMelLoss

    config = finetune_config(checkpoint)
    result = train_codec(config, clips, run_id="ft", root=tmp_path / "runs", progress=False)
    assert result.steps == 8 and result.completed and result.codec_path == result.run_dir
    meta = json.loads((result.run_dir / "meta.json").read_text())
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert meta["kind"] == "codec" and meta["status"] == "finished"
    assert (summary["codebook_size"], summary["frame_rate_hz"], summary["sample_rate"]) == (64, 50.0, 16000)
    assert summary["init_from"] == str(checkpoint)

    # (1) the mel loss on the training batch went down (eval mode: no dropout)
    batch = _train_clips(clips)
    mel = MultiScaleMelLoss(16000, config.mel_n_ffts, config.mel_n_mels)
    original = build_finetune_model(str(checkpoint)).eval()
    trained = _trained_module(checkpoint, result.run_dir)
    with torch.no_grad():
        before = float(mel(original(batch).audio, batch))
        after = float(mel(trained(batch).audio, batch))
    assert after < 0.9 * before, (before, after)

    # (2) the run directory loads as an X-codec2 codec with the fine-tuned weights
    codec = load_codec(result.run_dir)
    assert isinstance(codec, HFXcodec2Codec)
    assert (codec.sample_rate, codec.frame_rate_hz, codec.codebook_size) == (16000, 50.0, 64)
    codes = codec.encode(batch[:, 0], 16000)
    with torch.no_grad():
        assert torch.equal(codes, trained(batch).codes)
        audio = codec.decode(codes)
        assert torch.allclose(audio, trained.decode(codes)[:, 0], atol=1e-6)
        assert not torch.allclose(audio, original.decode(codes)[:, 0], atol=1e-4)
    # the semantic encoder was frozen: saved unchanged; the rest moved
    saved = codec.model.state_dict()
    start = original.xcodec2.state_dict()
    semantic = [k for k in start if k.startswith("semantic_encoder.")]
    assert semantic and all(torch.equal(saved[k], start[k]) for k in semantic)
    assert not torch.equal(saved["acoustic_decoder.head.linear.weight"], start["acoustic_decoder.head.linear.weight"])
    assert not torch.equal(saved["acoustic_encoder.conv1.weight"], start["acoustic_encoder.conv1.weight"])
    # checkpoint.pt leaves the frozen semantic encoder out (reloaded from init_from on resume)
    state = torch.load(result.run_dir / "checkpoint.pt", weights_only=False)
    assert not any(k.startswith("xcodec2.semantic_encoder.") for k in state["model"])
    with pytest.raises(ValueError, match="load its run directory"):
        load_codec(result.run_dir / "checkpoint.pt")


def test_finetune_resume_with_gan_equals_an_uninterrupted_run(tmp_path, checkpoint, clips):
    from workbench.codec import train_codec

    config = finetune_config(checkpoint, use_gan=True, disc_warmup_steps=1, max_steps=3, checkpoint_every=1,
                             eval_every=100)
    whole = train_codec(config, clips, run_id="whole", root=tmp_path / "runs", progress=False)
    first = train_codec(config, clips, run_id="split", root=tmp_path / "runs", stop_after_steps=2, progress=False)
    assert first.steps == 2 and not first.completed
    second = train_codec(config, clips, run_id="split", root=tmp_path / "runs", progress=False)
    assert second.resumed_from_step == 2 and second.steps == 3 and second.completed
    a = torch.load(whole.run_dir / "checkpoint.pt", weights_only=False)
    b = torch.load(second.run_dir / "checkpoint.pt", weights_only=False)
    for part in ("model", "discriminators"):
        assert a[part] and a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    rows = [json.loads(line) for line in (whole.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["gan"] for r in rows if "mel_loss" in r] == [False, True, True]
    assert all("fm_loss" in r and "adv_loss" in r for r in rows if r.get("gan"))


def test_decoder_only_finetuning_keeps_the_codes(tmp_path, checkpoint, clips):
    from workbench.codec import train_codec

    result = train_codec(finetune_config(checkpoint, finetune_train="decoder", max_steps=2, code_entropy_weight=1.0),
                         clips, run_id="dec", root=tmp_path / "runs", progress=False)
    from workbench.codec.hf_finetune import build_finetune_model

    original = build_finetune_model(str(checkpoint)).state_dict()
    trained = torch.load(result.run_dir / "checkpoint.pt", weights_only=False)["model"]
    changed = {k for k in trained if not torch.equal(trained[k], original[k])}
    assert changed and all(k.startswith(("xcodec2.acoustic_decoder.", "xcodec2.quantizer.project_out."))
                           for k in changed)


def test_bad_init_from_or_data_rate_fails_clearly(tmp_path, checkpoint, clips):
    from workbench.codec import train_codec
    from workbench.data.manifest import read_manifest, write_manifest

    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match="no-such-checkpoint"):
        train_codec(finetune_config(missing), clips, run_id="bad", root=tmp_path / "runs", progress=False)
    (tmp_path / "not-a-codec").mkdir()
    with pytest.raises(ValueError, match="not-a-codec.*not an X-codec2 checkpoint"):
        train_codec(finetune_config(tmp_path / "not-a-codec"), clips, run_id="bad", root=tmp_path / "runs",
                    progress=False)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
    # audio below the checkpoint's rate is refused (the manifest says 8 kHz)
    low = tmp_path / "low"
    low.mkdir()
    import dataclasses

    write_manifest(low / "manifest.jsonl", [dataclasses.replace(u, audio_path=str(clips / u.audio_path),
                                                                sample_rate=8000)
                                            for u in read_manifest(clips)])
    with pytest.raises(ValueError, match="16000 Hz codec.*8000"):
        train_codec(finetune_config(checkpoint), low, run_id="low", root=tmp_path / "runs", progress=False)
