"""What the command line prints for an error a user can act on: one line naming the file or value
and what to do, and the exit status. Anything else is a bug and keeps its traceback.

A run that ended by an error keeps the full traceback in its ``error.log`` (`workbench.runs`); the
line printed here points at it. ``WORKBENCH_TRACEBACK=1`` prints the traceback after the line too.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
EXIT_TERMINATED = 143  # 128 + SIGTERM

_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _where(error: BaseException) -> str:
    run_dir, log = getattr(error, "run_dir", None), getattr(error, "run_log", None)
    if log:
        return f" (traceback in {log})"
    if run_dir:
        return f" (run {run_dir})"
    return ""


def _os_error(error: OSError) -> str:
    target = error.filename or ""
    if error.errno == errno.EFBIG:
        return (f"file size limit reached writing {target or 'a file'} (see `ulimit -f`); raise the limit, "
                "then run the same command again: a run with the same --run-id resumes from its last checkpoint")
    if error.errno in _FULL:
        return (f"no space left writing {target or 'a file'}; free some space (or point WORKBENCH_RUNS / "
                "WORKBENCH_DATA_DIR at a larger disk), then run the same command again: a run with the same "
                "--run-id resumes from its last checkpoint")
    if error.errno in _NOT_WRITABLE:
        return (f"cannot write {target or 'a file'} ({error.strerror}); choose a writable folder: "
                "WORKBENCH_RUNS for runs, --data-dir or WORKBENCH_DATA_DIR for data")
    if isinstance(error, FileNotFoundError) and not error.filename:
        return str(error)  # the workbench's own messages say where they looked
    if error.strerror and target:
        return f"{target}: {error.strerror}"
    return str(error)


def describe(error: BaseException) -> tuple[str, int] | None:
    """(the line to print, exit status) for an error a user can act on; None for anything else."""
    from workbench.config import ConfigError
    from workbench.run_lock import RunLockedError
    from workbench.runs import _Terminated

    if isinstance(error, (KeyboardInterrupt, _Terminated)):
        terminated = isinstance(error, _Terminated)
        run_dir = getattr(error, "run_dir", None)
        if run_dir is not None:
            resume = f"; run {run_dir} is marked interrupted: the same command with --run-id {Path(run_dir).name} resumes it"
        else:
            resume = ""
        return (f"stopped by {'SIGTERM' if terminated else 'Ctrl-C'}{resume}",
                EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    if isinstance(error, OSError):
        return f"error: {_os_error(error)}{_where(error)}", EXIT_USER_ERROR
    if isinstance(error, KeyError):
        message = error.args[0] if error.args else error
        return f"error: {message}{_where(error)}", EXIT_USER_ERROR
    if isinstance(error, (ConfigError, ValueError, RunLockedError)):
        text = str(error)
        return f"error: {text}{_where(error)}", EXIT_USER_ERROR
    return None


def print_described(error: BaseException) -> int | None:
    """Print `describe(error)` on stderr and return its exit status; None when it is a bug."""
    import sys

    described = describe(error)
    if described is None:
        return None
    line, status = described
    print(line, file=sys.stderr, flush=True)
    if os.environ.get("WORKBENCH_TRACEBACK"):
        import traceback

        traceback.print_exception(error)
    return status


__all__ = ["describe", "print_described", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]
