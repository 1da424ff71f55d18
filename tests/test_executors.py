"""run_jobs through every executor that works without a cluster, including failing jobs."""

from __future__ import annotations

import math
import os

import pytest

from workbench.executors import (
    JobResult,
    SlurmOptions,
    resolve_max_workers,
    run_jobs,
)


def _cube_root_sum(x: float) -> float:
    """A small numeric job; raises on negative input so one job of a batch fails."""
    if x < 0:
        raise ValueError(f"negative input {x}")
    return sum(math.pow(x + k, 1.0 / 3.0) for k in range(1000))


def _pid_and_threads(_: int) -> tuple[int, str | None]:
    return os.getpid(), os.environ.get("OMP_NUM_THREADS")


def _die(x: int) -> int:
    if x == 1:
        os._exit(3)  # simulates a segfault / OOM kill: no Python exception reaches the pool
    return x * 10


JOBS = [1.0, 8.0, -1.0, 27.0]


def _check(results: list[JobResult]) -> None:
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.status for r in results] == ["ok", "ok", "failed", "ok"]
    for r, x in zip(results, JOBS):
        if x >= 0:
            assert r.value == pytest.approx(_cube_root_sum(x), rel=1e-12)
            assert r.error is None
            assert r.wall_time_s >= 0
    bad = results[2]
    assert bad.value is None and not bad.ok
    # The error carries the exception and the traceback text, down to the failing line.
    assert "ValueError: negative input -1.0" in bad.error
    assert "Traceback" in bad.error and "_cube_root_sum" in bad.error


def test_inline_runs_all_and_reports_failure() -> None:
    _check(run_jobs(_cube_root_sum, JOBS, executor="inline"))


def test_local_pool_two_workers() -> None:
    results = run_jobs(_cube_root_sum, JOBS, executor="local", max_workers=2)
    _check(results)
    info = run_jobs(_pid_and_threads, list(range(4)), executor="local", max_workers=2)
    pids = {r.value[0] for r in info}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # Workers share the cores: threads per worker = cpu_count // workers.
    expected = str(max(1, (os.cpu_count() or 1) // resolve_max_workers(4, 2)))
    assert {r.value[1] for r in info} == {expected}


def test_submitit_local(tmp_path) -> None:
    results = run_jobs(_cube_root_sum, JOBS, executor="submitit-local", max_workers=4,
                       folder=tmp_path / "submitit", slurm=SlurmOptions(timeout_min=2))
    _check(results)
    assert any((tmp_path / "submitit").iterdir())  # logs and pickles land in the folder


def test_local_worker_crash_fails_only_its_job() -> None:
    results = run_jobs(_die, [0, 1, 2, 3], executor="local", max_workers=2)
    assert [r.status for r in results] == ["ok", "failed", "ok", "ok"]
    assert [r.value for r in results] == [0, None, 20, 30]
    assert "worker process died" in results[1].error


def test_resolve_max_workers_bounds() -> None:
    cpus = os.cpu_count() or 1
    assert resolve_max_workers(100) == cpus
    assert resolve_max_workers(1, max_workers=8) == 1
    assert resolve_max_workers(100, max_workers=1) == 1
    # An absurd per-job memory estimate still runs one job at a time.
    assert resolve_max_workers(100, memory_per_job_gb=1e9) == 1
    assert resolve_max_workers(100, memory_per_job_gb=1e-6) == cpus
    with pytest.raises(ValueError, match="max_workers must be >= 1, got 0"):
        resolve_max_workers(3, max_workers=0)


def test_bad_arguments_fail_loudly(tmp_path) -> None:
    with pytest.raises(ValueError, match="'pool'"):
        run_jobs(_cube_root_sum, JOBS, executor="pool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs folder="):
        run_jobs(_cube_root_sum, JOBS, executor="submitit-local")
    with pytest.raises(ValueError, match="timeout_min must be > 0, got 0"):
        SlurmOptions(timeout_min=0)
    assert run_jobs(_cube_root_sum, [], executor="local") == []


def test_slurm_options_map_to_submitit_names() -> None:
    opts = SlurmOptions(partition="gpu", timeout_min=30, cpus_per_task=8, gpus_per_node=1,
                        mem_gb=64, array_parallelism=4, extra={"slurm_account": "tts"})
    params = opts.submitit_parameters()
    assert params == {
        "timeout_min": 30, "cpus_per_task": 8, "name": "workbench",
        "slurm_array_parallelism": 4, "gpus_per_node": 1, "slurm_partition": "gpu",
        "mem_gb": 64, "slurm_account": "tts",
    }
    # Every name is one submitit's Slurm executor accepts (checked without a cluster).
    from submitit.slurm.slurm import SlurmExecutor

    valid = SlurmExecutor._valid_parameters() | {"timeout_min", "cpus_per_task", "name",
                                                  "gpus_per_node", "mem_gb"}
    assert {k.removeprefix("slurm_") for k in params} <= valid
