"""Single-codebook FSQ speech codec in the X-codec2 mould (Llasa §2): model, training,
evaluation, tokenisation, and `load_codec`, the one interface downstream code uses.

Names are imported on first use (PEP 562) so that ``import workbench.codec`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CodecConfig": "workbench.codec.config",
    "Codec": "workbench.codec.interface",
    "CodecLoader": "workbench.codec.interface",
    "load_codec": "workbench.codec.interface",
    "register_codec_loader": "workbench.codec.interface",
    "CodecModel": "workbench.codec.model",
    "build_model": "workbench.codec.model",
    "train_codec": "workbench.codec.train",
    "CodecTrainResult": "workbench.codec.train",
    "evaluate_codec": "workbench.codec.evaluate",
    "CodecEval": "workbench.codec.evaluate",
    "tokenize_corpus": "workbench.codec.tokenize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench.codec' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
