"""Scaling-law fits: plain arrays in, frozen dataclasses out, no I/O.

Conventions (units in names, one name per concept):
- ``n_params``: model parameters N (non-embedding or total, the caller decides; be consistent).
- ``n_tokens``: training tokens D.
- ``compute``: training FLOPs C. The Chinchilla closed form assumes C = 6 N D; the power law and
  the frontier take whatever FLOP accounting the caller uses.
- ``loss``: validation loss (nats per token), strictly positive.

Fits follow Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models"):
- Approach 3 (`fit_chinchilla`): L(N, D) = E + A N^-alpha + B D^-beta, fitted as
  log L_hat = LSE(a - alpha log N, b - beta log D, e) with a Huber loss (delta 1e-3) on log-loss
  residuals, L-BFGS from a grid of initialisations, best optimum kept.
- Approach 2 (`fit_isoflop`): per FLOP budget, a parabola of loss vs log N; its minimum gives
  N_opt(C); power laws N_opt ∝ C^a and D_opt ∝ C^b across budgets.
- The compute frontier L(C) = E + A C^-alpha (`fit_power_law` on `compute_frontier`).

Speed: a first version with scipy's numerical gradients took about 8 minutes for the full
4,500-start grid on 240 points. Here the objective and its gradient are analytic, all grid starts
are evaluated in one vectorised pass to rank them, and L-BFGS runs only from the best few;
bootstrap resamples are warm-started from the full-data optimum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from typing import Callable, Iterator, NamedTuple, ParamSpec, Sequence, TypeVar

import numpy as np
from numpy.typing import ArrayLike

CHINCHILLA_PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
POWER_LAW_PARAM_NAMES = ("E", "A", "alpha")

# Hoffmann et al. 2022, Appendix D.2: the initialisation grid of Approach 3 (5*5*5*6*6 = 4,500).
HOFFMANN_GRID_ALPHA = (0.0, 0.5, 1.0, 1.5, 2.0)
HOFFMANN_GRID_BETA = (0.0, 0.5, 1.0, 1.5, 2.0)
HOFFMANN_GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
HOFFMANN_GRID_A = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
HOFFMANN_GRID_B = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)

# L-BFGS tolerances tighter than scipy's defaults: the Huber objective on log residuals is small
# in absolute terms (residuals ~1e-2), and the default ftol (relative to max(|f|, 1)) would stop
# long before the exponents settle.
_LBFGS_OPTIONS = {"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-10, "maxcor": 20}

# Keep the (starts x points) work arrays of the vectorised grid pass below ~16 MB each.
_GRID_CHUNK_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------------------------
# Input checking and small numeric helpers
# --------------------------------------------------------------------------------------------

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Limit BLAS/OpenMP to one thread while fitting.

    scipy's L-BFGS-B calls BLAS/LAPACK on tiny matrices thousands of times. With OpenBLAS's
    default thread pool this was measured 20-40x slower on the shared 2-core machine when other
    processes were busy (a 240-point fit: 12 s instead of 0.5 s), all of it thread hand-off.
    threadpoolctl is used when importable (it comes with scikit-learn); otherwise no-op.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _blas_single_thread(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _single_threaded_blas():
            return fn(*args, **kwargs)

    return wrapper



def _positive_1d(name: str, values: ArrayLike) -> np.ndarray:
    """Return `values` as a 1-D float array, or raise ValueError naming the bad entry."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite and > 0; {name}[{i}] = {float(arr[i])!r}")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def _huber(residual: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative, elementwise: quadratic inside |r| <= delta, linear outside."""
    abs_r = np.abs(residual)
    quad = abs_r <= delta
    value = np.where(quad, 0.5 * residual**2, delta * (abs_r - 0.5 * delta))
    deriv = np.clip(residual, -delta, delta)
    return value, deriv


def _logsumexp3(x1: np.ndarray, x2: np.ndarray, x3: np.ndarray) -> tuple[np.ndarray, ...]:
    """Stable log(e^x1 + e^x2 + e^x3) and the softmax weights (d LSE / d x_k)."""
    m = np.maximum(np.maximum(x1, x2), x3)
    e1, e2, e3 = np.exp(x1 - m), np.exp(x2 - m), np.exp(x3 - m)
    s = e1 + e2 + e3
    return m + np.log(s), e1 / s, e2 / s, e3 / s


def _logsumexp2(x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, ...]:
    m = np.maximum(x1, x2)
    e1, e2 = np.exp(x1 - m), np.exp(x2 - m)
    s = e1 + e2
    return m + np.log(s), e1 / s, e2 / s


def _percentile_intervals(
    samples: np.ndarray, names: Sequence[str], level: float
) -> dict[str, tuple[float, float]]:
    lo_q, hi_q = 50.0 * (1.0 - level), 50.0 * (1.0 + level)
    with np.errstate(invalid="ignore"):  # an infinite coefficient (runaway fit) gives a NaN bound, flagged later
        lo = np.percentile(samples, lo_q, axis=0)
        hi = np.percentile(samples, hi_q, axis=0)
    return {n: (float(lo[i]), float(hi[i])) for i, n in enumerate(names)}


def _minimize_lbfgs(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]], theta0: np.ndarray
) -> tuple[np.ndarray, float, bool]:
    # Imported here so that importing this module stays cheap (scipy.optimize is ~0.3 s).
    from scipy.optimize import minimize

    with np.errstate(over="ignore", invalid="ignore"):
        res = minimize(objective, theta0, jac=True, method="L-BFGS-B", options=_LBFGS_OPTIONS)
    return np.asarray(res.x, dtype=float), float(res.fun), bool(res.success)


@dataclasses.dataclass(frozen=True, eq=False)
class BootstrapSummary:
    """Bootstrap of a fit: resample runs with replacement, refit, keep every refit's parameters.

    `samples` has one row per resample and one column per name in `param_names` (same order);
    `intervals[name]` is the central percentile interval at `level` (e.g. 0.95 -> 2.5 %, 97.5 %).
    """

    param_names: tuple[str, ...]
    samples: np.ndarray
    intervals: dict[str, tuple[float, float]]
    level: float
    seed: int

    @property
    def n_resamples(self) -> int:
        return int(self.samples.shape[0])


class Allocation(NamedTuple):
    """Compute-optimal model size and token count for a FLOP budget (arrays broadcast like C).

    A NamedTuple so that ``n_opt, d_opt = fit.optimal_allocation(c)`` reads like the paper while
    the fields keep their names and units.
    """

    n_params: np.ndarray
    n_tokens: np.ndarray


class Band(NamedTuple):
    """Pointwise lower / upper bound of a bootstrap band (same shape as the x values)."""

    low: np.ndarray
    high: np.ndarray


# --------------------------------------------------------------------------------------------
# Power law L(C) = E + A C^-alpha
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class PowerLawFit:
    """L(C) = E + A * C^-alpha, fitted with a Huber loss on log-loss residuals.

    `objective` is the mean Huber loss at the optimum; `bootstrap` is set when `n_bootstrap > 0`.
    """

    E: float
    A: float
    alpha: float
    objective: float
    n_points: int
    delta: float
    bootstrap: BootstrapSummary | None = None

    def predict(self, compute: ArrayLike) -> np.ndarray:
        """Predicted loss at `compute` (FLOPs), same shape as the input."""
        c = np.asarray(compute, dtype=float)
        # exp(log A - alpha log C) instead of A * C**-alpha: A can be huge (C ~ 1e20).
        return self.E + np.exp(np.log(self.A) - self.alpha * np.log(c))

    def sample_fits(self) -> list["PowerLawFit"]:
        """One PowerLawFit per bootstrap resample (empty list without a bootstrap)."""
        if self.bootstrap is None:
            return []
        return [
            PowerLawFit(E=float(s[0]), A=float(s[1]), alpha=float(s[2]), objective=float("nan"),
                        n_points=self.n_points, delta=self.delta)
            for s in self.bootstrap.samples
        ]

    def predict_band(self, compute: ArrayLike, level: float | None = None) -> Band:
        """Pointwise percentile band of the bootstrap predictions at `compute`."""
        return _band([f.predict(compute) for f in self.sample_fits()], self.bootstrap, level)


def _band(preds: list[np.ndarray], boot: BootstrapSummary | None, level: float | None) -> Band:
    if boot is None or not preds:
        raise ValueError("this fit has no bootstrap; refit with n_bootstrap > 0")
    lev = boot.level if level is None else level
    if not 0.0 < lev < 1.0:
        raise ValueError(f"level must be in (0, 1), got {lev!r}")
    stacked = np.stack(preds)
    return Band(
        low=np.percentile(stacked, 50.0 * (1.0 - lev), axis=0),
        high=np.percentile(stacked, 50.0 * (1.0 + lev), axis=0),
    )


def _power_law_objective(
    theta: np.ndarray, x: np.ndarray, log_loss: np.ndarray, delta: float, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean Huber of log residuals for theta = (a, e, alpha), x = log C - log C_ref.

    log L_hat = LSE(a - alpha x, e); gradient from the softmax weights of the LSE.
    """
    a, e, alpha = theta
    pred, w1, w2 = _logsumexp2(a - alpha * x, np.full_like(x, e))
    value, dh = _huber(pred - log_loss, delta)
    dh = dh * weights
    total = weights.sum()
    grad = np.array([np.sum(dh * w1), np.sum(dh * w2), -np.sum(dh * w1 * x)]) / total
    return float(np.sum(value * weights) / total), grad


def _power_law_starts(x: np.ndarray, loss: np.ndarray, delta: float) -> list[np.ndarray]:
    """Initialisations: for a ladder of E below min(loss), log(L - E) is linear in log C, so a
    least-squares line gives (a, alpha); rank the ladder by the Huber objective."""
    weights = np.ones_like(x)
    log_loss = np.log(loss)
    floor = float(loss.min())
    candidates = []
    for frac in np.concatenate([[0.0], np.linspace(0.05, 0.995, 40)]):
        e_val = frac * floor
        y = np.log(loss - e_val)
        if np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
        else:
            slope, intercept = 0.0, float(np.mean(y))
        # E = 0 has no log; start just above it and let L-BFGS move.
        e_log = np.log(max(e_val, 1e-6 * floor))
        theta = np.array([intercept, e_log, -slope])
        value, _ = _power_law_objective(theta, x, log_loss, delta, weights)
        candidates.append((value, theta))
    candidates.sort(key=lambda t: t[0])
    return [t for _, t in candidates[:5]]


def _fit_power_law_core(
    x: np.ndarray, log_loss: np.ndarray, delta: float, starts: list[np.ndarray],
    weights: np.ndarray,
) -> tuple[np.ndarray, float]:
    best_theta, best_val = None, np.inf
    for theta0 in starts:
        theta, val, _ = _minimize_lbfgs(
            lambda t: _power_law_objective(t, x, log_loss, delta, weights), theta0
        )
        if np.all(np.isfinite(theta)) and val < best_val:
            best_theta, best_val = theta, val
    if best_theta is None:
        raise RuntimeError("power-law fit failed from every initialisation (non-finite optimum)")
    return best_theta, best_val


@_blas_single_thread
def fit_power_law(
    compute: ArrayLike,
    loss: ArrayLike,
    *,
    delta: float = 1e-3,
    n_bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> PowerLawFit:
    """Fit L(C) = E + A C^-alpha to (compute, loss) points.

    Fitted in log space as log L_hat = LSE(a - alpha log(C / C_ref), e) with C_ref the geometric
    mean of `compute`, so that the parameters stay O(1) for C anywhere in 1e9..1e20; A is then
    e^a C_ref^alpha. Huber loss (`delta`) on log residuals, L-BFGS from the best few of a ladder
    of E-initialisations. Needs at least 3 points with at least 2 distinct compute values.
    With `n_bootstrap` > 0, points are resampled with replacement and refitted (warm-started
    from the full-data optimum); percentile intervals at `level` go into `bootstrap`.
    """
    c = _positive_1d("compute", compute)
    y = _positive_1d("loss", loss)
    n = _same_length(compute=c, loss=y)
    if n < 3 or np.unique(c).size < 2:
        raise ValueError(
            f"fit_power_law needs >= 3 points over >= 2 distinct compute values, got {n} points "
            f"and {np.unique(c).size} distinct compute values"
        )
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta!r}")
    log_c_ref = float(np.mean(np.log(c)))
    x = np.log(c) - log_c_ref
    log_loss = np.log(y)
    ones = np.ones(n)
    theta, val = _fit_power_law_core(x, log_loss, delta, _power_law_starts(x, y, delta), ones)

    def to_params(t: np.ndarray) -> tuple[float, float, float]:
        a, e, alpha = (float(v) for v in t)
        return float(np.exp(e)), float(np.exp(a + alpha * log_c_ref)), alpha

    E, A, alpha = to_params(theta)
    boot = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(n_bootstrap):
            # Resampling = integer weights; same objective, no copy of the data.
            w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
            t, _ = _fit_power_law_core(x, log_loss, delta, [theta], w)
            rows.append(to_params(t))
        samples = np.array(rows)
        boot = BootstrapSummary(
            param_names=POWER_LAW_PARAM_NAMES,
            samples=samples,
            intervals=_percentile_intervals(samples, POWER_LAW_PARAM_NAMES, level),
            level=level,
            seed=seed,
        )
    return PowerLawFit(E=E, A=A, alpha=alpha, objective=val, n_points=n, delta=delta,
                       bootstrap=boot)


# --------------------------------------------------------------------------------------------
# Chinchilla Approach 3: L(N, D) = E + A N^-alpha + B D^-beta
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ChinchillaFit:
    """L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al. 2022, Approach 3).

    `objective` is the mean Huber loss of log residuals at the optimum, `n_starts_grid` the number
    of grid initialisations ranked and `n_starts_optimised` how many of them L-BFGS ran from.
    `bootstrap` holds resampled parameters and percentile intervals when `n_bootstrap > 0`.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int
    delta: float
    n_starts_grid: int
    n_starts_optimised: int
    bootstrap: BootstrapSummary | None = None

    def predict(self, n_params: ArrayLike, n_tokens: ArrayLike) -> np.ndarray:
        """Predicted loss for models of `n_params` trained on `n_tokens` (broadcast together)."""
        n = np.asarray(n_params, dtype=float)
        d = np.asarray(n_tokens, dtype=float)
        return (self.E + np.exp(np.log(self.A) - self.alpha * np.log(n))
                + np.exp(np.log(self.B) - self.beta * np.log(d)))

    def optimal_allocation(self, compute: ArrayLike) -> Allocation:
        """Loss-minimising (N*, D*) under C = 6 N D (Hoffmann et al. 2022, eq. 4 / Appendix D.2).

        G = (alpha A / (beta B))^(1/(alpha+beta)), N* = G (C/6)^(beta/(alpha+beta)),
        D* = (C/6) / N*. Needs alpha, beta > 0 (otherwise no interior optimum exists).
        """
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError(
                f"optimal_allocation needs alpha > 0 and beta > 0, got alpha={self.alpha!r}, "
                f"beta={self.beta!r}"
            )
        c6 = np.asarray(compute, dtype=float) / 6.0
        s = self.alpha + self.beta
        log_g = (np.log(self.alpha * self.A) - np.log(self.beta * self.B)) / s
        n_opt = np.exp(log_g + (self.beta / s) * np.log(c6))
        return Allocation(n_params=n_opt, n_tokens=c6 / n_opt)

    def predict_optimal_loss(self, compute: ArrayLike) -> np.ndarray:
        """Predicted loss of the compute-optimal model at `compute` FLOPs (C = 6 N D)."""
        n_opt, d_opt = self.optimal_allocation(compute)
        return self.predict(n_opt, d_opt)

    def sample_fits(self) -> list["ChinchillaFit"]:
        """One ChinchillaFit per bootstrap resample (empty list without a bootstrap)."""
        if self.bootstrap is None:
            return []
        return [
            ChinchillaFit(E=float(s[0]), A=float(s[1]), B=float(s[2]), alpha=float(s[3]),
                          beta=float(s[4]), objective=float("nan"), n_points=self.n_points,
                          delta=self.delta, n_starts_grid=0, n_starts_optimised=1)
            for s in self.bootstrap.samples
        ]

    def predict_optimal_loss_band(self, compute: ArrayLike, level: float | None = None) -> Band:
        """Pointwise percentile band of the bootstrap compute-optimal loss at `compute`."""
        fits = [f for f in self.sample_fits() if f.alpha > 0 and f.beta > 0]
        if self.bootstrap is not None and not fits:
            raise ValueError("no bootstrap resample has alpha > 0 and beta > 0: the compute-optimal "
                             "loss has no band")
        return _band([f.predict_optimal_loss(compute) for f in fits], self.bootstrap, level)

    def predict_band(
        self, n_params: ArrayLike, n_tokens: ArrayLike, level: float | None = None
    ) -> Band:
        """Pointwise percentile band of the bootstrap predictions at (n_params, n_tokens)."""
        preds = [f.predict(n_params, n_tokens) for f in self.sample_fits()]
        return _band(preds, self.bootstrap, level)


def chinchilla_objective(
    theta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float = 1e-3,
    weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Objective of Approach 3 and its analytic gradient, theta = (a, b, e, alpha, beta).

    value = sum_i w_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i) / sum w.
    The mean (not the paper's sum) keeps the scale independent of the number of runs; the optimum
    is the same. With s_k the LSE softmax weights and h' the Huber derivative:
    d/da = h' s1, d/dalpha = -h' s1 log N, d/db = h' s2, d/dbeta = -h' s2 log D, d/de = h' s3.
    """
    a, b, e, alpha, beta = theta
    w = np.ones_like(log_n) if weights is None else weights
    pred, s1, s2, s3 = _logsumexp3(a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e))
    value, dh = _huber(pred - log_loss, delta)
    dh = dh * w
    total = w.sum()
    g1, g2 = dh * s1, dh * s2
    grad = np.array([
        g1.sum(), g2.sum(), np.sum(dh * s3), -np.sum(g1 * log_n), -np.sum(g2 * log_d)
    ]) / total
    return float(np.sum(value * w) / total), grad


