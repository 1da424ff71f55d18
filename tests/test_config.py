from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from workbench.config import (ConfigError, config_hash, for_profile, from_notebook, from_params,
                              from_yaml, to_yaml)


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-3
    batch_size: int = 8
    use_gan: bool = True
    levels: tuple[int, ...] = (4, 4, 4)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    teacher: str | None = None
    out: Path = Path("runs")

    PROFILES: ClassVar[dict] = {"smoke": {"batch_size": 2}, "cpu": {}}


def test_from_params_builds_typed_config():
    config = from_params(TrainConfig, {"learning_rate": 1, "levels": [8, 5, 5], "out": "x"})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.levels == (8, 5, 5)
    assert config.out == Path("x")


def test_unknown_key_names_key_value_and_closest_field():
    with pytest.raises(ConfigError) as error:
        from_params(TrainConfig, {"lerning_rate": 0.1})
    message = str(error.value)
    assert "'lerning_rate'" in message and "0.1" in message
    assert "did you mean 'learning_rate'?" in message


def test_wrong_type_names_key_value_and_expected_type():
    with pytest.raises(ConfigError) as error:
        from_params(TrainConfig, {"batch_size": "eight"})
    message = str(error.value)
    assert "'batch_size'" in message and "'eight'" in message and "int" in message


@pytest.mark.parametrize("params", [
    {"batch_size": True},  # bool is not a number
    {"batch_size": 2.5},  # no silent truncation
    {"use_gan": 1},
    {"levels": [4, "x"]},
    {"optimizer": "adam"},
])
def test_lossy_or_wrong_values_are_rejected(params):
    with pytest.raises(ConfigError):
        from_params(TrainConfig, params)


def test_literal_error_suggests_closest_choice():
    with pytest.raises(ConfigError, match="did you mean 'adamw'"):
        from_params(TrainConfig, {"optimizer": "adamv"})


def test_optional_accepts_none_and_value():
    assert from_params(TrainConfig, {"teacher": None}).teacher is None
    assert from_params(TrainConfig, {"teacher": "w2v"}).teacher == "w2v"


def test_yaml_round_trip():
    config = from_params(TrainConfig, {"learning_rate": 3e-4, "levels": [8, 8], "teacher": "t", "out": "o"})
    assert from_yaml(TrainConfig, to_yaml(config)) == config


def test_profiles_and_overrides():
    assert for_profile(TrainConfig, "smoke").batch_size == 2
    assert for_profile(TrainConfig, "smoke", batch_size=4).batch_size == 4
    with pytest.raises(ConfigError, match="did you mean 'smoke'"):
        for_profile(TrainConfig, "smoek")


def test_from_notebook_takes_non_none_fields_only():
    namespace = {"batch_size": None, "learning_rate": 0.5, "unrelated": 3}
    config = from_notebook(TrainConfig, "smoke", namespace)
    assert config.batch_size == 2 and config.learning_rate == 0.5


def test_config_hash_is_stable_and_discriminates():
    a, b = TrainConfig(), TrainConfig(batch_size=9)
    assert config_hash(a) == config_hash(TrainConfig())
    assert config_hash(a) != config_hash(b)


@pytest.mark.parametrize("text, value", [
    ("5e-5", 5e-5), ("1e11", 100_000_000_000), ("-2.5E-3", -2.5e-3), ("0.5", 0.5), ("8", 8), ("true", True),
    ("null", None), ("[4, 4]", [4, 4]), ("[1e-3, 2e-3]", [1e-3, 2e-3]), ("cpu-3m", "cpu-3m"), ("a: [", "a: ["),
])
def test_command_line_values_are_typed_like_yaml_with_scientific_notation(text, value):
    from workbench.config import parse_value

    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_every_set_override_parses_the_same_and_validates_against_the_config():
    from workbench.config import parse_overrides
    from workbench.lm.train import LMTrainConfig

    overrides = parse_overrides(["lr=5e-5", "token_budget=4e5", " preset = cpu-1m"])
    assert overrides == {"lr": 5e-5, "token_budget": 400_000, "preset": "cpu-1m"}
    config = for_profile(LMTrainConfig, "smoke", **overrides)
    assert config.lr == 5e-5 and config.token_budget == 400_000
    with pytest.raises(ConfigError, match="'lr 5e-5': expected KEY=VALUE"):
        parse_overrides(["lr 5e-5"])
    with pytest.raises(ConfigError, match="did you mean 'token_budget'"):
        for_profile(LMTrainConfig, "smoke", **parse_overrides(["token_budgt=1e5"]))
