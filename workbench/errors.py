"""Error types shared across the library (a leaf module: imports nothing of the workbench)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A parameter that does not fit its config: unknown name, wrong type or bad value."""