def hoffmann_grid() -> np.ndarray:
    """The 4,500 initialisations of Hoffmann et al. as rows (a, b, e, alpha, beta)."""
    rows = itertools.product(HOFFMANN_GRID_A, HOFFMANN_GRID_B, HOFFMANN_GRID_E,
                             HOFFMANN_GRID_ALPHA, HOFFMANN_GRID_BETA)
    return np.array(list(rows), dtype=float)


def _grid_objectives(
    grid: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float
) -> np.ndarray:
    """Mean Huber objective of every grid row at once (chunks of starts x points)."""
    out = np.empty(len(grid))
    chunk = max(1, _GRID_CHUNK_ELEMENTS // max(1, len(log_n)))
    for lo in range(0, len(grid), chunk):
        g = grid[lo:lo + chunk]
        a, b, e, alpha, beta = (g[:, k:k + 1] for k in range(5))
        x1 = a - alpha * log_n[None, :]
        x2 = b - beta * log_d[None, :]
        x3 = np.broadcast_to(e, x1.shape)
        m = np.maximum(np.maximum(x1, x2), x3)
        pred = m + np.log(np.exp(x1 - m) + np.exp(x2 - m) + np.exp(x3 - m))
        value, _ = _huber(pred - log_loss[None, :], delta)
        out[lo:lo + chunk] = value.mean(axis=1)
    return out


def _chinchilla_params(theta: np.ndarray) -> tuple[float, float, float, float, float]:
    a, b, e, alpha, beta = (float(v) for v in theta)
    with np.errstate(over="ignore"):  # a runaway exponent drives its coefficient to inf: reported, not warned
        return float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), alpha, beta


