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
returns its usual typed result with ``completed=False``. Nothing is raised.

Early stopping on validation loss (`EarlyStopping`, the LM's ``early_stop_patience``) is the other
kind of stop and ends the opposite way: the run is done. The trainer keeps the best evaluation's
weights as its model, saves a checkpoint, marks the run ``finished`` with ``completed: true`` (a
rerun reuses it) and records where the best was. Its state (best loss and step, evaluations since
the best, whether it has stopped) is part of every checkpoint, so a resumed run stops where an
uninterrupted one does."""

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


@dataclass
class EarlyStopping:
    """Patience on a validation loss, checked once per evaluation.

    An evaluation improves when its loss is below the best so far by at least `min_delta` (the
    first finite loss always does); after `patience` evaluations in a row without one, `stopped`
    turns true and stays so. `patience` 0 is off: nothing improves, nothing stops. A NaN loss
    never improves (a diverged run stops rather than keeping NaN as its best)."""

    patience: int
    min_delta: float = 0.0
    best_loss: float = math.inf
    best_step: int = -1  # -1: no evaluation improved yet
    evals_since_best: int = 0
    stopped: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"early stopping patience={self.patience!r}: must be a whole number of evaluations >= 0")
        if not self.min_delta >= 0.0:
            raise ValueError(f"early stopping min_delta={self.min_delta!r}: must be >= 0")

    @property
    def enabled(self) -> bool:
        return self.patience > 0

    def update(self, loss: float, step: int) -> bool:
        """Record the evaluation at `step`; True when it is the new best (keep its weights)."""
        if not self.enabled or self.stopped:
            return False
        if loss < self.best_loss - self.min_delta:  # inf - delta is inf: any finite first loss improves
            self.best_loss, self.best_step, self.evals_since_best = float(loss), int(step), 0
            return True
        self.evals_since_best += 1
        self.stopped = self.evals_since_best >= self.patience
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_step": self.best_step,
                "evals_since_best": self.evals_since_best, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state["best_loss"])
        self.best_step = int(state["best_step"])
        self.evals_since_best = int(state["evals_since_best"])
        self.stopped = bool(state["stopped"])
