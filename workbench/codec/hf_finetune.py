"""Fine-tuning a transformers X-codec2 checkpoint (``Xcodec2Model``) with the codec training loop.

`train_codec` uses this when ``CodecConfig.init_from`` names a local X-codec2 folder or a hub
id: the loop, data, losses, checkpoints and resume are the ones of a workbench codec run; only
the model differs. `FinetuneXcodec2` wraps the loaded model so that it looks to the loop like a
`CodecModel` (``forward(wav) -> CodecOutput``, ``hop_length``, ``codebook_size``).

What trains (``CodecConfig.finetune_train``):

- ``"all"`` (default): everything except the semantic encoder (w2v-BERT 2.0), i.e. the semantic
  adapter, the acoustic encoder, ``fc_encoder``, the FSQ projections and the decoder. This is
  X-codec2's own split: its semantic encoder was frozen in training and runs under
  ``torch.no_grad`` in the transformers code, so it could not receive gradients anyway. The
  gradient reaches the encoder side through FSQ's straight-through estimator (transformers'
  ``Xcodec2FiniteScalarQuantization`` rounds with ``x + (round(x) - x).detach()``). Caveat: the
  released checkpoint has no semantic decoder, so X-codec2's semantic reconstruction loss is not
  available and the encoder side is pulled by the acoustic losses alone; codes change, so token
  corpora and LMs made with the original checkpoint no longer match the fine-tuned codec.
- ``"decoder"``: only the decoder and the FSQ output projection (``quantizer.project_out``) train.
  The codes of any audio stay exactly those of the original checkpoint, so existing token
  corpora and LMs stay valid; only the resynthesis adapts (domain / speaker adaptation).

The semantic encoder is always kept in eval mode (no dropout) and left out of ``checkpoint.pt``
(a resumed run reloads it from ``init_from``). The sample rate, hop and codebook are the
checkpoint's: `CodecConfig`'s model-shape fields and ``sample_rate`` are not used. The inference
artifact is the model written with ``save_pretrained`` (plus ``preprocessor_config.json``) into
the run directory, which `workbench.codec.load_codec` then loads as an X-codec2 codec.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from workbench.codec.interface import is_xcodec2_dir
from workbench.codec.model import CodecOutput

SEMANTIC_PREFIX = "xcodec2.semantic_encoder."
TRAIN_CHOICES = ("all", "decoder")


def load_xcodec2_checkpoint(init_from: str):
    """(Xcodec2Model, Xcodec2FeatureExtractor) from a local folder or hub id; errors name `init_from`."""
    from transformers import Xcodec2FeatureExtractor, Xcodec2Model

    path = Path(init_from).expanduser()
    if path.exists():
        if not path.is_dir() or not is_xcodec2_dir(path):
            raise ValueError(f"init_from {init_from!r}: not an X-codec2 checkpoint folder (expected a "
                             "config.json with model_type 'xcodec2', as written by save_pretrained)")
        source = str(path)
    elif init_from.count("/") == 1 and not init_from.startswith((".", "/", "~")):
        source = init_from  # a hub id
    else:
        raise FileNotFoundError(f"init_from {init_from!r}: no such X-codec2 checkpoint folder")
    try:
        model = Xcodec2Model.from_pretrained(source)
    except (OSError, ValueError) as error:  # ValueError: huggingface_hub's invalid-id error
        raise FileNotFoundError(f"init_from {init_from!r}: could not load an X-codec2 checkpoint "
                                f"(not a local folder; as a hub id: {error})") from error
    try:
        extractor = Xcodec2FeatureExtractor.from_pretrained(source)
    except OSError:  # saved without preprocessor_config.json: the model's rate and hop
        extractor = Xcodec2FeatureExtractor(sampling_rate=model.config.sampling_rate,
                                            hop_length=model.config.hop_length)
    if extractor.sampling_rate != model.config.sampling_rate or extractor.hop_length != model.config.hop_length:
        raise ValueError(f"init_from {init_from!r}: feature extractor ({extractor.sampling_rate} Hz, hop "
                         f"{extractor.hop_length}) disagrees with the model ({model.config.sampling_rate} Hz, "
                         f"hop {model.config.hop_length})")
    return model, extractor


class FinetuneXcodec2(nn.Module):
    """An ``Xcodec2Model`` (plus its feature extractor) with the interface the training loop uses."""

    def __init__(self, model, feature_extractor, train_parts: str = "all"):
        super().__init__()
        if train_parts not in TRAIN_CHOICES:
            raise ValueError(f"finetune_train {train_parts!r}: expected one of {TRAIN_CHOICES}")
        self.xcodec2 = model
        self.feature_extractor = feature_extractor
        self.train_parts = train_parts
        config = model.config
        self.sample_rate = int(config.sampling_rate)
        self.hop_length = int(config.hop_length)
        self.fsq_levels = tuple(int(level) for level in config.quantization_levels)
        self.codebook_size = 1
        for level in self.fsq_levels:
            self.codebook_size *= level
        model.requires_grad_(False)
        if train_parts == "all":
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(not name.startswith("semantic_encoder."))
        else:
            model.acoustic_decoder.requires_grad_(True)
            model.quantizer.project_out.requires_grad_(True)
        # FSQ's input (after the first bound); read by the codebook-entropy regulariser
        self._fsq_input: list[torch.Tensor] = []
        model.quantizer.quantizer.register_forward_pre_hook(self._keep_fsq_input)

    def _keep_fsq_input(self, module, args) -> None:
        self._fsq_input[:] = [args[0]]

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    def train(self, mode: bool = True) -> "FinetuneXcodec2":
        super().train(mode)
        self.xcodec2.semantic_encoder.eval()  # frozen: no dropout, whatever the mode
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def features(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """wav (B, 1, L) -> the feature extractor's inputs (padded audio, fbank features, masks)."""
        with torch.no_grad():
            inputs = self.feature_extractor([w for w in wav[:, 0].detach().cpu()], sampling_rate=self.sample_rate,
                                            return_tensors="pt")
        device = next(self.xcodec2.parameters()).device
        return {k: v.to(device) for k, v in inputs.items() if v is not None}

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """wav (B, 1, L) -> reconstruction (B, 1, L), codes and FSQ values, via ``Xcodec2Model.forward``.

        The feature extractor appends one sample and pads to a whole hop (what inference does),
        so there are ceil((L + 1) / hop) frames; the output is cut back to L samples."""
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected (batch, 1, samples), got {tuple(wav.shape)}")
        self._fsq_input.clear()
        output = self.xcodec2(**self.features(wav), return_dict=True)
        fsq_values = None
        if self._fsq_input:  # values rounded to the codes, in level units (see losses)
            fsq = self.xcodec2.quantizer.quantizer
            fsq_values = fsq.bound(self._fsq_input[0].float())
            self._fsq_input.clear()
        return CodecOutput(audio=output.audio_values[..., : wav.shape[-1]], codes=output.audio_codes[:, 0].long(),
                           fsq_values=fsq_values)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T) -> waveform (B, 1, T * hop)."""
        return self.xcodec2.decode(audio_codes=codes.unsqueeze(1), return_dict=True).audio_values

    # --- checkpoint state: everything but the frozen semantic encoder (reloaded from init_from) ----
    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith(SEMANTIC_PREFIX)}

    def load_checkpoint_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(SEMANTIC_PREFIX)]
        if missing or unexpected:
            raise ValueError(f"fine-tuning checkpoint does not fit the init_from model: missing {missing[:5]}, "
                             f"unexpected {list(unexpected)[:5]}")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model (``save_pretrained``) and feature extractor into `directory`, each file
        replaced atomically (written in a temporary folder there, then renamed; config.json last,
        so a reader never sees a new config with old weights)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".xcodec2-save.", dir=directory))
        try:
            self.xcodec2.save_pretrained(tmp)
            self.feature_extractor.save_pretrained(tmp)
            names = sorted((p.name for p in tmp.iterdir()), key=lambda name: name == "config.json")
            for name in names:
                os.replace(tmp / name, directory / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory


def build_finetune_model(init_from: str, train_parts: str = "all") -> FinetuneXcodec2:
    model, extractor = load_xcodec2_checkpoint(init_from)
    return FinetuneXcodec2(model, extractor, train_parts)


def check_data_rate(utterances, sample_rate: int, init_from: str) -> None:
    """Refuse audio recorded below the checkpoint's rate (upsampling it would teach the codec
    band-limited audio). Rates come from the manifest, else from the files' headers."""
    import soundfile

    low = []
    for utterance in utterances:
        rate = utterance.sample_rate
        if not rate:
            try:
                rate = soundfile.info(str(utterance.audio_path)).samplerate
            except RuntimeError:
                continue  # unreadable by soundfile: load_audio will say so
        if rate < sample_rate:
            low.append((utterance.utterance_id, rate))
    if low:
        rates = sorted({rate for _, rate in low})
        raise ValueError(f"init_from {init_from!r} is a {sample_rate} Hz codec, but {len(low)} training "
                         f"utterance(s) are at {rates} Hz (e.g. {low[0][0]}); use data at >= {sample_rate} Hz "
                         "or a checkpoint at the data's rate")