@_blas_single_thread
def fit_chinchilla(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    delta: float = 1e-3,
    n_bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    n_best_starts: int = 20,
    grid: np.ndarray | None = None,
) -> ChinchillaFit:
    """Fit L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al. 2022, Approach 3).

    Parameterised as log L_hat = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b,
    E = e^e; Huber loss (`delta`, 1e-3 in the paper) on log-loss residuals. Every row of `grid`
    (default: the paper's 4,500 starts, see `hoffmann_grid`) is scored in one vectorised pass;
    L-BFGS-B with the analytic gradient runs from the `n_best_starts` best rows; the lowest optimum
    is kept. Needs at least 5 runs (5 parameters).

    The exponents are *not* constrained to be positive, as in Hoffmann et al.: a sweep in which
    larger models are worse legitimately returns alpha < 0, and one whose loss is flat in N returns
    a runaway alpha with a huge A. Such fits are findings to report, not errors; use
    `workbench.scaling.identification.check_chinchilla` to tell which parameters are identified
    before deriving anything (`optimal_allocation` needs alpha, beta > 0).

    With `n_bootstrap` > 0, runs are resampled with replacement (seeded by `seed`) and refitted
    from the full-data optimum; the samples and percentile intervals at `level` are returned in
    `bootstrap`.
    """
    n = _positive_1d("n_params", n_params)
    d = _positive_1d("n_tokens", n_tokens)
    y = _positive_1d("loss", loss)
    count = _same_length(n_params=n, n_tokens=d, loss=y)
    if count < 5:
        raise ValueError(f"fit_chinchilla needs >= 5 runs for 5 parameters, got {count}")
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta!r}")
    if n_best_starts < 1:
        raise ValueError(f"n_best_starts must be >= 1, got {n_best_starts!r}")
    starts = hoffmann_grid() if grid is None else np.asarray(grid, dtype=float)
    if starts.ndim != 2 or starts.shape[1] != 5:
        raise ValueError(f"grid must have shape (k, 5) with rows (a, b, e, alpha, beta), "
                         f"got {starts.shape}")
    log_n, log_d, log_loss = np.log(n), np.log(d), np.log(y)

    with np.errstate(over="ignore", invalid="ignore"):
        scores = _grid_objectives(starts, log_n, log_d, log_loss, delta)
    scores = np.where(np.isfinite(scores), scores, np.inf)
    best_rows = np.argsort(scores, kind="stable")[:n_best_starts]

    ones = np.ones(count)

    def objective(t: np.ndarray, w: np.ndarray = ones) -> tuple[float, np.ndarray]:
        return chinchilla_objective(t, log_n, log_d, log_loss, delta, w)

    best_theta, best_val = None, np.inf
    for row in best_rows:
        theta, val, _ = _minimize_lbfgs(objective, starts[row])
        if np.all(np.isfinite(theta)) and val < best_val:
            best_theta, best_val = theta, val
    if best_theta is None:
        raise RuntimeError("Chinchilla fit failed from every initialisation (non-finite optimum)")

    boot = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(n_bootstrap):
            w = np.bincount(rng.integers(0, count, count), minlength=count).astype(float)
            theta, _, _ = _minimize_lbfgs(lambda t, w=w: objective(t, w), best_theta)
            rows.append(_chinchilla_params(theta))
        samples = np.array(rows)
        boot = BootstrapSummary(
            param_names=CHINCHILLA_PARAM_NAMES,
            samples=samples,
            intervals=_percentile_intervals(samples, CHINCHILLA_PARAM_NAMES, level),
            level=level,
            seed=seed,
        )
    E, A, B, alpha, beta = _chinchilla_params(best_theta)
    return ChinchillaFit(E=E, A=A, B=B, alpha=alpha, beta=beta, objective=best_val,
                         n_points=count, delta=delta, n_starts_grid=len(starts),
                         n_starts_optimised=len(best_rows), bootstrap=boot)


