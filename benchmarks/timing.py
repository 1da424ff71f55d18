"""Timing shared by the benchmark scripts: the fastest of several runs, the usual estimate of
a piece of work's cost on a machine that other processes also load (noise only adds time)."""

from __future__ import annotations

import math
import time
from typing import Any, Callable


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Smallest wall time in seconds of `repeats` calls of `fn`."""
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
