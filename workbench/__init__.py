"""Workbench for LLM-based speech synthesis: codec training, LM scaling curves, inference-time search.

Imports are cheap on purpose: submodules load torch, transformers and models only when called.
"""

__version__ = "0.1.0"