# --------------------------------------------------------------------------------------------
# Chinchilla Approach 2: IsoFLOP profiles
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class IsoFlopFit:
    """IsoFLOP profiles (Hoffmann et al. 2022, Approach 2).

    Per budget k (arrays of length n_budgets): `budget_compute[k]` (geometric mean FLOPs of the
    budget's runs), `parabola[k] = (c2, c1, c0)` of loss = c2 x^2 + c1 x + c0 with x = ln N,
    `n_opt[k]`, `d_opt[k]`, `loss_opt[k]` at the parabola's minimum, `valid[k]` (the parabola
    opens upward and has >= 3 distinct sizes) and `interior[k]` (the minimum lies inside the
    sampled range of N). `group_index[i]` maps run i to its budget.
    Across valid budgets: N_opt = n_coef C^n_exponent and D_opt = d_coef C^d_exponent.
    """

    budget_compute: np.ndarray
    parabola: np.ndarray
    n_opt: np.ndarray
    d_opt: np.ndarray
    loss_opt: np.ndarray
    valid: np.ndarray
    interior: np.ndarray
    group_index: np.ndarray
    n_exponent: float
    n_coef: float
    d_exponent: float
    d_coef: float

    def optimal_allocation(self, compute: ArrayLike) -> Allocation:
        """Compute-optimal (N, D) at `compute` FLOPs from the fitted power laws."""
        c = np.asarray(compute, dtype=float)
        return Allocation(
            n_params=self.n_coef * np.exp(self.n_exponent * np.log(c)),
            n_tokens=self.d_coef * np.exp(self.d_exponent * np.log(c)),
        )


