"""Figures for scaling studies: plain arrays and fit dataclasses in, a matplotlib Figure out.

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so nothing touches pyplot's
global state, no GUI backend is needed, and a notebook shows the returned figure exactly once.
No I/O here: callers save with ``fig.savefig(path)``.
"""

from __future__ import annotations

import contextlib
import textwrap
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from workbench.scaling.fits import (
    ChinchillaFit,
    HoldoutCheck,
    IsoFlopFit,
    PowerLawFit,
    compute_frontier,
)
from workbench.scaling.identification import FitCheck, check_chinchilla, check_power_law

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_SIZE_CMAP = "viridis"
_BUDGET_CMAP = "plasma"


def _new_axes(ax: "Axes | None", ncols: int = 1, width: float = 6.4) -> tuple["Figure", list]:
    from matplotlib.figure import Figure

    if ax is not None:
        if ncols != 1:
            raise ValueError(f"an explicit ax is only accepted for single-panel plots, ncols={ncols}")
        return ax.figure, [ax]
    fig = Figure(figsize=(width * ncols, 4.6), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _fmt_count(x: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _log_norm(values: np.ndarray):
    from matplotlib.colors import LogNorm

    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:  # a single size: widen so the colour map still has a range
        lo, hi = lo / 2.0, hi * 2.0
    return LogNorm(vmin=lo, vmax=hi)


def plot_loss_vs_compute(
    compute: ArrayLike,
    loss: ArrayLike,
    n_params: ArrayLike,
    *,
    show_frontier: bool = True,
    power_law_fit: PowerLawFit | None = None,
    chinchilla_fit: ChinchillaFit | None = None,
    holdout: HoldoutCheck | None = None,
    chinchilla_check: FitCheck | None = None,
    log_y: bool = False,
    title: str | None = None,
    ax: "Axes | None" = None,
) -> "Figure":
    """Loss vs training FLOPs, one line per model size (coloured by size), log-x.

    Optional overlays: the compute frontier (lower envelope, dashed step line); a frontier power
    law and/or the Chinchilla compute-optimal loss, each with its bootstrap band when the fit has
    one; a held-out check: held-out points (stars), their predictions (crosses) joined by a line
    and annotated with the relative error. When `holdout` is given and `power_law_fit` is not,
    the holdout's own power law is drawn (it is the law that made the prediction).
    A Chinchilla fit whose exponents are not identified (`chinchilla_check`, computed from the
    fit alone when not given) gets no optimal-loss curve; the reason is written on the figure.
    """
    c = np.asarray(compute, dtype=float)
    y = np.asarray(loss, dtype=float)
    n = np.asarray(n_params, dtype=float)
    if not (c.shape == y.shape == n.shape and c.ndim == 1):
        raise ValueError(
            f"compute, loss, n_params must be 1-D of equal length, got {c.shape}, {y.shape}, "
            f"{n.shape}"
        )
    fig, (axis,) = _new_axes(ax)
    from matplotlib.cm import ScalarMappable

    sizes = np.unique(n)
    norm = _log_norm(sizes)
    cmap = _colormap(_SIZE_CMAP)
    for size in sizes:
        m = n == size
        order = np.argsort(c[m])
        axis.plot(c[m][order], y[m][order], "-o", ms=3, lw=1.2, color=cmap(norm(size)),
                  alpha=0.9, label=f"N={_fmt_count(size)}")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axis, label="parameters N")

    x_max = c.max()
    if show_frontier:
        fr = compute_frontier(c, y)
        axis.plot(fr.compute, fr.loss, color="black", ls="--", lw=1.0, drawstyle="steps-post",
                  label="frontier")
    if holdout is not None and power_law_fit is None:
        power_law_fit = holdout.power_law_fit
    grid = np.geomspace(c.min(), x_max, 200)
    withheld: list[str] = []
    if power_law_fit is not None:
        label = (f"L = {power_law_fit.E:.3g} + {power_law_fit.A:.3g}·C^-{power_law_fit.alpha:.3g}")
        power_check = check_power_law(power_law_fit, float(y.min()))
        if not power_check.derived_identified:
            label += " (alpha NOT identified)"
        axis.plot(grid, power_law_fit.predict(grid), color="tab:red", lw=1.8, label=label)
        if power_law_fit.bootstrap is not None:
            band = power_law_fit.predict_band(grid)
            lev = power_law_fit.bootstrap.level
            axis.fill_between(grid, band.low, band.high, color="tab:red", alpha=0.2,
                              label=f"{lev:.0%} bootstrap band")
    if chinchilla_fit is not None:
        chin_check = chinchilla_check or check_chinchilla(chinchilla_fit)
        if chin_check.derived_identified:
            axis.plot(grid, chinchilla_fit.predict_optimal_loss(grid), color="tab:blue", lw=1.8,
                      label="Chinchilla compute-optimal")
            if chinchilla_fit.bootstrap is not None:
                with contextlib.suppress(ValueError):  # no resample with positive exponents
                    band = chinchilla_fit.predict_optimal_loss_band(grid)
                    axis.fill_between(grid, band.low, band.high, color="tab:blue", alpha=0.15)
        else:
            withheld.append(chin_check.withheld_reason.replace("allocation", "curve", 1))
    if holdout is not None:
        _draw_holdout(axis, holdout)
    if withheld:
        # Said on the figure itself: a saved PNG travels without the notebook's text.
        axis.text(0.01, 0.01, "\n".join(textwrap.fill(w, 90) for w in withheld),
                  transform=axis.transAxes, fontsize=7, color="#a50", va="bottom", ha="left",
                  bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#a50"})

    axis.set_xscale("log")
    if log_y:
        axis.set_yscale("log")
    axis.set_xlabel("training compute C (FLOPs)")
    axis.set_ylabel("validation loss (nats/token)")
    if title:
        axis.set_title(title)
    axis.grid(True, which="both", alpha=0.25)
    axis.legend(fontsize=7, loc="upper right", ncols=2 if len(sizes) > 6 else 1)
    return fig


def _colormap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def _draw_holdout(axis: "Axes", holdout: HoldoutCheck) -> None:
    """Held-out points, the frontier law's prediction, and the relative error as text."""
    pl = holdout.power_law
    axis.scatter(pl.compute, pl.actual, marker="*", s=140, color="black", zorder=5,
                 label="held-out (actual)")
    axis.scatter(pl.compute, pl.predicted, marker="X", s=70, color="tab:red", zorder=5,
                 label="held-out (predicted)")
    # Several held-out runs share one compute: annotate once per distinct compute.
    _, first = np.unique(pl.compute, return_index=True)
    for i in first:
        axis.plot([pl.compute[i]] * 2, [pl.actual[i], pl.predicted[i]], color="tab:red", lw=1)
        chin_err = holdout.chinchilla.relative_error[holdout.chinchilla.compute == pl.compute[i]]
        text = f"power law: {pl.relative_error[i]:.1%}"
        if chin_err.size:
            text += f"\nChinchilla: {float(np.max(chin_err)):.1%}"
        axis.annotate(text, (pl.compute[i], pl.actual[i]), xytext=(-10, 25),
                      textcoords="offset points", ha="right", fontsize=8,
                      arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.8})


def plot_isoflop(
    fit: IsoFlopFit,
    n_params: ArrayLike,
    loss: ArrayLike,
    *,
    chinchilla_fit: ChinchillaFit | None = None,
    title: str | None = None,
) -> "Figure":
    """IsoFLOP profiles (Approach 2): left, loss vs N per budget with its parabola and minimum;
    right, N_opt and D_opt vs C with the fitted power laws (and, if given, the Approach 3
    allocation of `chinchilla_fit` for comparison).

    `n_params` and `loss` are the runs `fit` was computed from (fit.group_index maps them).
    """
    n = np.asarray(n_params, dtype=float)
    y = np.asarray(loss, dtype=float)
    if not (n.shape == y.shape == fit.group_index.shape):
        raise ValueError(
            f"n_params and loss must match the fit's runs ({fit.group_index.shape}), got "
            f"{n.shape} and {y.shape}"
        )
    fig, (left, right) = _new_axes(None, ncols=2, width=5.6)
    from matplotlib.cm import ScalarMappable

    norm = _log_norm(fit.budget_compute)
    cmap = _colormap(_BUDGET_CMAP)
    for k, budget in enumerate(fit.budget_compute):
        m = fit.group_index == k
        colour = cmap(norm(budget))
        left.scatter(n[m], y[m], s=16, color=colour)
        if np.all(np.isfinite(fit.parabola[k])):
            xs = np.linspace(np.log(n[m].min()) - 0.2, np.log(n[m].max()) + 0.2, 100)
            left.plot(np.exp(xs), np.polyval(fit.parabola[k], xs), color=colour, lw=1)
        if fit.valid[k]:
            left.scatter([fit.n_opt[k]], [fit.loss_opt[k]], marker="D", s=36, color=colour,
                         edgecolor="black", zorder=4)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=left, label="FLOP budget C")
    left.set_xscale("log")
    left.set_xlabel("parameters N")
    left.set_ylabel("validation loss (nats/token)")
    left.set_title("IsoFLOP profiles")
    left.grid(True, which="both", alpha=0.25)

    v = fit.valid
    if not v.any():
        right.text(0.5, 0.5, "no budget has a valid parabola\n(>= 3 sizes and an upward-opening fit):\n"
                   "no optimal allocation", transform=right.transAxes, ha="center", va="center",
                   color="#a50")
        right.set_axis_off()
        if title:
            fig.suptitle(title)
        return fig
    cs = np.geomspace(fit.budget_compute[v].min(), fit.budget_compute[v].max(), 100)
    alloc = fit.optimal_allocation(cs)
    right.scatter(fit.budget_compute[v], fit.n_opt[v], color="tab:blue", label="N_opt (parabola)")
    right.plot(cs, alloc.n_params, color="tab:blue",
               label=f"N_opt ∝ C^{fit.n_exponent:.2f}")
    right.scatter(fit.budget_compute[v], fit.d_opt[v], color="tab:orange", marker="s",
                  label="D_opt (parabola)")
    right.plot(cs, alloc.n_tokens, color="tab:orange",
               label=f"D_opt ∝ C^{fit.d_exponent:.2f}")
    if chinchilla_fit is not None and check_chinchilla(chinchilla_fit).derived_identified:
        ch = chinchilla_fit.optimal_allocation(cs)
        right.plot(cs, ch.n_params, color="tab:blue", ls=":", label="N* (Approach 3)")
        right.plot(cs, ch.n_tokens, color="tab:orange", ls=":", label="D* (Approach 3)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("training compute C (FLOPs)")
    right.set_ylabel("compute-optimal N or D")
    right.set_title("optimal allocation")
    right.grid(True, which="both", alpha=0.25)
    right.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
