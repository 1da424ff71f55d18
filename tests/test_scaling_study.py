"""The scaling study the notebook runs finishes on any sweep, and says in words what the sweep
does not identify: planted sweeps where larger models are worse, where loss ignores N, and where
only three runs exist, through the same study and plotting functions as 20_lm_scaling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from workbench.scaling import study
from workbench.scaling.fits import ChinchillaFit
from workbench.scaling.identification import MAX_PLAUSIBLE_EXPONENT, check_chinchilla

SIZES = np.array([2.5e5, 1e6, 3e6, 8e6, 2e7])  # the cpu ladder's span of parameters
TOKENS = np.array([2e5, 5e5, 1.5e6])


def _sweep(surface, sizes=SIZES, tokens=TOKENS) -> pd.DataFrame:
    n, d = (a.ravel() for a in np.meshgrid(sizes, tokens))
    return pd.DataFrame({"n_params": n, "tokens_seen": d, "flops": 6 * n * d,
                         "final_valid_loss": surface(n, d), "token_budget": d,
                         "preset": [f"size-{int(x)}" for x in n]})


def _everything_the_notebook_shows(table: pd.DataFrame) -> study.ScalingFits:
    fits = study.fit_sweep(table, n_bootstrap=20, seed=0)
    summary = study.fit_summary(fits)
    assert list(summary.columns) == ["law", "parameter", "value", "ci_low", "ci_high", "status"]
    assert isinstance(study.loss_vs_compute_figure(table, fits), Figure)
    budgets = [table["flops"].min(), table["flops"].max(), 100 * table["flops"].max()]
    allocation = study.allocation_table(fits, budgets)
    assert len(allocation) == 3
    widget = study.allocation_widget(fits, budgets[0], budgets[-1])
    slider, text = widget.children
    assert slider.disabled == (not fits.allocation_identified)
    assert text.value  # the allocation or the reason it is withheld, never blank
    fields = study.summary_fields(fits)
    assert fields["fit_flags"] == fits.flags()
    return fits


def test_a_sweep_where_larger_models_are_worse_reports_negative_alpha_and_withholds_the_allocation():
    # Planted alpha = -0.3: loss rises with N.
    table = _sweep(lambda n, d: 2.0 + 0.01 * n ** 0.3 + 300.0 * d ** -0.4)
    fits = _everything_the_notebook_shows(table)
    assert fits.chinchilla.alpha < 0
    alpha = fits.chinchilla_check.parameter("alpha")
    assert not alpha.identified and "non-physical" in alpha.flag and "<= 0" in alpha.flag
    assert not fits.allocation_identified
    allocation = study.allocation_table(fits, [1e12])
    assert allocation["n_params_opt"].isna().all() and "alpha" in allocation["withheld"].iloc[0]
    assert any("alpha" in flag for flag in fits.flags())
    assert "non-physical" in study.fit_flags_html(fits)


def test_a_sweep_whose_loss_ignores_n_flags_alpha_as_unidentified():
    table = _sweep(lambda n, d: 2.0 + 300.0 * d ** -0.4)
    fits = _everything_the_notebook_shows(table)
    alpha = fits.chinchilla_check.parameter("alpha")
    assert not alpha.identified, alpha
    assert "not identified" in alpha.flag or "non-physical" in alpha.flag
    assert not fits.allocation_identified
    assert fits.chinchilla_check.parameter("beta").identified  # the D term is planted and found


def test_a_sweep_of_three_runs_finishes_and_says_which_fits_it_cannot_support():
    table = _sweep(lambda n, d: 2.0 + 400.0 * n ** -0.34 + 410.0 * d ** -0.28,
                   sizes=SIZES[:3], tokens=TOKENS[-1:])
    fits = _everything_the_notebook_shows(table)
    assert fits.chinchilla is None and "needs >= 5 runs" in fits.not_fitted["chinchilla"]
    assert fits.holdout is None and "holdout" in fits.not_fitted
    assert any("not fitted" in flag for flag in fits.flags())
    statuses = study.fit_summary(fits)["status"].tolist()
    assert any(s.startswith("not fitted") for s in statuses)


def test_a_healthy_sweep_is_identified_and_gets_its_allocation():
    table = _sweep(lambda n, d: 1.7 + 400.0 * n ** -0.34 + 410.0 * d ** -0.28,
                   sizes=np.geomspace(1e5, 1e9, 6), tokens=np.geomspace(1e6, 1e10, 5))
    fits = _everything_the_notebook_shows(table)
    assert fits.flags() == []
    assert fits.allocation_identified
    row = study.allocation_table(fits, [1e20]).iloc[0]
    assert row.n_params_opt > 0 and row.loss_pred > 1.7
    assert study.fit_flags_html(fits) == ""


@pytest.mark.parametrize("alpha, flag", [(22.5, "past"), (-0.62, "<= 0"), (float("nan"), "returned")])
def test_exponent_checks_name_the_value_and_the_problem(alpha, flag):
    fit = ChinchillaFit(E=1.0, A=9.2e119, B=300.0, alpha=alpha, beta=0.3, objective=0.0, n_points=15,
                        delta=1e-3, n_starts_grid=0, n_starts_optimised=0)
    check = check_chinchilla(fit)
    assert not check.derived_identified
    assert flag in check.parameter("alpha").flag
    assert "compute-optimal allocation withheld" in check.withheld_reason
    assert alpha > MAX_PLAUSIBLE_EXPONENT or not alpha > 0


def test_the_allocation_slider_reaches_every_round_decade():
    low, high = study.decade_slider_bounds(3.2e10, 4.7e13)
    assert (low, high) == (10.0, 14.0)
    positions = np.round(np.arange(low, high + 1e-9, 0.1), 6)
    assert {11.0, 12.0, 13.0} <= set(positions)
