"""Typed dataclass configs, named profiles, and validation of notebook parameters.

Every experiment is described by a frozen dataclass. A config class carries its per-profile values
in a class attribute ``PROFILES``, which the library's classes read from the one settings table
(`workbench/profiles.yaml`, see `workbench.settings`); `for_profile` applies them, and a profile a
class lacks is an error, never a silent fall-back to the class defaults.
Papermill only warns about unknown parameters, so `from_params` is the guard that rejects a typo or
a wrong type before any work starts, with a message that names the key, the value, the expected
type and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypeVar, Union

import yaml

from workbench.errors import ConfigError
from workbench.settings import PROFILE_NAMES, TABLE_PATH, stages_lacking

DEFAULT_PROFILE = "cpu"

C = TypeVar("C")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError. Only lossless conversions are made:
    int -> float, list -> tuple, str -> Path. bool is never taken as a number."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail() -> ConfigError:
        return ConfigError(
            f"parameter {key!r} = {value!r} ({type(value).__name__}): expected {_type_name(tp)}"
        )

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise fail()
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"parameter {key!r} = {value!r}: expected one of {list(args)}{hint}"
        )
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail()
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise fail()
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            inner = args[0] if args else Any
            items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else list(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail()
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise fail()
        return Path(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_params(tp, value)
        raise fail()
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise fail()


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def from_params(cls: type[C], params: Mapping[str, Any], *, base: C | None = None) -> C:
    """Build a `cls` config from a flat mapping of parameters (a notebook's parameters cell).

    Fields not in `params` keep their value in `base` (or the class default). Keys of `params`
    that are not fields raise ConfigError with the closest valid field name; values of the wrong
    type raise ConfigError naming the key, the value and the expected type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass config")
    types_by_name = _field_types(cls)
    unknown = [k for k in params if k not in types_by_name]
    if unknown:
        messages = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(types_by_name), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            messages.append(
                f"unknown parameter {key!r} = {params[key]!r} for {cls.__name__}{hint}"
            )
        raise ConfigError(
            "\n".join(messages) + f"\nvalid parameters: {', '.join(sorted(types_by_name))}"
        )
    values = {k: _coerce(v, types_by_name[k], k) for k, v in params.items()}
    try:
        if base is not None:
            return dataclasses.replace(base, **values)
        return cls(**values)
    except TypeError as error:  # a required field without default and not given
        raise ConfigError(f"{cls.__name__}: {error}") from None


def for_profile(cls: type[C], profile: str = DEFAULT_PROFILE, **overrides: Any) -> C:
    """The `cls` config for a named profile, then `overrides` on top (validated like params)."""
    if profile not in PROFILE_NAMES:
        close = difflib.get_close_matches(profile, PROFILE_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown profile {profile!r}{hint}; profiles: {', '.join(PROFILE_NAMES)}")
    profiles = getattr(cls, "PROFILES", None)
    if profiles is not None and profile not in profiles:
        raise ConfigError(_missing_profile_message(cls, profile))
    config = from_params(cls, dict((profiles or {}).get(profile, {})))
    return from_params(cls, overrides, base=config) if overrides else config


# YAML 1.1 (PyYAML) reads "5e-5" and "1e11" as strings (it wants "5.0e-5"); a command line user
# means a number. Anything this pattern matches is a float when YAML left it a string.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_value(text: str) -> Any:
    """One command-line value, typed as YAML types it (1, 0.5, true, null, [4, 4], {a: 1}),
    scientific notation included (5e-5 a float, 1e11 an int); text that is not valid YAML stays a string.
    `from_params` then checks it against the field's type."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, list):
        return [_number_or_text(v) for v in value]
    return _number_or_text(value)


def _number_or_text(value: Any) -> Any:
    """Scientific notation YAML left as text: an int when whole (token_budget=1e6), else a float."""
    if not (isinstance(value, str) and _FLOAT_TEXT.match(value.strip())):
        return value
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 2**63 else number


def parse_overrides(pairs: Iterable[str] | None, option: str = "--set") -> dict[str, Any]:
    """`KEY=VALUE` strings (every command's `--set`) as a dict of typed values (`parse_value`).
    A pair without `=` or with an empty key is a ConfigError naming it; unknown keys and wrong
    types are caught later by `from_params` with its "did you mean" message."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = parse_value(value)
    return out


def _missing_profile_message(cls: type, profile: str) -> str:
    lacking = stages_lacking(profile)
    return (f"{cls.__name__} has no settings for profile {profile!r}; stages of {TABLE_PATH.name} "
            f"without it: {', '.join(lacking) or '(none: the class is not in the table)'}")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-safe dict (tuples become lists, paths strings)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def from_yaml(cls: type[C], text_or_path: str | Path) -> C:
    """Inverse of `to_yaml`: `from_yaml(type(c), to_yaml(c)) == c`."""
    text = text_or_path
    if isinstance(text_or_path, Path) or (
        isinstance(text_or_path, str) and "\n" not in text_or_path and text_or_path.endswith((".yaml", ".yml"))
    ):
        text = Path(text_or_path).read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: YAML must hold a mapping, got {type(data).__name__}")
    return from_params(cls, data)


def config_hash(config: Any, length: int = 12) -> str:
    """Stable short hash of a config's values: equal configs share a hash across processes."""
    blob = json.dumps(to_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(f"{type(config).__name__}:{blob}".encode()).hexdigest()[:length]


def from_notebook(cls: type[C], profile: str, namespace: Mapping[str, Any]) -> C:
    """The config a notebook's parameters describe: the profile's values, then every field of
    `cls` that the notebook's namespace sets to something other than None.

    Notebooks declare each field in their parameters cell with ``None`` meaning "the profile's
    value", so Papermill can override any single field and the rest follow the profile.
    """
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    overrides = {k: namespace[k] for k in names if k in namespace and namespace[k] is not None}
    return for_profile(cls, profile, **overrides)
