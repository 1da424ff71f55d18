"""The main job (`make demo`): every stage of the experiment for one profile, resumable.

Each stage is a notebook run; a stage whose notebook code, profile and config match a finished
run is reused, so a second `make demo` only reruns what changed. Stages are listed in pipeline
order; later issues add codec, LM-scaling and search stages here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from workbench.report.notebooks import NOTEBOOKS

STAGES: tuple[str, ...] = ("00_data",)


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


def run_pipeline(profile: str = "cpu", *, stages: tuple[str, ...] = STAGES, reuse: bool = True,
                 reports_dir: str | Path = "reports", root: str | Path | None = None) -> PipelineResult:
    from workbench.report.index import build_reports
    from workbench.report.runner import run_notebook

    result = PipelineResult(profile=profile)
    available = [s for s in stages if s in NOTEBOOKS]
    for number, name in enumerate(available, 1):
        print(f"[pipeline {profile}] stage {number}/{len(available)}: {name}", flush=True)
        start = time.perf_counter()
        run = run_notebook(name, profile=profile, root=root, reuse=reuse)
        wall = time.perf_counter() - start
        result.stages.append(StageResult(name, run.run_dir, run.reused, wall))
        state = "reused finished run" if run.reused else f"done in {wall:.0f} s"
        print(f"[pipeline {profile}] {name}: {state} -> {run.run_dir}", flush=True)
    result.index = build_reports(reports_dir, root=root)
    print(f"[pipeline {profile}] reports: {result.index} ({result.wall_s:.0f} s in all)", flush=True)
    return result
