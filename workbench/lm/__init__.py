"""The speech LM: Llasa token layout, tokenizers, Llama presets, FLOP accounting, data, training
and generation.

Submodules are imported explicitly (``from workbench.lm.train import train_lm``) so that importing
the package stays cheap: torch and transformers load only with the modules that need them.
"""
