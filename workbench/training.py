"""What every trainer shares and nothing model-specific: the learning-rate schedule, the saved
random state and the `stop_after_steps` rule. Each model keeps its own visible loop
(`lm/train.py`, `codec/train.py`, `checkmodels/asr_train.py`, `checkmodels/speaker_train.py`); the
pieces below were written in each of them before, and a fix to one had to be made four times.

Stopping early (`stop_after_steps`, a simulated preemption for resume tests and budgeted calls),
the same in all four trainers: after the first optimizer step at or past `stop_after_steps`, and
only when that step is not already the run's own end, the trainer saves its checkpoint, writes its
summary with ``completed: false``, leaves the run marked ``interrupted`` (resumable: the same call
with the same run id continues from the checkpoint; never ``finished``, so nothing reuses it as a
done run), skips what only a finished run makes (the final model file, the final evaluation) and
returns its usual typed result with ``completed=False``. Nothing is raised."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Protocol


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier at `step` (0-based): linear warm-up to 1 over `warmup_steps`, cosine from 1 to
    `min_ratio` at `total_steps`, flat at `min_ratio` after it (a run that overshoots its length
    keeps the final LR rather than rising again). A function of the step alone, never of time."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class WarmupCosine:
    """`warmup_cosine` as an object `torch.optim.lr_scheduler.LambdaLR` can hold (and pickle)."""

    warmup_steps: int
    total_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.warmup_steps, self.total_steps, self.min_ratio)


def rng_state() -> dict[str, Any]:
    """Every random generator a training step draws from: Python, NumPy, torch (and CUDA's)."""
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved (a checkpoint written without CUDA restores the rest)."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _StoppableRun(Protocol):
    def stop_early(self, reason: str) -> None: ...


@dataclass(frozen=True)
class StopAfter:
    """The `stop_after_steps` argument of a trainer (None: run to the end), checked once per step."""

    steps: int | None

    def __post_init__(self) -> None:
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise ValueError(f"stop_after_steps={self.steps!r}: must be a whole number of steps >= 1, or None")

    def due(self, step: int, *, done: bool) -> bool:
        """Stop now, after optimizer step `step`? Never when that step ends the run anyway (`done`)."""
        return self.steps is not None and step >= self.steps and not done

    def leave_resumable(self, run: _StoppableRun | None) -> None:
        """Mark `run` (None on a process that does not own it) to end ``interrupted``, not finished."""
        if run is not None:
            run.stop_early(f"stop_after_steps={self.steps} reached")
