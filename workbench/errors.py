"""Error types shared across the library (a leaf module: imports nothing of the workbench)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A parameter that does not fit its config: unknown name, wrong type or bad value."""


class VerifierError(ValueError):
    """Bad input to a verifier or a bad verifier name/option; the message names the bad value.
    (Here rather than in `workbench.verifiers.base` so that the check models, which the verifiers
    package loads, can raise it without importing that package back.)"""
