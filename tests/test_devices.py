"""Device handling that only a GPU would otherwise exercise: "cuda" without an index, and every
function that runs a model moving its inputs to the model's device.

No GPU here, so the second kind is checked on PyTorch's "meta" device: a module moved there
rejects CPU inputs ("Tensor on device meta is not on the expected device cpu"), exactly as a GPU
module rejects them. A function that moves its inputs gets past the model and only fails where
it reads numbers back (a meta tensor holds none)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.devices import model_device, normalise_device, resolve_device

from tiny_models import save_tiny_wav2vec2

REPO = Path(__file__).resolve().parents[1]
MISMATCH = ("not on the expected device", "same device", "Expected all tensors")


def test_cuda_without_index_gets_the_current_or_local_rank_index():
    assert normalise_device(torch.device("cuda"), 3) == torch.device("cuda", 3)
    assert normalise_device(torch.device("cuda", 1), 3) == torch.device("cuda", 1)
    assert normalise_device(torch.device("cpu"), 3) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_resolve_device_auto_is_cpu_and_cuda_without_cuda_is_a_clear_error():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda'.*CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="'gpu0'"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_lm_and_codec_trainers_refuse_cuda_without_cuda_before_any_work(tmp_path):
    from workbench.codec.config import CodecConfig
    from workbench.codec.train import train_codec
    from workbench.config import for_profile
    from workbench.lm.train import LMTrainConfig, train_lm

    with pytest.raises(ValueError, match="CUDA is not available"):
        train_lm(for_profile(LMTrainConfig, "smoke", device="cuda"), tmp_path / "none", root=tmp_path)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "transcripts.tsv").write_text("a.wav\tspk\tu1\thello\n")
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_codec(for_profile(CodecConfig, "smoke", device="cuda"), tmp_path / "corpus", root=tmp_path)


def _runs_on_meta(model: torch.nn.Module, fn) -> None:
    """Call `fn`, which runs `model` (on the meta device): every tensor handed to the model must be
    on the meta device, and any failure must come from reading results back, never from inputs
    left on the CPU. (Some ops, e.g. an embedding lookup, accept CPU inputs with meta weights, so
    the inputs are checked at the model's door too.)"""
    seen: list[torch.device] = []

    def record(_module, args, kwargs):
        seen.extend(t.device for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        fn()
    except (RuntimeError, NotImplementedError) as error:
        message = str(error)
        assert not any(m in message for m in MISMATCH), f"inputs were not moved to the model's device: {message}"
    finally:
        handle.remove()
    assert seen, "the model was never called"
    assert all(d.type == "meta" for d in seen), f"model inputs on {sorted(set(map(str, seen)))}"


def test_text_conditioning_gain_moves_its_batches_to_the_models_device():
    from workbench.data.token_shards import TokenizedUtterance
    from workbench.lm.diagnostics import text_conditioning_gain
    from workbench.lm.model import build_model
    from workbench.lm.text_tokenizer import train_text_tokenizer

    lm_tok = train_text_tokenizer(["the cat sat", "a dog ran far"] * 20, 64, text_vocab_size=300)
    model = build_model("cpu-0.1m", lm_tok.layout, seed=0).to("meta")
    assert model_device(model) == torch.device("meta")
    utts = [TokenizedUtterance(f"u{i}", "s", text, "valid", torch.arange(10) % 64)
            for i, text in enumerate(["the cat sat", "a dog ran far", "the dog", "a cat"])]
    _runs_on_meta(model, lambda: text_conditioning_gain(model, lm_tok.tokenizer, lm_tok.layout, utts))


def test_trained_asr_and_speaker_models_move_their_features_to_their_device():
    from workbench.checkmodels.asr_model import ASRModelSpec, CTCRecognizer
    from workbench.checkmodels.speaker_model import SpeakerEncoder, SpeakerModelSpec

    wavs = [torch.randn(8000), torch.randn(6000)]
    asr = CTCRecognizer(ASRModelSpec(width=32, n_blocks=1)).to("meta")
    _runs_on_meta(asr, lambda: asr.log_probs_of(wavs))
    speaker = SpeakerEncoder(SpeakerModelSpec(channels=32, embedding_dim=16, attention_channels=8,
                                              se_channels=8)).to("meta")
    _runs_on_meta(speaker, lambda: speaker.embed(wavs))


def test_codec_validation_moves_its_audio_to_the_models_device():
    from workbench.codec.config import CodecConfig
    from workbench.codec.losses import MultiScaleMelLoss
    from workbench.codec.model import build_model
    from workbench.codec.train import evaluate_valid
    from workbench.config import for_profile

    config = for_profile(CodecConfig, "smoke")
    model = build_model(config).to("meta")
    mel = MultiScaleMelLoss(config.sample_rate, config.mel_n_ffts, config.mel_n_mels).to("meta")
    _runs_on_meta(model, lambda: evaluate_valid(model, [torch.randn(4000)], mel))


def test_importing_the_codec_model_imports_its_quantiser():
    """A missing vector-quantize-pytorch must fail at import, not minutes into training."""
    code = ("import sys, workbench.codec.model; "
            "assert 'vector_quantize_pytorch' in sys.modules, 'FSQ not imported with the module'")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)


def test_codec_data_setup_with_the_gpu_profiles_shapes_stays_small_in_host_memory(mirror):
    """The gpu-1b codec run was killed for host memory within a minute. Its data set-up (210
    Kathleen utterances decoded in memory, a crop sampler of 16 x 6 s, a few batches) is not
    what allocates it: it must stay far below 1 GB of host memory. (The cause was the training
    step running on the host, ~1.75 GB of activations per second of audio with the GAN, ~170 GB
    for a 16 x 6 s batch; `train_codec` now uses `config.device`.)"""
    code = f"""
import resource, sys
from workbench.codec.config import CodecConfig
from workbench.codec.data import CropSampler, corpus_utterances, load_corpus_audio
from workbench.config import for_profile
config = for_profile(CodecConfig, "gpu-1b")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
utts = corpus_utterances({str(mirror / "kathleen")!r}, "train")[:210]
audio = load_corpus_audio(utts, config.sample_rate)
sampler = CropSampler(audio.wavs, int(config.segment_s * config.sample_rate), config.batch_size, config.seed)
for _ in range(4):
    batch = sampler.next_batch()
assert batch.shape == (config.batch_size, 1, 96000), batch.shape
grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(f"{{len(utts)}} utterances, {{audio.duration_s:.0f}} s of audio, host memory grew {{grown_mb:.0f}} MB")
sys.exit(0 if grown_mb < 500 else f"data set-up grew host memory by {{grown_mb:.0f}} MB")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout
    assert "210 utterances" in out.stdout


def test_moving_the_codec_moves_its_semantic_teacher(tmp_path):
    """The teacher lives outside the module tree (never saved, never trained), yet must follow
    the model to its device."""
    from workbench.codec.config import CodecConfig
    from workbench.codec.model import build_model
    from workbench.config import for_profile

    save_tiny_wav2vec2(tmp_path, num_hidden_layers=1)
    model = build_model(for_profile(CodecConfig, "smoke", semantic_model_path=str(tmp_path), semantic_layer=1))
    model.to("meta")
    assert {p.device.type for p in model.teacher.parameters()} == {"meta"}
    assert not any(k.startswith("_teacher") for k in model.state_dict())
