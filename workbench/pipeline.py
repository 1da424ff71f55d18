"""The main job (`make demo`): every stage of the experiment for one profile, resumable.

Each stage is a notebook run; a stage whose notebook code, profile and config match a finished
run is reused, so a second `make demo` only reruns what changed; a change to the `workbench`
library's code reruns the stages too (it is part of the reuse key), and the log says why each
stage was reused or run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

from workbench.report.notebooks import NOTEBOOKS

C = TypeVar("C")


@dataclass(frozen=True)
class Stage:
    """A notebook, and the parameters it takes from earlier stages' summaries: ``{param: (stage,
    summary key)}``. Passing upstream outputs as explicit parameters puts them in the stage's
    config hash, so a stage reruns when what it reads has changed."""

    name: str
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)


STAGES: tuple[Stage, ...] = (
    Stage("00_data"),
    Stage("10_codec"),
    Stage("20_lm_scaling", {"tokens_dir": ("10_codec", "tokens_dir"), "codec": ("10_codec", "codec")}),
    Stage("25_alignment", {"tokens_dir": ("10_codec", "tokens_dir"), "codec": ("10_codec", "codec"),
                           "asr_model": ("10_codec", "asr_model"), "lm_path": ("20_lm_scaling", "best_lm")}),
    Stage("30_search", {"lm_path": ("20_lm_scaling", "best_lm"), "codec_path": ("10_codec", "codec"),
                        "corpus": ("00_data", "dataset")}),
)


# The settings rows (workbench/profiles.yaml) each notebook stage trains or runs with, beside its
# own config: what a plan shows.
STAGE_SETTINGS = {"00_data": ("data",), "10_codec": ("codec_study", "codec"), "20_lm_scaling": ("sweep", "lm"),
                  "25_alignment": ("alignment", "lm"),
                  "30_search": ("search", "synth", "asr", "speaker")}


def plan(profile: str, stages: tuple[Stage, ...] = STAGES) -> str:
    """What `run_pipeline(profile)` would run, stage by stage, with every setting it would use,
    built through the config classes (so an unknown profile or a bad entry fails here, on any
    machine, before anything is trained). Needs no GPU and starts nothing."""
    from workbench.config import for_profile, to_dict
    from workbench.settings import stage_class, stage_profiles

    lines = [f"pipeline plan for profile {profile!r}"]
    for number, stage in enumerate(stages, 1):
        inputs = ", ".join(f"{p} <- {src}.{key}" for p, (src, key) in stage.inputs.items()) or "none"
        lines.append(f"\nstage {number}/{len(stages)}: {stage.name} (inputs from earlier stages: {inputs})")
        for row in STAGE_SETTINGS.get(stage.name, ()):
            cls = stage_class(row)
            config = to_dict(for_profile(cls, profile))
            changed = stage_profiles(row)[profile]
            lines.append(f"  {row} ({cls.__name__}; {len(changed)} field(s) set by the profile):")
            for key, value in config.items():
                mark = "*" if key in changed else " "
                lines.append(f"   {mark} {key} = {value!r}")
    return "\n".join(lines)


@dataclass
class StageResult:
    name: str
    run_dir: Path
    reused: bool
    wall_s: float


@dataclass
class PipelineResult:
    profile: str
    stages: list[StageResult] = field(default_factory=list)
    index: Path | None = None

    @property
    def wall_s(self) -> float:
        return sum(s.wall_s for s in self.stages)


def run_pipeline(profile: str = "cpu", *, stages: tuple[Stage, ...] = STAGES, reuse: bool = True,
                 reports_dir: str | Path = "reports", root: str | Path | None = None) -> PipelineResult:
    from workbench.report.index import build_reports
    from workbench.report.runner import run_notebook

    result = PipelineResult(profile=profile)
    available = [s for s in stages if s.name in NOTEBOOKS]
    outputs: dict[str, dict] = {}
    for number, stage in enumerate(available, 1):
        params = {param: _upstream(outputs, stage, param, source, key)
                  for param, (source, key) in stage.inputs.items()}
        estimate = previous_wall_s(stage.name, profile, root)
        hint = f", last time {estimate / 60:.1f} min" if estimate else ""
        elapsed = sum(s.wall_s for s in result.stages)
        print(f"[pipeline {profile}] stage {number}/{len(available)}: {stage.name} "
              f"(elapsed {elapsed / 60:.1f} min{hint})", flush=True)
        start = time.perf_counter()
        run = run_notebook(stage.name, params, profile=profile, root=root, reuse=reuse)
        lost = _lost_outputs(run.run_dir, stage, available) if run.reused else None
        if lost:  # a finished run whose summary was lost or cut short: its outputs are unknown
            print(f"[pipeline {profile}] {stage.name}: the finished run {run.run_dir} {lost}; running the stage "
                  "again", flush=True)
            run = dataclasses.replace(run_notebook(stage.name, params, profile=profile, root=root, reuse=False),
                                      reason=f"the finished run {run.run_dir.name} {lost}")
        wall = time.perf_counter() - start
        summary_path = run.run_dir / "summary.json"
        outputs[stage.name] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        result.stages.append(StageResult(stage.name, run.run_dir, run.reused, wall))
        state = "reused finished run" if run.reused else f"done in {wall:.0f} s"
        print(f"[pipeline {profile}] {stage.name}: {state} ({'reused' if run.reused else 'ran'}: {run.reason}) "
              f"-> {run.run_dir}", flush=True)
    result.index = build_reports(reports_dir, root=root)
    print(f"[pipeline {profile}] reports: {result.index} ({result.wall_s:.0f} s in all)", flush=True)
    return result


def previous_wall_s(name: str, profile: str, root: str | Path | None = None) -> float | None:
    """Wall time of the latest finished run of notebook `name` on `profile` (the estimate shown)."""
    import datetime as dt

    from workbench.runs import find_runs

    for run_dir in reversed(find_runs("notebooks", root=root, status="finished")):
        meta = json.loads((run_dir / "meta.json").read_text())
        if meta.get("notebook") == name and meta.get("profile") == profile and meta.get("end_time"):
            start, end = (dt.datetime.fromisoformat(meta[k]) for k in ("start_time", "end_time"))
            return (end - start).total_seconds()
    return None


def _lost_outputs(run_dir: Path, stage: Stage, stages: list[Stage]) -> str | None:
    """Why a reused run cannot feed the later stages (no or unreadable summary.json, or a key they
    read missing from it); None when it can."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        return "has no summary.json"
    except (OSError, ValueError):
        return "has an unreadable summary.json"
    needed = {key for later in stages for source, key in later.inputs.values() if source == stage.name}
    missing = sorted(needed - set(summary)) if isinstance(summary, dict) else sorted(needed)
    return f"records no {', '.join(missing)} in summary.json" if missing else None


