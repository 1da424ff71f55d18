"""The one settings table: every stage has every profile, every entry builds its config, and a
profile a stage lacks is an error naming the stages, never a silent fall-back to class defaults."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import yaml

from workbench import settings
from workbench.config import PROFILE_NAMES, ConfigError, for_profile


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("stage", sorted(settings.STAGE_CLASSES))
def test_every_stage_builds_its_config_for_every_profile(stage, profile):
    cls = settings.stage_class(stage)
    assert cls.PROFILES is settings.stage_profiles(stage)  # the class reads the table, not a copy
    config = for_profile(cls, profile)
    written = settings.stage_profiles(stage)[profile]
    for key, value in written.items():  # what the table says is what the config holds
        held = getattr(config, key)
        assert (list(held) if isinstance(held, tuple) else held) == value, (stage, profile, key)


def test_the_table_names_exactly_the_stages_the_library_configures():
    assert set(settings.settings_table()) == set(settings.STAGE_CLASSES)
    assert settings.missing_entries() == []


def test_gpu_profiles_are_real_settings_not_class_defaults():
    for stage in ("search", "codec_study", "synth", "data", "lm"):
        assert settings.stage_profiles(stage)["gpu-8b"], stage
    search = for_profile(settings.stage_class("search"), "gpu-1b")
    assert search.n_sentences > for_profile(settings.stage_class("search"), "cpu").n_sentences
    assert max(search.budgets) >= 16


def test_a_profile_a_stage_lacks_is_an_error_naming_the_stages(monkeypatch, tmp_path):
    table = yaml.safe_load(settings.TABLE_PATH.read_text())
    del table["search"]["gpu-8b"], table["synth"]["gpu-8b"]
    edited = tmp_path / "profiles.yaml"
    edited.write_text(yaml.safe_dump(table, sort_keys=False))
    monkeypatch.setattr(settings, "TABLE_PATH", edited)
    settings.settings_table.cache_clear()
    try:
        assert settings.stages_lacking("gpu-8b") == ["synth", "search"]

        @dataclasses.dataclass(frozen=True)
        class Search:
            n: int = 1
            PROFILES: ClassVar[dict] = settings.stage_profiles("search")

        with pytest.raises(ConfigError) as error:
            for_profile(Search, "gpu-8b")
        assert "'gpu-8b'" in str(error.value) and "synth, search" in str(error.value)
    finally:
        settings.settings_table.cache_clear()
