"""The one settings table: every stage's values for every profile, read from `profiles.yaml`.

Config classes name their row (``PROFILES: ClassVar[dict] = stage_profiles("codec")``) and
`workbench.config.for_profile` applies it, so the notebooks, the command line and the pipeline all
read one file. The table is plain YAML (no torch, no Python), in the spirit of litgpt's config
files: a reader sees every profile of every stage side by side.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import ConfigError

PROFILE_NAMES = ("smoke", "cpu", "gpu-1b", "gpu-3b", "gpu-8b")
"""smoke: end to end in about 2 minutes (CI); cpu: the real experiment on 2 cores (default);
gpu-*: the paper's shapes (Llama-3.2-1B / 3B, Llama-3.1-8B, full-size X-codec2)."""

TABLE_PATH = Path(__file__).with_name("profiles.yaml")

# Stage name -> the config class its row configures ("module:Class"), so that a test and the
# plan command can build every stage x profile without importing torch up front.
STAGE_CLASSES = {
    "data": "workbench.data.prepare:DataConfig",
    "synth": "workbench.data.synth:SynthConfig",
    "synth_pretrain": "workbench.data.synth:PretrainSynthConfig",
    "codec": "workbench.codec.config:CodecConfig",
    "codec_study": "workbench.codec.study:CodecStudyConfig",
    "lm": "workbench.lm.train:LMTrainConfig",
    "sweep": "workbench.scaling.sweep:SweepConfig",
    "alignment": "workbench.scaling.alignment_study:AlignmentStudyConfig",
    "search": "workbench.search.ablation.config:AblationConfig",
    "asr": "workbench.checkmodels.asr_train:ASRTrainConfig",
    "speaker": "workbench.checkmodels.speaker_train:SpeakerTrainConfig",
}


@functools.cache
def settings_table() -> dict[str, dict[str, dict[str, Any]]]:
    """{stage: {profile: {field: value}}} as written in profiles.yaml (read once per process)."""
    table = yaml.safe_load(TABLE_PATH.read_text())
    if not isinstance(table, dict):
        raise ConfigError(f"{TABLE_PATH}: expected a mapping of stages, got {type(table).__name__}")
    for stage, row in table.items():
        if not isinstance(row, dict) or not all(isinstance(v, dict) for v in row.values()):
            raise ConfigError(f"{TABLE_PATH}: stage {stage!r} must map each profile to a mapping of fields")
    return table


def stage_profiles(stage: str) -> dict[str, dict[str, Any]]:
    """The row of `stage`: {profile: {field: value}}. A stage missing from the table is an error."""
    table = settings_table()
    if stage not in table:
        raise ConfigError(f"{TABLE_PATH}: no stage {stage!r}; stages: {', '.join(table)}")
    return table[stage]


def stages_lacking(profile: str) -> list[str]:
    """Stages of the table that have no entry for `profile` (empty for every name in PROFILE_NAMES)."""
    return [stage for stage, row in settings_table().items() if profile not in row]


def missing_entries() -> list[tuple[str, str]]:
    """(stage, profile) pairs that PROFILE_NAMES promises and the table lacks."""
    return [(stage, profile) for profile in PROFILE_NAMES for stage in stages_lacking(profile)]


def stage_class(stage: str) -> type:
    import importlib

    module, _, name = STAGE_CLASSES[stage].partition(":")
    return getattr(importlib.import_module(module), name)