def _upstream(outputs: dict[str, dict], stage: Stage, param: str, source: str, key: str):
    if source not in outputs:
        raise RuntimeError(f"stage {stage.name} needs {param} from stage {source}, which has not run")
    if key not in outputs[source]:
        raise RuntimeError(f"stage {stage.name} needs {param} = {source}'s summary key {key!r}, "
                           f"but {source} recorded only {sorted(outputs[source])}")
    return outputs[source][key]


def latest_stage_output(stage: str, key: str, profile: str, root: str | Path | None = None) -> tuple[Any, Path] | None:
    """`key` of the summary of the newest finished run of notebook `stage` on `profile`, with that
    run's folder; None when no such run recorded it."""
    from workbench.runs import find_runs

    for run_dir in reversed(find_runs("notebooks", root=root, status="finished")):
        meta = json.loads((run_dir / "meta.json").read_text())
        summary_path = run_dir / "summary.json"
        if meta.get("notebook") == stage and meta.get("profile") == profile and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            if summary.get(key) not in (None, ""):
                return summary[key], run_dir
    return None


def fill_from_upstream(config: C, stage: str, profile: str, namespace: Mapping[str, Any],
                       root: str | Path | None = None) -> C:
    """For a notebook opened by hand (JupyterLab): each input the pipeline would pass this stage
    (`Stage.inputs`) that the notebook's parameters leave at None is taken from the newest finished
    run of the stage before on the same profile, and said in the output. Set parameters win; with
    no upstream run the profile's value stays."""
    spec = next((s for s in STAGES if s.name == stage), None)
    filled = {}
    for param, (source, key) in (spec.inputs.items() if spec else ()):
        if namespace.get(param) is not None:
            continue
        found = latest_stage_output(source, key, profile, root)
        if found is not None:
            filled[param] = found[0]
            print(f"{param} = {found[0]!r}  (not set: taken from {source} run {found[1].name}, the newest "
                  f"finished on profile {profile!r})")
    return dataclasses.replace(config, **filled) if filled else config
