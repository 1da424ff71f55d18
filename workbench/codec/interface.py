"""One codec interface for everything downstream (tokenisation, LM decoding, evaluation).

`load_codec(path_or_id)` returns a `Codec`:

- ``encode(wav, sample_rate) -> codes``: wav (samples,), (batch, samples) or (batch, 1, samples)
  float at any rate (resampled to the codec's); codes a LongTensor (batch, frames) in
  [0, codebook_size). Batched inputs are padded by the caller; `n_frames` says how many frames of
  each row belong to its own audio.
- ``decode(codes) -> wav``: (batch, frames) -> (batch, samples) float at `sample_rate`.
- ``sample_rate``, ``frame_rate_hz``, ``codebook_size``, ``source`` (what was loaded).

Loaders are kept in a registry (`CODEC_LOADERS`), tried in order; each says whether it
recognises the path or id. Built in: ``workbench`` (a codec run directory, its ``codec.pt`` or
``checkpoint.pt``) and ``xcodec2-hf`` (a transformers X-codec2 checkpoint such as
``HKUSTAudio/xcodec2-hf``, from a local directory or, where a hub is reachable, its id; also the
run directory of a fine-tuned X-codec2, ``CodecConfig.init_from``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch


@runtime_checkable
class Codec(Protocol):
    sample_rate: int
    frame_rate_hz: float
    codebook_size: int
    source: str

    def encode(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor: ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...

    def n_frames(self, n_samples: int) -> int: ...


def _as_batch(wav: torch.Tensor) -> torch.Tensor:
    """(samples,) | (batch, samples) | (batch, 1, samples) -> (batch, samples) float32."""
    wav = torch.as_tensor(wav)
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    elif wav.dim() == 3:
        if wav.shape[1] != 1:
            raise ValueError(f"expected mono audio (batch, 1, samples), got shape {tuple(wav.shape)}")
        wav = wav[:, 0]
    elif wav.dim() != 2:
        raise ValueError(f"expected (samples,), (batch, samples) or (batch, 1, samples), got {tuple(wav.shape)}")
    return wav.float()


def _check_codes(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    codes = torch.as_tensor(codes)
    if codes.dim() == 1:
        codes = codes.unsqueeze(0)
    if codes.dim() != 2:
        raise ValueError(f"codes must be (batch, frames), got shape {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(f"codes outside [0, {codebook_size}): min {int(codes.min())}, max {int(codes.max())}")
    return codes.long()


class WorkbenchCodec:
    """A codec trained by `workbench.codec.train_codec`."""

    def __init__(self, model, source: str = "", device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.config = model.config
        self.sample_rate = int(self.config.sample_rate)
        self.hop_length = int(self.config.hop_length)
        self.frame_rate_hz = float(self.config.frame_rate_hz)
        self.codebook_size = int(self.config.codebook_size)
        self.source = source

    def n_frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.hop_length)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        from workbench.audio import resample

        wav = resample(_as_batch(wav), int(sample_rate), self.sample_rate)
        return self.model.encode(wav.unsqueeze(1).to(self.device)).codes.cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        codes = _check_codes(codes, self.codebook_size)
        return self.model.decode(codes.to(self.device))[:, 0].float().cpu()


class HFXcodec2Codec:
    """transformers' ``Xcodec2Model`` with its feature extractor (w2v-BERT fbank features)."""

    def __init__(self, model, feature_extractor, source: str = "", device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.feature_extractor = feature_extractor
        self.device = torch.device(device)
        self.sample_rate = int(model.config.sampling_rate)
        self.hop_length = int(model.config.hop_length)
        self.frame_rate_hz = self.sample_rate / self.hop_length
        self.codebook_size = int(math.prod(model.config.quantization_levels))
        self.source = source

    def n_frames(self, n_samples: int) -> int:
        # the feature extractor appends one sample, then pads to a whole hop
        return math.ceil((n_samples + 1) / self.hop_length)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        from workbench.audio import resample

        wav = resample(_as_batch(wav), int(sample_rate), self.sample_rate)
        inputs = self.feature_extractor([w.numpy() for w in wav], sampling_rate=self.sample_rate,
                                        return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if v is not None}
        output = self.model.encode(**inputs, return_dict=True)
        return output.audio_codes[:, 0].long().cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        codes = _check_codes(codes, self.codebook_size)
        audio = self.model.decode(audio_codes=codes.unsqueeze(1).to(self.device), return_dict=True).audio_values
        return audio[:, 0].float().cpu()


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CodecLoader:
    name: str
    recognises: Callable[[str], bool]
    load: Callable[[str, str], Codec]  # (path_or_id, device) -> Codec


# File names of a workbench codec run (written by `workbench.codec.train`, read here).
CHECKPOINT_NAME = "checkpoint.pt"
CODEC_NAME = "codec.pt"


def _workbench_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".pt":
        return path
    for name in (CODEC_NAME, CHECKPOINT_NAME):
        if (path / name).is_file():
            return path / name
    return None


def _load_workbench(path_or_id: str, device: str) -> WorkbenchCodec:
    from workbench.codec.config import CodecConfig, current_fields
    from workbench.codec.model import build_model
    from workbench.config import from_params

    file = _workbench_file(Path(path_or_id))
    if file is None:
        raise FileNotFoundError(f"{path_or_id}: no codec.pt or checkpoint.pt")
    from workbench.checkpoints import load_weights_only

    state = load_weights_only(file)  # refuses a file that holds more than weights
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{file}: not a workbench codec checkpoint (keys {sorted(state) if isinstance(state, dict) else type(state).__name__})")
    config = from_params(CodecConfig, current_fields(state["config"]))
    if config.init_from:
        raise ValueError(f"{file}: a fine-tuning checkpoint of the X-codec2 {config.init_from!r}; "
                         f"load its run directory ({file.parent}) instead")
    model = build_model(config)
    model.load_state_dict(state["model"])
    return WorkbenchCodec(model, source=str(file), device=device)


def is_xcodec2_dir(path: Path) -> bool:
    """A local folder holding a transformers X-codec2 checkpoint (config.json says so)."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "xcodec2"
    except json.JSONDecodeError:
        return False


def _looks_like_hub_id(path_or_id: str) -> bool:
    return not Path(path_or_id).exists() and path_or_id.count("/") == 1 and "xcodec2" in path_or_id.lower()


def _load_xcodec2(path_or_id: str, device: str) -> HFXcodec2Codec:
    from transformers import Xcodec2FeatureExtractor, Xcodec2Model

    model = Xcodec2Model.from_pretrained(path_or_id)
    try:
        feature_extractor = Xcodec2FeatureExtractor.from_pretrained(path_or_id)
    except OSError:  # a checkpoint saved without preprocessor_config.json: defaults of the model
        feature_extractor = Xcodec2FeatureExtractor(sampling_rate=model.config.sampling_rate,
                                                    hop_length=model.config.hop_length)
    return HFXcodec2Codec(model, feature_extractor, source=str(path_or_id), device=device)


CODEC_LOADERS: list[CodecLoader] = [
    # a fine-tuned X-codec2 run directory holds checkpoint.pt too, but its codec is the
    # save_pretrained folder (config.json of model_type xcodec2): that one is left to xcodec2-hf
    CodecLoader("workbench", lambda p: _workbench_file(Path(p)) is not None and not is_xcodec2_dir(Path(p)),
                _load_workbench),
    CodecLoader("xcodec2-hf", lambda p: is_xcodec2_dir(Path(p)) or _looks_like_hub_id(p), _load_xcodec2),
]


def register_codec_loader(loader: CodecLoader) -> None:
    """Add a loader (tried before the built-in ones)."""
    CODEC_LOADERS.insert(0, loader)


def load_codec(path_or_id: str | Path, device: str = "cpu") -> Codec:
    """Load a codec from a workbench run directory / .pt file, or a transformers X-codec2
    checkpoint (local directory or hub id). Raises with the tried loaders when none fits."""
    key = str(path_or_id)
    for loader in CODEC_LOADERS:
        if loader.recognises(key):
            return loader.load(key, device)
    raise ValueError(f"load_codec({key!r}): not recognised by any codec loader "
                     f"({', '.join(l.name for l in CODEC_LOADERS)}); expected a codec run directory, "
                     "a codec.pt/checkpoint.pt, or an X-codec2 checkpoint directory / hub id")
