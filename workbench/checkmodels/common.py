"""What the check models (`workbench-asr`, `workbench-speaker`) share: finding the model file to
load, a per-process cache of loaded models keyed by file and modification time, the checkpoint-or-
stop step end of their trainers, and their command line."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from workbench.errors import VerifierError
from workbench.training import StopAfter

MODEL_FILE = "model.pt"

M = TypeVar("M")


def resolve_model_path(model: str | Path | None, root: str | Path | None, *, verifier: str, run_kind: str,
                       trainer: str) -> Path:
    """The model file for `model`: a file as is, a run directory's `model.pt`, or (None) the newest
    finished `run_kind` run under the runs root that has one. `verifier` names the verifier in
    errors; `trainer` is the dotted name of the function that trains a model."""
    if model is None:
        from workbench.runs import find_runs, runs_root

        candidates = [r / MODEL_FILE for r in find_runs(run_kind, root=root, status="finished")
                      if (r / MODEL_FILE).exists()]
        if not candidates:
            raise VerifierError(
                f"{verifier}: no finished '{run_kind}' run with {MODEL_FILE} under "
                f"{runs_root(root) / run_kind}; train one with {trainer}(...) or pass model=<run dir or file>")
        # find_runs lists oldest first by run id (which starts with a timestamp): take the newest.
        return candidates[-1]
    path = Path(model)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise VerifierError(f"{verifier}: model {str(model)!r} is neither a model file nor a run "
                            f"directory holding {MODEL_FILE}")
    return path.resolve()


def checkpoint_or_stop(step: int, max_steps: int, checkpoint_every: int, stop: StopAfter,
                       save_checkpoint: Callable[[], None]) -> bool:
    """The end of a training step in both check-model trainers: save a checkpoint every
    `checkpoint_every` steps, at the end and where `stop` is due; True when the loop stops there
    (before its end, as `workbench.training` describes)."""
    due = stop.due(step, done=step >= max_steps)
    if step % checkpoint_every == 0 or step == max_steps or due:
        save_checkpoint()
    return due


class ModelCache(Generic[M]):
    """`cache(path)`: `load(path)`, kept for the last `maxsize` (file, modification time) pairs, so
    a model file rewritten in place is loaded again."""

    def __init__(self, load: Callable[[str], M], maxsize: int = 4) -> None:
        self._load = functools.lru_cache(maxsize=maxsize)(self._load_keyed)
        self._loader = load

    def _load_keyed(self, path: str, mtime_ns: int) -> M:  # noqa: ARG002 - mtime keys the cache
        return self._loader(path)

    def __call__(self, path: Path) -> M:
        return self._load(str(path), path.stat().st_mtime_ns)

    def cache_clear(self) -> None:
        self._load.cache_clear()


def training_main(argv: Sequence[str] | None, *, description: str | None, config_class: type,
                  train: Callable[..., Any], options: Mapping[str, str] | None = None) -> int:
    """The command line of a trained verifier's training function: `--profile`, `--run-id`,
    `--root`, `--no-reuse`, each of `options` (flag -> help; passed to `train` by its name), and
    config fields as key=value (value parsed as YAML). Prints the result as JSON."""
    import argparse
    import json

    from workbench.config import PROFILE_NAMES, ConfigError, for_profile, parse_overrides

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default="cpu", choices=PROFILE_NAMES)
    parser.add_argument("--run-id")
    parser.add_argument("--root", help="runs root (default $WORKBENCH_RUNS or ./runs)")
    extra = [parser.add_argument(flag, help=help_text).dest for flag, help_text in (options or {}).items()]
    parser.add_argument("--no-reuse", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config fields as key=value (value parsed as YAML)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides, option="override")
    except ConfigError as error:
        parser.error(str(error))
    config = for_profile(config_class, args.profile, **overrides)
    result = train(config, run_id=args.run_id, root=args.root, reuse=not args.no_reuse,
                   **{name: getattr(args, name) for name in extra})
    print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0
