"""Run a list of independent jobs in-process, on a local process pool, or on Slurm via submitit.

One entry point, `run_jobs(fn, jobs, executor=...)`, used by the LM sweep and by batches of
notebook runs. `fn` must be a picklable top-level function taking one argument (bundle several
arguments in a dataclass). Every job yields a `JobResult`; a job that raises is reported
``failed`` with its traceback text and never stops the other jobs.

Executors:
- ``inline``: in this process, one after another (debugging, pdb, tests).
- ``local``: a `concurrent.futures.ProcessPoolExecutor` with a *spawn* context (fork after torch
  or CUDA initialisation deadlocks), workers bounded by the CPU count and by available memory.
- ``slurm``: submitit's AutoExecutor, one array task per job (`map_array`).
- ``submitit-local``: submitit's LocalExecutor, the same code path as Slurm without a cluster.

Importing this module is cheap: submitit is imported only when a submitit executor is used.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Literal, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

ExecutorName = Literal["inline", "local", "slurm", "submitit-local"]
EXECUTOR_NAMES: tuple[str, ...] = ("inline", "local", "slurm", "submitit-local")

# Variables read by OpenMP / BLAS / torch at import time; set in workers so that N workers on N
# cores do not each start N threads (oversubscription makes a 2-core sweep several times slower).
_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclasses.dataclass(frozen=True)
class JobResult(Generic[R]):
    """Outcome of one job: `index` is its position in the `jobs` list.

    status ``ok``: `value` is fn's return value and `error` is None. status ``failed``: `value`
    is None and `error` holds the exception type, message and traceback text. `wall_time_s` is
    measured around the call to fn inside the worker (NaN when the worker died before reporting).
    """

    index: int
    status: Literal["ok", "failed"]
    value: R | None
    error: str | None
    wall_time_s: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """Resources of each Slurm array task (submitit parameter names, units in the field names).

    `extra` is passed verbatim to `update_parameters` for anything not listed here (e.g.
    ``{"slurm_account": "abc", "slurm_qos": "high"}``). `array_parallelism` caps how many array
    tasks run at once.
    """

    partition: str | None = None
    timeout_min: int = 60
    cpus_per_task: int = 2
    gpus_per_node: int = 0
    mem_gb: float | None = None
    array_parallelism: int = 64
    job_name: str = "workbench"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timeout_min <= 0:
            raise ValueError(f"timeout_min must be > 0, got {self.timeout_min!r}")
        if self.cpus_per_task <= 0:
            raise ValueError(f"cpus_per_task must be > 0, got {self.cpus_per_task!r}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be >= 0, got {self.gpus_per_node!r}")
        if self.array_parallelism <= 0:
            raise ValueError(f"array_parallelism must be > 0, got {self.array_parallelism!r}")

    def submitit_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "timeout_min": self.timeout_min,
            "cpus_per_task": self.cpus_per_task,
            "name": self.job_name,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.partition is not None:
            params["slurm_partition"] = self.partition
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        params.update(self.extra)
        return params


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """What a worker sends back: never an exception, so one bad job cannot break a pool."""

    ok: bool
    value: Any
    error: str | None
    wall_time_s: float


class _CapturingCall:
    """Picklable wrapper calling fn(job) and turning any exception into an `_Outcome`.

    A class at module level (not a closure) so that spawn workers and submitit can pickle it by
    reference; `fn` travels with it.
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, job: Any) -> _Outcome:
        start = time.perf_counter()
        try:
            value = self.fn(job)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, not swallowed
            if isinstance(exc, KeyboardInterrupt):
                raise
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            return _Outcome(False, None, text, time.perf_counter() - start)
        return _Outcome(True, value, None, time.perf_counter() - start)


def _limit_threads(n_threads: int) -> None:
    for var in _THREAD_ENV_VARS:
        os.environ[var] = str(n_threads)
    # torch reads OMP_NUM_THREADS only at import; if it is already loaded, set it directly.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n_threads)


