"""Range checks for config fields, with the one-line message every config gives: the class, the
field, the bad value and the rule (called from a config's ``__post_init__``)."""

from __future__ import annotations

from typing import Any


def require_at_least(config: Any, minimum: float, *names: str) -> None:
    """Each of the fields `names` of `config` is None or >= `minimum`."""
    from workbench.config import ConfigError

    for name in names:
        value = getattr(config, name)
        if value is not None and not isinstance(value, bool) and value < minimum:
            raise ConfigError(f"{type(config).__name__}.{name} = {value!r}: must be >= {minimum}")


def require_fraction(config: Any, *names: str) -> None:
    """Each of the fields `names` of `config` lies in [0, 1)."""
    from workbench.config import ConfigError

    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{type(config).__name__}.{name} = {value!r}: must be in [0, 1)")


__all__ = ["require_at_least", "require_fraction"]