def _group_by_compute(compute: np.ndarray, rtol: float) -> np.ndarray:
    """Label runs whose compute agrees within `rtol` (chained in sorted log order)."""
    order = np.argsort(compute)
    log_c = np.log(compute[order])
    new_group = np.concatenate([[False], np.diff(log_c) > np.log1p(rtol)])
    labels_sorted = np.cumsum(new_group)
    labels = np.empty(len(compute), dtype=int)
    labels[order] = labels_sorted
    return labels


@_blas_single_thread
def fit_isoflop(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    budgets: ArrayLike | None = None,
    *,
    compute: ArrayLike | None = None,
    rtol: float = 0.1,
) -> IsoFlopFit:
    """Approach 2: one parabola of loss vs ln N per FLOP budget, then power laws in C.

    Runs are grouped by `budgets` (one label per run: the nominal FLOP budget or any hashable
    label) or, when it is None, by `compute` (default 6 N D) agreeing within `rtol`. A budget's
    compute is the geometric mean of its runs' compute. D at the optimum comes from a line of
    ln D vs ln N within the budget, so any FLOP accounting works. Budgets with fewer than 3
    distinct sizes or a parabola that opens downward are marked invalid and left out of the power
    laws; at least 2 valid budgets are required.
    """
    n = _positive_1d("n_params", n_params)
    d = _positive_1d("n_tokens", n_tokens)
    y = _positive_1d("loss", loss)
    c = 6.0 * n * d if compute is None else _positive_1d("compute", compute)
    _same_length(n_params=n, n_tokens=d, loss=y, compute=c)
    if budgets is None:
        group = _group_by_compute(c, rtol)
    else:
        labels = np.asarray(budgets)
        _same_length(n_params=n, budgets=labels)
        _, group = np.unique(labels, return_inverse=True)
        group = group.reshape(-1)
    n_groups = int(group.max()) + 1
    budget_c = np.empty(n_groups)
    parabola = np.full((n_groups, 3), np.nan)
    n_opt, d_opt, loss_opt = (np.full(n_groups, np.nan) for _ in range(3))
    valid = np.zeros(n_groups, dtype=bool)
    interior = np.zeros(n_groups, dtype=bool)
    for k in range(n_groups):
        m = group == k
        budget_c[k] = float(np.exp(np.mean(np.log(c[m]))))
        x = np.log(n[m])
        if np.unique(x).size < 3:
            continue
        coef = np.polyfit(x, y[m], 2)
        parabola[k] = coef
        if coef[0] <= 0:
            continue
        x_star = -coef[1] / (2.0 * coef[0])
        slope, intercept = np.polyfit(x, np.log(d[m]), 1)
        n_opt[k] = np.exp(x_star)
        d_opt[k] = np.exp(intercept + slope * x_star)
        loss_opt[k] = np.polyval(coef, x_star)
        valid[k] = True
        interior[k] = bool(x.min() <= x_star <= x.max())
    if valid.sum() < 2:
        raise ValueError(
            f"fit_isoflop needs >= 2 budgets with >= 3 sizes and an upward parabola; got "
            f"{int(valid.sum())} of {n_groups} (budget compute: {budget_c.tolist()})"
        )
    log_cv = np.log(budget_c[valid])
    n_exp, n_int = np.polyfit(log_cv, np.log(n_opt[valid]), 1)
    d_exp, d_int = np.polyfit(log_cv, np.log(d_opt[valid]), 1)
    return IsoFlopFit(
        budget_compute=budget_c, parabola=parabola, n_opt=n_opt, d_opt=d_opt, loss_opt=loss_opt,
        valid=valid, interior=interior, group_index=group, n_exponent=float(n_exp),
        n_coef=float(np.exp(n_int)), d_exponent=float(d_exp), d_coef=float(np.exp(d_int)),
    )