def _worker_init(n_threads: int) -> None:
    # Runs before the worker unpickles any job, hence before numpy/torch import in the worker.
    _limit_threads(n_threads)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None when it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def resolve_max_workers(
    n_jobs: int,
    max_workers: int | None = None,
    memory_per_job_gb: float | None = None,
) -> int:
    """Workers for the local pool: min(requested or CPU count, CPU count, jobs, memory bound).

    The memory bound is floor(available memory / `memory_per_job_gb`) when an estimate is given;
    the result is at least 1 (one job always runs, even when the estimate says it will not fit).
    """
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
    if memory_per_job_gb is not None and memory_per_job_gb <= 0:
        raise ValueError(f"memory_per_job_gb must be > 0, got {memory_per_job_gb!r}")
    cpus = os.cpu_count() or 1
    workers = min(cpus, max_workers if max_workers is not None else cpus, max(1, n_jobs))
    if memory_per_job_gb is not None:
        avail = available_memory_bytes()
        if avail is not None:
            workers = min(workers, int(avail // (memory_per_job_gb * 1024**3)))
    return max(1, workers)


def _to_result(index: int, outcome: _Outcome) -> JobResult:
    return JobResult(
        index=index,
        status="ok" if outcome.ok else "failed",
        value=outcome.value,
        error=outcome.error,
        wall_time_s=outcome.wall_time_s,
    )


def _failed(index: int, error: str, wall_time_s: float = float("nan")) -> JobResult:
    return JobResult(index=index, status="failed", value=None, error=error, wall_time_s=wall_time_s)


def run_jobs(
    fn: Callable[[T], R],
    jobs: Sequence[T],
    *,
    executor: ExecutorName = "local",
    max_workers: int | None = None,
    memory_per_job_gb: float | None = None,
    threads_per_worker: int | None = None,
    slurm: SlurmOptions | None = None,
    folder: str | os.PathLike[str] | None = None,
) -> list[JobResult[R]]:
    """Run ``fn(job)`` for every job; return one `JobResult` per job, in the order of `jobs`.

    - `fn`: picklable top-level function of one argument (except for ``inline``).
    - `executor`: ``inline`` | ``local`` | ``slurm`` | ``submitit-local`` (see module docstring).
    - `max_workers`, `memory_per_job_gb`: bound the concurrency of ``local`` and
      ``submitit-local`` (see `resolve_max_workers`).
    - `threads_per_worker`: OMP/MKL/OpenBLAS/torch threads in each ``local`` worker; default
      CPU count // workers, so workers share the cores instead of oversubscribing them.
    - `slurm`: resources of each array task (``slurm``; timeout also used by ``submitit-local``).
    - `folder`: submitit's folder for pickles and logs (required by the submitit executors).

    A job that raises is ``failed`` with its traceback. With ``local``, a worker process that dies
    (segfault, out-of-memory kill) breaks the pool; the jobs it took down are rerun one at a time
    and only the one that kills its worker again is ``failed``.
    """
    if executor not in EXECUTOR_NAMES:
        raise ValueError(f"executor must be one of {EXECUTOR_NAMES}, got {executor!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    job_list = list(jobs)
    if not job_list:
        return []
    if executor == "inline":
        call = _CapturingCall(fn)
        return [_to_result(i, call(job)) for i, job in enumerate(job_list)]
    if executor == "local":
        return _run_local(fn, job_list, max_workers, memory_per_job_gb, threads_per_worker)
    if folder is None:
        raise ValueError(f"executor={executor!r} needs folder= for submitit's pickles and logs")
    return _run_submitit(fn, job_list, executor, Path(folder), slurm or SlurmOptions(),
                         max_workers, memory_per_job_gb)


def _run_local(
    fn: Callable[[Any], Any],
    jobs: list[Any],
    max_workers: int | None,
    memory_per_job_gb: float | None,
    threads_per_worker: int | None,
) -> list[JobResult]:
    workers = resolve_max_workers(len(jobs), max_workers, memory_per_job_gb)
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    call = _CapturingCall(fn)
    results: dict[int, JobResult] = {}
    crashed = _pool_pass(call, jobs, list(range(len(jobs))), workers, threads, results)
    # A dead worker breaks the whole pool and every unfinished future with it, so the pool cannot
    # say which job killed it. Rerun the lost jobs one at a time, each in a fresh single-worker
    # pool: only the job that really kills its worker fails, and if the cause was memory, one job
    # at a time is also the likeliest way to get the others through.
    for index in crashed:
        again = _pool_pass(call, jobs, [index], 1, threads, results)
        for j in again:
            results[j] = _failed(j, "worker process died while running this job "
                                    "(crash or out-of-memory kill); no Python exception was raised")
    return [results[i] for i in range(len(jobs))]


def _pool_pass(
    call: _CapturingCall,
    jobs: list[Any],
    indices: list[int],
    workers: int,
    threads: int,
    results: dict[int, JobResult],
) -> list[int]:
    """Run `indices` on one spawn pool, filling `results`; return the indices lost to a broken
    pool."""
    broken: list[int] = []
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                initargs=(threads,)) as pool:
        futures = {pool.submit(call, jobs[i]): i for i in indices}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                results[i] = _to_result(i, fut.result())
            except cf.process.BrokenProcessPool:
                broken.append(i)
            except Exception as exc:  # noqa: BLE001 - e.g. the job argument does not pickle
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                results[i] = _failed(i, text)
    return sorted(broken)


@contextlib.contextmanager
def _sys_path_in_environment() -> Iterator[None]:
    """Export this process's sys.path as PYTHONPATH while submitit starts its jobs.

    submitit pickles `fn` by reference; the job's fresh interpreter must be able to import fn's
    module (e.g. a script or test directory that is on sys.path here but not installed). This is
    what multiprocessing's spawn does for the local pool. Slurm's sbatch exports the submitting
    environment by default, so the same holds on a cluster with a shared file system.
    """
    old = os.environ.get("PYTHONPATH")
    # Leave out the interpreter's own directories (stdlib, site-packages): the job's interpreter
    # has them already, and putting them on PYTHONPATH would reorder them before the stdlib.
    prefixes = {os.path.abspath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    entries = [os.path.abspath(p or os.curdir) for p in sys.path]
    entries = [p for p in dict.fromkeys(entries)
               if os.path.isdir(p) and not any((p + os.sep).startswith(x) for x in prefixes)]
    if old:
        entries = [*old.split(os.pathsep), *(p for p in entries if p not in old.split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(entries)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _run_submitit(
    fn: Callable[[Any], Any],
    jobs: list[Any],
    executor: str,
    folder: Path,
    slurm: SlurmOptions,
    max_workers: int | None,
    memory_per_job_gb: float | None,
) -> list[JobResult]:
    import submitit

    call = _CapturingCall(fn)
    folder.mkdir(parents=True, exist_ok=True)
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**slurm.submitit_parameters())
        # Slurm throttles with array_parallelism; submit everything as one array.
        waves = [list(range(len(jobs)))]
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=slurm.timeout_min)
        # LocalExecutor starts every submitted job at once; submit in waves of `workers`.
        workers = resolve_max_workers(len(jobs), max_workers, memory_per_job_gb)
        waves = [list(range(lo, min(lo + workers, len(jobs))))
                 for lo in range(0, len(jobs), workers)]
    results: list[JobResult] = []
    for wave in waves:
        with _sys_path_in_environment():
            submitted = ex.map_array(call, [jobs[i] for i in wave])
        for i, job in zip(wave, submitted):
            try:
                results.append(_to_result(i, job.result()))
            except Exception as exc:  # noqa: BLE001 - the task died outside fn (timeout, kill)
                results.append(_failed(i, f"{type(exc).__name__}: {exc} (submitit job "
                                          f"{job.job_id}, logs in {folder})"))
    return results
