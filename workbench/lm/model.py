"""Build, save and load the LM: an ordinary `transformers.LlamaForCausalLM` (docs/reference.md §1).

A workbench checkpoint is a plain Hugging Face folder: ``config.json`` + weights, the tokenizer
(with the specials and speech tokens), ``generation_config.json`` whose eos is
``<|SPEECH_GENERATION_END|>`` and whose sampling defaults are the published ones (temperature
0.8, top-p 1.0), plus ``workbench_lm.json`` with the token layout and the codec description.
`AutoModelForCausalLM.from_pretrained` + `AutoTokenizer.from_pretrained` + `model.generate` work on
it without any workbench code. A released ``HKUSTAudio/Llasa-*`` folder (no workbench json) loads
too: the layout is read off its tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench.data.token_shards import CodecInfo
from workbench.lm.layout import TokenLayout, check_tokenizer, layout_from_tokenizer
from workbench.lm.presets import ModelPreset, get_preset

WORKBENCH_LM_FILE = "workbench_lm.json"
FORMAT_VERSION = 1
PUBLISHED_TEMPERATURE = 0.8
PUBLISHED_TOP_P = 1.0


def build_llama_config(preset: ModelPreset | str, layout: TokenLayout, *,
                       bos_token_id: int | None = None, pad_token_id: int | None = None,
                       max_position_embeddings: int | None = None) -> Any:
    """`LlamaConfig` of a preset with the layout's vocabulary; eos = SPEECH_GENERATION_END."""
    from transformers import LlamaConfig

    preset = get_preset(preset) if isinstance(preset, str) else preset
    return LlamaConfig(
        vocab_size=layout.vocab_size,
        hidden_size=preset.d_model,
        intermediate_size=preset.d_ffn,
        num_hidden_layers=preset.n_layers,
        num_attention_heads=preset.n_heads,
        num_key_value_heads=preset.n_kv_heads,
        head_dim=preset.head_dim,
        max_position_embeddings=max_position_embeddings or preset.max_position_embeddings,
        rms_norm_eps=preset.rms_norm_eps,
        rope_theta=preset.rope_theta,
        tie_word_embeddings=preset.tie_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=layout.speech_generation_end,
        pad_token_id=pad_token_id,
        attention_dropout=0.0,
    )


def build_model(preset: ModelPreset | str, layout: TokenLayout, *, seed: int = 0,
                bos_token_id: int | None = None, pad_token_id: int | None = None,
                max_position_embeddings: int | None = None) -> Any:
    """A freshly initialised fp32 `LlamaForCausalLM` (deterministic given `seed`)."""
    import torch
    from transformers import LlamaForCausalLM

    config = build_llama_config(preset, layout, bos_token_id=bos_token_id, pad_token_id=pad_token_id,
                                max_position_embeddings=max_position_embeddings)
    # Seed a private generator state: the init must not depend on what ran before in the process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = make_generation_config(layout, pad_token_id=pad_token_id,
                                                     max_length=config.max_position_embeddings)
    return model


def make_generation_config(layout: TokenLayout, *, pad_token_id: int | None = None,
                           max_length: int = 2048) -> Any:
    """Sampling defaults for plain `model.generate`: stop at SPEECH_GENERATION_END, published
    temperature 0.8 / top-p 1.0, and no top-k cut (HF would otherwise default to top-k 50)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True, temperature=PUBLISHED_TEMPERATURE, top_p=PUBLISHED_TOP_P, top_k=0,
        eos_token_id=layout.speech_generation_end,
        pad_token_id=pad_token_id if pad_token_id is not None else layout.speech_generation_end,
        max_length=max_length,
    )


@dataclass
class LoadedLM:
    model: Any  # LlamaForCausalLM
    tokenizer: Any  # PreTrainedTokenizerFast
    layout: TokenLayout
    codec: CodecInfo | None
    meta: dict[str, Any]


def _write_checkpoint_files(out_dir: Path, model: Any, tokenizer: Any, layout: TokenLayout,
                            codec: CodecInfo | None, extra: dict[str, Any] | None) -> None:
    check_tokenizer(tokenizer, layout)
    if model.config.vocab_size < layout.vocab_size:
        raise ValueError(f"model vocab {model.config.vocab_size} < layout vocab {layout.vocab_size}")
    model.generation_config.eos_token_id = layout.speech_generation_end
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    meta = {"format_version": FORMAT_VERSION, "layout": layout.to_dict(),
            "codec": asdict(codec) if codec is not None else None, **(extra or {})}
    (out_dir / WORKBENCH_LM_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def save_checkpoint(out_dir: str | Path, model: Any, tokenizer: Any, layout: TokenLayout, *,
                    codec: CodecInfo | None = None, extra: dict[str, Any] | None = None,
                    extra_files: dict[str, Any] | None = None) -> Path:
    """Write a workbench checkpoint folder atomically: everything goes into a temporary sibling
    folder which is then renamed into place, so a crash never leaves a half-written checkpoint
    under `out_dir`. `extra_files` maps file names to callables `f(path)` that write additional
    files (the trainer's optimizer state) inside the same atomic step."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        _write_checkpoint_files(tmp, model, tokenizer, layout, codec, extra)
        for name, write in (extra_files or {}).items():
            write(tmp / name)
        if out_dir.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The workbench metadata of a checkpoint folder (layout, codec, ...); {} for a Llasa-style
    folder without it. Cheap: reads one small JSON file, no weights."""
    meta_path = Path(path) / WORKBENCH_LM_FILE
    return json.loads(meta_path.read_text()) if meta_path.exists() else {}


def cache_kwarg(model: Any) -> str:
    """transformers 5.x names the cache argument `cache` (`past_key_values` is deprecated there)."""
    import inspect

    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def load_lm(path: str | Path, *, device: str = "cpu", dtype: Any = None) -> LoadedLM:
    """Load a workbench checkpoint or a Llasa-style folder (LlamaForCausalLM + tokenizer with the
    8 specials and ``<|s_k|>`` tokens). dtype defaults to fp32 on CPU (bf16 matmuls are ~200x
    slower there) and to the checkpoint's own dtype elsewhere."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json; not a Hugging Face model folder")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    meta = read_checkpoint_meta(path)
    if "layout" in meta:
        layout = TokenLayout.from_dict(meta["layout"])
        check_tokenizer(tokenizer, layout)
    else:
        layout = layout_from_tokenizer(tokenizer)
    codec = CodecInfo(**meta["codec"]) if meta.get("codec") else None
    if dtype is None:
        dtype = torch.float32 if str(device).startswith("cpu") else "auto"
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
    if model.config.vocab_size < layout.vocab_size:
        raise ValueError(
            f"{path}: model vocabulary {model.config.vocab_size} is smaller than the tokenizer's "
            f"layout ({layout.vocab_size})"
        )
    # Released checkpoints may not set eos to the end-of-speech token; the workbench relies on it.
    model.generation_config.eos_token_id = layout.speech_generation_end
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                                else layout.speech_generation_end)
    return LoadedLM(model=model, tokenizer=tokenizer, layout=layout, codec=codec, meta=meta)


__all__ = [
    "cache_kwarg",
    "WORKBENCH_LM_FILE", "LoadedLM", "build_llama_config", "build_model", "make_generation_config",
    "save_checkpoint", "read_checkpoint_meta", "load_lm",
]