# --------------------------------------------------------------------------------------------
# Frontier and held-out check
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Frontier:
    """Lower envelope of loss vs compute.

    `compute` is sorted ascending (ties kept, in input order), `loss` is the best loss reached at
    or below each compute, `order` maps back to input indices (compute == input[order]) and
    `on_frontier[j]` is True when run order[j] itself attains the envelope (strictly improves on
    everything cheaper): the points a frontier power law is fitted to.
    """

    compute: np.ndarray
    loss: np.ndarray
    order: np.ndarray
    on_frontier: np.ndarray

    def at(self, compute: ArrayLike) -> np.ndarray:
        """Best loss reached at or below `compute` (NaN below the cheapest run)."""
        q = np.asarray(compute, dtype=float)
        idx = np.searchsorted(self.compute, q, side="right") - 1
        out = np.where(idx >= 0, self.loss[np.clip(idx, 0, None)], np.nan)
        return out


def compute_frontier(compute: ArrayLike, loss: ArrayLike) -> Frontier:
    """The lower envelope: best loss reached at or below each compute (the L(C) frontier)."""
    c = _positive_1d("compute", compute)
    y = _positive_1d("loss", loss)
    _same_length(compute=c, loss=y)
    # Sort by compute, then by loss so that among equal compute the best run comes first.
    order = np.lexsort((y, c))
    c_sorted, y_sorted = c[order], y[order]
    envelope = np.minimum.accumulate(y_sorted)
    previous = np.concatenate([[np.inf], envelope[:-1]])
    on_frontier = y_sorted < previous
    return Frontier(compute=c_sorted, loss=envelope, order=order, on_frontier=on_frontier)


