"""Per-GPU memory of a profile's LM training, printed before anything is launched:
``python -m workbench.lm.memory_plan --profile gpu-8b --world-size 8`` (the estimate itself is
`workbench.lm.sharded.estimate_memory`; this is its command line, kept apart so that the sharding
module never imports the trainer that uses it)."""

from __future__ import annotations

from workbench.lm.sharded import estimate_memory


def main(argv: list[str] | None = None) -> None:
    """Print the per-GPU memory estimate of a profile before launching it:
    ``python -m workbench.lm.memory_plan --profile gpu-8b --world-size 8``."""
    import argparse

    from workbench.config import for_profile
    from workbench.lm.layout import TokenLayout
    from workbench.lm.model import build_llama_config
    from workbench.lm.train import LMTrainConfig

    parser = argparse.ArgumentParser(prog="python -m workbench.lm.memory_plan", description=main.__doc__)
    parser.add_argument("--profile", default="gpu-8b")
    parser.add_argument("--world-size", type=int, default=8, help="processes (GPUs) in all")
    parser.add_argument("--sharding", choices=("ddp", "fsdp"), default=None, help="default: the profile's")
    parser.add_argument("--text-vocab", type=int, default=128_256, help="text tokenizer entries (Llama-3: 128,256)")
    parser.add_argument("--codebook", type=int, default=65_536, help="codec codes (X-codec2: 65,536)")
    args = parser.parse_args(argv)
    config = for_profile(LMTrainConfig, args.profile)
    layout = TokenLayout(text_vocab_size=args.text_vocab, codebook_size=args.codebook)
    model_config = build_llama_config(config.preset, layout, max_position_embeddings=config.max_seq_len)
    sharding = args.sharding or config.sharding
    estimate = estimate_memory(model_config, world_size=args.world_size, sharding=sharding,
                               tokens_per_micro_batch=config.batch_size * config.max_seq_len)
    print(f"{args.profile} ({config.preset}, micro-batch {config.batch_size} x {config.max_seq_len} tokens): "
          + estimate.describe())


if __name__ == "__main__":
    main()
