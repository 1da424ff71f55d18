"""One writer per run directory: an advisory lock file naming its holder.

`RunLock(run_dir).acquire()` takes ``<run_dir>/.lock`` with ``flock`` (exclusive, no waiting) and
writes the holder's pid, host and start time into it; a second writer gets `RunLockedError`
naming the holder. The kernel drops a flock when its process ends, SIGKILL included, so a lock
whose holder died is free to take: the holder record it left behind is the sign, and
`taken_over` returns it so the caller can say whose stale lock it took. `release` empties the
record (the file stays: unlinking a lock file lets two processes lock two different inodes).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another process is writing this run directory."""


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    since: str

    def alive(self) -> bool | None:
        """Whether the holder process still exists; None when it runs on another host."""
        return process_alive(self.pid) if self.host == socket.gethostname() else None

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(fd: int) -> LockHolder | None:
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        return LockHolder(**json.loads(raw))
    except (ValueError, TypeError):
        return LockHolder(pid=-1, host="unknown", since="unknown")


class RunLock:
    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self.taken_over: LockHolder | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            hint = ""
            if holder is not None and holder.alive() is False:
                hint = f" (pid {holder.pid} has ended; a process it started still holds the lock)"
            raise RunLockedError(
                f"{self.path.parent}: in use by {holder or 'another process'}{hint}; wait for it to end, "
                "or use another run id") from None
        except OSError as error:  # a filesystem without flock (Lustre mounted without it): run unlocked
            import sys

            print(f"[runs] {self.path.parent}: cannot lock ({error.strerror}); a second writer of this run "
                  "will not be detected", file=sys.stderr, flush=True)
        except BaseException:
            os.close(fd)
            raise
        # A record left in a lock nobody held: its writer ended without releasing (killed).
        self.taken_over = _read_holder(fd)
        me = LockHolder(pid=os.getpid(), host=socket.gethostname(),
                        since=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:  # a full or read-only disk must not keep the lock held
            pass
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["RunLock", "RunLockedError", "LockHolder", "LOCK_NAME", "process_alive"]