@dataclasses.dataclass(frozen=True, eq=False)
class HoldoutPrediction:
    """One law's prediction of held-out runs (arrays, one entry per held-out point)."""

    compute: np.ndarray
    predicted: np.ndarray
    actual: np.ndarray
    relative_error: np.ndarray

    @property
    def max_relative_error(self) -> float:
        return float(np.max(self.relative_error))


@dataclasses.dataclass(frozen=True, eq=False)
class HoldoutCheck:
    """Fit on every run below the largest compute, predict the largest-compute run(s).

    `heldout_index` are the input indices of the held-out runs. `chinchilla` predicts each held-out
    run's loss from its (N, D); `power_law` predicts the frontier (best loss at or below the
    held-out compute, over all runs) from a power law fitted to the training runs' frontier.
    relative_error = |predicted - actual| / actual.
    """

    heldout_index: np.ndarray
    chinchilla: HoldoutPrediction
    power_law: HoldoutPrediction
    chinchilla_fit: ChinchillaFit
    power_law_fit: PowerLawFit
    train_frontier: Frontier


@_blas_single_thread
def holdout_check(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    compute: ArrayLike,
    loss: ArrayLike,
    *,
    holdout_rtol: float = 0.01,
    delta: float = 1e-3,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> HoldoutCheck:
    """Predictive check: hold out the largest-compute run(s), fit the rest, compare.

    Runs with compute >= max(compute) / (1 + `holdout_rtol`) are held out. The Chinchilla law is
    fitted to all other runs; the frontier power law to the other runs' frontier points
    (`compute_frontier(...).on_frontier`). `n_bootstrap` and `seed` are passed to both fits so the
    plots can draw bands.
    """
    n = _positive_1d("n_params", n_params)
    d = _positive_1d("n_tokens", n_tokens)
    c = _positive_1d("compute", compute)
    y = _positive_1d("loss", loss)
    _same_length(n_params=n, n_tokens=d, compute=c, loss=y)
    held = c >= c.max() / (1.0 + holdout_rtol)
    train = ~held
    if train.sum() < 5:
        raise ValueError(
            f"holdout_check needs >= 5 runs below the largest compute, got {int(train.sum())} "
            f"(held out {int(held.sum())} runs at compute >= {c.max() / (1 + holdout_rtol):.3g})"
        )
    chin = fit_chinchilla(n[train], d[train], y[train], delta=delta, n_bootstrap=n_bootstrap,
                          seed=seed)
    frontier = compute_frontier(c[train], y[train])
    fc = frontier.compute[frontier.on_frontier]
    fl = frontier.loss[frontier.on_frontier]
    pl = fit_power_law(fc, fl, delta=delta, n_bootstrap=n_bootstrap, seed=seed)

    idx = np.flatnonzero(held)
    chin_pred = chin.predict(n[idx], d[idx])
    chin_actual = y[idx]
    all_frontier = compute_frontier(c, y)
    pl_pred = pl.predict(c[idx])
    pl_actual = all_frontier.at(c[idx])
    return HoldoutCheck(
        heldout_index=idx,
        chinchilla=HoldoutPrediction(
            compute=c[idx], predicted=chin_pred, actual=chin_actual,
            relative_error=np.abs(chin_pred - chin_actual) / chin_actual,
        ),
        power_law=HoldoutPrediction(
            compute=c[idx], predicted=pl_pred, actual=pl_actual,
            relative_error=np.abs(pl_pred - pl_actual) / pl_actual,
        ),
        chinchilla_fit=chin,
        power_law_fit=pl,
        train_frontier=frontier,
    )
