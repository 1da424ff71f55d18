"""Tiny random models shared by several test files (built here once, not copied per file)."""

from __future__ import annotations

import torch


def tiny_xcodec2_model():
    """A seeded, tiny random transformers `Xcodec2Model` (eval mode) and its feature extractor."""
    from transformers import Xcodec2Config, Xcodec2FeatureExtractor, Xcodec2Model

    config = Xcodec2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, head_dim=16, encoder_hidden_size=4, quantization_dim=48,
        quantization_levels=[4, 4, 4],
        semantic_model_config={"model_type": "wav2vec2-bert", "hidden_size": 16, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "intermediate_size": 32, "output_hidden_size": 16},
    )
    torch.manual_seed(0)
    return Xcodec2Model(config).eval(), Xcodec2FeatureExtractor()
