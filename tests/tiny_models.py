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


def save_tiny_wav2vec2(path, num_hidden_layers: int = 1):
    """A tiny random wav2vec2 (model + feature extractor) saved to `path`: a semantic teacher for
    codec tests that loads offline."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=num_hidden_layers, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4),
                            num_feat_extract_layers=2, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor().save_pretrained(path)
    return path
