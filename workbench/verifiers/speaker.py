"""Speaker verifiers: cosine similarity between the speaker embeddings of each audio and of its
prompt (the reference clip the TTS model was asked to clone). Llasa §5 searches with WavLM-large
speaker verification and re-checks with a second, independent model (ECAPA) so that search cannot
simply game one verifier.

- `resemblyzer`: GE2E LSTM encoder whose pretrained weights ship in the wheel; offline here.
- `ecapa`: speechbrain ECAPA-TDNN from a checkpoint folder in speechbrain's layout (`source=`).
- `wavlm`: transformers WavLMForXVector from a local folder or hub id (`model=`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from workbench.verifiers.base import SpeakerVerifierBase, equal_length_batches, register


@functools.lru_cache(maxsize=1)
def _resemblyzer_encoder():
    import warnings

    with warnings.catch_warnings():
        # webrtcvad (imported by resemblyzer) uses pkg_resources; the deprecation is known and
        # handled by pinning setuptools<81, so the warning says nothing actionable here.
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from resemblyzer import VoiceEncoder

    return VoiceEncoder(device="cpu", verbose=False)


@register("resemblyzer")
class ResemblyzerVerifier(SpeakerVerifierBase):
    """Resemblyzer's VoiceEncoder (256-d, L2-normalised, non-negative so cosines are in [0, 1])."""

    name = "resemblyzer"
    sample_rate_hz = 16000  # resemblyzer.hparams.sampling_rate

    def __init__(self, trim_silence: bool = True) -> None:
        super().__init__()
        self.trim_silence = trim_silence

    def embed(self, wavs: list[torch.Tensor]) -> torch.Tensor:
        encoder = _resemblyzer_encoder()  # first: it imports resemblyzer with the warning filtered
        from resemblyzer import preprocess_wav

        embeddings = []
        for wav in wavs:
            samples = wav.numpy()
            # Digital silence would make resemblyzer's volume normalisation divide by zero.
            if self.trim_silence and float(wav.abs().max()) > 0.0:
                # Volume normalisation and VAD trimming of long pauses, as the encoder was trained.
                trimmed = preprocess_wav(samples)
                # All-silence (or a very short partial in beam search) trims to almost nothing;
                # embed the untrimmed clip rather than fail.
                if len(trimmed) >= self.sample_rate_hz // 10:
                    samples = trimmed
            embeddings.append(torch.from_numpy(encoder.embed_utterance(samples)))
        return torch.stack(embeddings)


@functools.lru_cache(maxsize=4)
def _ecapa(source: str, savedir: str | None, device: str):
    from speechbrain.inference.classifiers import EncoderClassifier

    if savedir is None and Path(source).is_dir():
        # A local folder is used in place; speechbrain would otherwise copy/link it elsewhere.
        savedir = source
    return EncoderClassifier.from_hparams(source=source, savedir=savedir, run_opts={"device": device})


@register("ecapa")
class EcapaVerifier(SpeakerVerifierBase):
    """speechbrain's EncoderClassifier (ECAPA-TDNN). `source` is a folder holding hyperparams.yaml
    (with `compute_features`, `mean_var_norm`, `embedding_model` modules and a `pretrainer`) and
    embedding_model.ckpt, i.e. the layout of speechbrain/spkrec-ecapa-voxceleb; a hub id works
    only where the hub is reachable."""

    name = "ecapa"
    sample_rate_hz = 16000

    def __init__(self, source: str | Path = "speechbrain/spkrec-ecapa-voxceleb", savedir: str | Path | None = None,
                 device: str = "cpu", batch_size: int = 16) -> None:
        super().__init__()
        self.source = str(source)
        self.savedir = None if savedir is None else str(savedir)
        self.device = device
        self.batch_size = batch_size

    def embed(self, wavs: list[torch.Tensor]) -> torch.Tensor:
        classifier = _ecapa(self.source, self.savedir, self.device)
        out: list[torch.Tensor] = [torch.empty(0)] * len(wavs)
        # Equal-length batches only: see `equal_length_batches` for why padding is avoided.
        for indices in equal_length_batches(wavs, self.batch_size):
            batch = torch.stack([wavs[i] for i in indices])
            with torch.inference_mode():
                embeddings = classifier.encode_batch(batch)  # (n, 1, dim)
            for i, e in zip(indices, embeddings.reshape(len(indices), -1).cpu()):
                out[i] = e
        return torch.stack(out)


@functools.lru_cache(maxsize=4)
def _wavlm(model: str, device: str):
    from transformers import AutoFeatureExtractor, WavLMForXVector

    extractor = AutoFeatureExtractor.from_pretrained(model)
    network = WavLMForXVector.from_pretrained(model).to(device).eval()
    return extractor, network


@register("wavlm")
class WavLMVerifier(SpeakerVerifierBase):
    """transformers WavLMForXVector x-vectors. The default hub id is the public speaker-verification
    fine-tune (the paper used WavLM-large SV, which is not published in transformers' format)."""

    name = "wavlm"
    sample_rate_hz = 16000

    def __init__(self, model: str | Path = "microsoft/wavlm-base-plus-sv", device: str = "cpu",
                 batch_size: int = 8) -> None:
        super().__init__()
        self.model = str(model)
        self.device = device
        self.batch_size = batch_size

    def embed(self, wavs: list[torch.Tensor]) -> torch.Tensor:
        extractor, network = _wavlm(self.model, self.device)
        out: list[torch.Tensor] = [torch.empty(0)] * len(wavs)
        # Equal-length batches only: see `equal_length_batches` for why padding is avoided.
        for indices in equal_length_batches(wavs, self.batch_size):
            inputs = extractor([wavs[i].numpy() for i in indices], sampling_rate=self.sample_rate_hz,
                               return_tensors="pt")
            with torch.inference_mode():
                embeddings = network(input_values=inputs["input_values"].to(self.device)).embeddings
            for i, e in zip(indices, embeddings.float().cpu()):
                out[i] = e
        return torch.stack(out)
