"""Scaling-law fits recover planted parameters; closed forms agree with brute force."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workbench.scaling.fits import (
    ChinchillaFit,
    chinchilla_objective,
    compute_frontier,
    fit_chinchilla,
    fit_isoflop,
    fit_power_law,
    holdout_check,
    hoffmann_grid,
)

# Planted surface close to Hoffmann et al.'s published fit (E 1.69, A 406.4, B 410.7, 0.34, 0.28).
E, A, B, ALPHA, BETA = 1.7, 400.0, 410.0, 0.34, 0.28
TRUE = ChinchillaFit(E=E, A=A, B=B, alpha=ALPHA, beta=BETA, objective=0.0, n_points=0,
                     delta=1e-3, n_starts_grid=0, n_starts_optimised=0)


def _grid_runs(noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """240 runs: 16 sizes in 1e5..1e9 x 15 token counts in 1e6..1e11, lognormal noise."""
    n, d = np.meshgrid(np.geomspace(1e5, 1e9, 16), np.geomspace(1e6, 1e11, 15))
    n, d = n.ravel(), d.ravel()
    rng = np.random.default_rng(seed)
    loss = TRUE.predict(n, d) * np.exp(noise * rng.standard_normal(n.size))
    return n, d, loss


@pytest.fixture(scope="module")
def noisy_fit() -> tuple[ChinchillaFit, float]:
    n, d, loss = _grid_runs(noise=0.01, seed=1)
    fit_chinchilla(n[:20], d[:20], loss[:20], grid=hoffmann_grid()[:10])  # warm imports
    # CPU time of this process, not wall time: the test machine is shared with other jobs.
    start = time.process_time()
    fit = fit_chinchilla(n, d, loss)
    return fit, time.process_time() - start


def test_hoffmann_grid_is_the_full_grid() -> None:
    grid = hoffmann_grid()
    assert grid.shape == (4500, 5)
    assert len(np.unique(grid, axis=0)) == 4500
    assert sorted(set(grid[:, 0])) == [0, 5, 10, 15, 20, 25]
    assert sorted(set(grid[:, 3])) == [0, 0.5, 1, 1.5, 2]


def test_chinchilla_recovers_planted_parameters(noisy_fit) -> None:
    fit, _ = noisy_fit
    assert fit.n_points == 240 and fit.n_starts_grid == 4500 and fit.n_starts_optimised == 20
    assert fit.E == pytest.approx(E, rel=0.04)
    assert fit.alpha == pytest.approx(ALPHA, abs=0.03)
    assert fit.beta == pytest.approx(BETA, abs=0.03)
    assert fit.A == pytest.approx(A, rel=0.3)
    assert fit.B == pytest.approx(B, rel=0.3)
    # The optimiser must reach at least the objective of the planted parameters.
    n, d, loss = _grid_runs(noise=0.01, seed=1)
    theta_true = np.array([np.log(A), np.log(B), np.log(E), ALPHA, BETA])
    at_truth, _ = chinchilla_objective(theta_true, np.log(n), np.log(d), np.log(loss))
    assert fit.objective <= at_truth + 1e-12


def test_chinchilla_fit_is_fast(noisy_fit) -> None:
    # A first version with numerical gradients took 8 minutes; the target here is well under 2 s.
    _, seconds = noisy_fit
    assert seconds < 5.0, f"Chinchilla fit on 240 points took {seconds:.2f} CPU s"


def test_chinchilla_noise_free_is_exact() -> None:
    n, d, loss = _grid_runs(noise=0.0, seed=0)
    fit = fit_chinchilla(n[::2], d[::2], loss[::2])
    for got, want in [(fit.E, E), (fit.A, A), (fit.B, B), (fit.alpha, ALPHA), (fit.beta, BETA)]:
        assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("delta", [1e-3, 0.05])
def test_analytic_gradient_matches_finite_differences(delta: float) -> None:
    n, d, loss = _grid_runs(noise=0.02, seed=3)
    log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 3, n.size).astype(float)  # bootstrap-style weights
    for theta in [np.array([np.log(A), np.log(B), np.log(E), ALPHA, BETA]) + 0.05,
                  np.array([5.0, 7.0, 0.3, 0.4, 0.3]),
                  np.array([10.0, 2.0, 0.8, 0.6, 0.1])]:
        for w in (None, weights):
            _, grad = chinchilla_objective(theta, log_n, log_d, log_loss, delta, w)
            fd = np.empty(5)
            for k in range(5):
                step = np.zeros(5)
                step[k] = 1e-6
                hi, _ = chinchilla_objective(theta + step, log_n, log_d, log_loss, delta, w)
                lo, _ = chinchilla_objective(theta - step, log_n, log_d, log_loss, delta, w)
                fd[k] = (hi - lo) / 2e-6
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-10)


def test_optimal_allocation_matches_brute_force_scan() -> None:
    for compute in (1e18, 5.76e23, 1e26):
        n_opt, d_opt = TRUE.optimal_allocation(compute)
        assert 6.0 * n_opt * d_opt == pytest.approx(compute, rel=1e-12)
        # Scan the iso-FLOP line N in [1e-3, 1e3] x N*: the minimum must sit at N*.
        n_scan = n_opt * np.geomspace(1e-3, 1e3, 200_001)
        scan_loss = TRUE.predict(n_scan, compute / (6.0 * n_scan))
        best = n_scan[np.argmin(scan_loss)]
        assert np.log(best / n_opt) == pytest.approx(0.0, abs=1e-3)
        assert TRUE.predict_optimal_loss(compute) == pytest.approx(scan_loss.min(), rel=1e-9)
    # Closed form: N* grows as C^(beta / (alpha + beta)).
    n1, _ = TRUE.optimal_allocation(1e20)
    n2, _ = TRUE.optimal_allocation(1e22)
    assert np.log(n2 / n1) / np.log(100.0) == pytest.approx(BETA / (ALPHA + BETA), rel=1e-10)


def test_chinchilla_bootstrap_intervals() -> None:
    n, d, loss = _grid_runs(noise=0.01, seed=1)
    start = time.process_time()
    fit = fit_chinchilla(n, d, loss, n_bootstrap=100, seed=7)
    seconds = time.process_time() - start
    assert seconds < 15.0, f"fit + 100 bootstrap resamples took {seconds:.2f} CPU s"
    boot = fit.bootstrap
    assert boot is not None and boot.samples.shape == (100, 5) and boot.n_resamples == 100
    point = dict(E=fit.E, A=fit.A, B=fit.B, alpha=fit.alpha, beta=fit.beta)
    for name, (lo, hi) in boot.intervals.items():
        assert lo < point[name] < hi, name
    # Intervals are honest in size: resampling a 1 %-noise grid moves alpha by ~0.001-0.02.
    width = boot.intervals["alpha"][1] - boot.intervals["alpha"][0]
    assert 5e-4 < width < 0.05
    # Same seed, same samples; the band brackets the point prediction.
    again = fit_chinchilla(n, d, loss, n_bootstrap=5, seed=7)
    np.testing.assert_allclose(again.bootstrap.samples, boot.samples[:5], rtol=1e-6)
    c = np.geomspace(1e18, 1e22, 5)
    band = fit.predict_optimal_loss_band(c)
    mid = fit.predict_optimal_loss(c)
    assert np.all(band.low <= mid) and np.all(mid <= band.high)


def test_bootstrap_on_noise_free_data_collapses_to_truth() -> None:
    n, d, loss = _grid_runs(noise=0.0, seed=0)
    fit = fit_chinchilla(n[::3], d[::3], loss[::3], n_bootstrap=10)
    for name, want in dict(E=E, alpha=ALPHA, beta=BETA).items():
        lo, hi = fit.bootstrap.intervals[name]
        assert want == pytest.approx(lo, rel=1e-3) and want == pytest.approx(hi, rel=1e-3)


def test_power_law_recovers_planted_parameters() -> None:
    compute = np.geomspace(1e9, 1e20, 40)
    truth = 1.5 + 2e3 * compute**-0.15
    exact = fit_power_law(compute, truth)
    assert (exact.E, exact.A, exact.alpha) == pytest.approx((1.5, 2e3, 0.15), rel=1e-4)
    rng = np.random.default_rng(0)
    noisy = fit_power_law(compute, truth * np.exp(0.005 * rng.standard_normal(40)),
                          n_bootstrap=50)
    assert noisy.E == pytest.approx(1.5, rel=0.05)
    assert noisy.alpha == pytest.approx(0.15, abs=0.01)
    lo, hi = noisy.bootstrap.intervals["alpha"]
    assert lo < noisy.alpha < hi
    np.testing.assert_allclose(noisy.predict(compute), truth, rtol=0.01)


def test_power_law_without_floor() -> None:
    # E = 0 (a pure power law): the fit must drive E towards 0, not invent a floor.
    compute = np.geomspace(1e12, 1e18, 25)
    fit = fit_power_law(compute, 50.0 * compute**-0.1)
    assert fit.E < 1e-3
    assert fit.alpha == pytest.approx(0.1, rel=1e-3)


def test_isoflop_recovers_exponents() -> None:
    rng = np.random.default_rng(4)
    budgets = np.geomspace(1e16, 1e21, 6)
    ns, ds, labels = [], [], []
    for c in budgets:
        # A sweep centred on a rough guess of the optimum (off by up to 2x), +-1 decade.
        centre = TRUE.optimal_allocation(c).n_params * np.exp(rng.uniform(-0.7, 0.7))
        n = centre * np.geomspace(0.1, 10.0, 9)
        ns.append(n)
        ds.append(c / (6.0 * n))
        labels += [f"{c:.0e}"] * n.size
    n, d = np.concatenate(ns), np.concatenate(ds)
    loss = TRUE.predict(n, d) * np.exp(0.002 * rng.standard_normal(n.size))
    fit = fit_isoflop(n, d, loss)
    assert fit.valid.all() and fit.interior.all() and len(fit.budget_compute) == 6
    np.testing.assert_allclose(fit.budget_compute, budgets, rtol=1e-9)
    assert fit.n_exponent == pytest.approx(BETA / (ALPHA + BETA), abs=0.03)
    assert fit.d_exponent == pytest.approx(ALPHA / (ALPHA + BETA), abs=0.03)
    # Per-budget minima near the true optimum, and the allocation law obeys C = 6 N D.
    truth_n = TRUE.optimal_allocation(budgets).n_params
    np.testing.assert_allclose(fit.n_opt, truth_n, rtol=0.25)
    alloc = fit.optimal_allocation(1e19)
    assert 6 * alloc.n_params * alloc.n_tokens == pytest.approx(1e19, rel=0.05)
    # Grouping by labels gives the same budgets as grouping by compute.
    by_label = fit_isoflop(n, d, loss, budgets=labels)
    np.testing.assert_allclose(np.sort(by_label.n_opt), np.sort(fit.n_opt), rtol=1e-12)


def test_isoflop_rejects_too_few_budgets() -> None:
    n = np.geomspace(1e6, 1e8, 5)
    with pytest.raises(ValueError, match="needs >= 2 budgets"):
        fit_isoflop(n, 1e18 / (6 * n), TRUE.predict(n, 1e18 / (6 * n)))


def test_compute_frontier_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    compute = rng.choice(np.geomspace(1e10, 1e15, 30), size=80)  # with ties
    loss = rng.uniform(2.0, 5.0, size=80)
    fr = compute_frontier(compute, loss)
    assert np.all(np.diff(fr.compute) >= 0) and np.all(np.diff(fr.loss) <= 0)
    np.testing.assert_array_equal(fr.compute, compute[fr.order])
    for c_j, l_j in zip(fr.compute, fr.loss):
        assert l_j == loss[compute <= c_j].min()
    np.testing.assert_array_equal(fr.at(compute), [loss[compute <= c].min() for c in compute])
    # on_frontier marks exactly the runs that beat everything cheaper.
    for j, i in enumerate(fr.order):
        cheaper = np.concatenate([loss[compute < compute[i]],
                                  loss[fr.order[:j]][compute[fr.order[:j]] == compute[i]]])
        assert fr.on_frontier[j] == (cheaper.size == 0 or loss[i] < cheaper.min())
    assert np.isnan(fr.at(1e9))


def test_holdout_check_on_noise_free_data() -> None:
    # Seven sizes x 20 checkpoints (loss curves); the largest-compute run is held out.
    n = np.repeat(np.geomspace(1e5, 3e8, 7), 20)
    d = np.tile(np.geomspace(1e7, 1e11, 20), 7)
    compute, loss = 6.0 * n * d, TRUE.predict(n, d)
    check = holdout_check(n, d, compute, loss)
    assert check.heldout_index.tolist() == [int(np.argmax(compute))]
    assert check.chinchilla.max_relative_error < 1e-6
    assert check.power_law.max_relative_error < 0.02
    assert check.power_law.actual[0] == pytest.approx(loss.min())
    # The check must notice a wrong held-out point: inflate it by 10 %.
    worse = loss.copy()
    worse[check.heldout_index] *= 1.1
    bad = holdout_check(n, d, compute, worse)
    assert bad.chinchilla.relative_error[0] == pytest.approx(1 - 1 / 1.1, rel=1e-4)


def test_bad_input_names_the_value() -> None:
    with pytest.raises(ValueError, match=r"loss\[2\] = -1.0"):
        fit_chinchilla([1e6] * 6, [1e9] * 6, [3.0, 3.0, -1.0, 3.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="same length"):
        fit_power_law([1e10, 1e11, 1e12], [3.0, 2.9])
    with pytest.raises(ValueError, match="needs >= 5 runs"):
        fit_chinchilla([1e6, 1e7], [1e9, 1e9], [3.0, 2.9])


def test_plots_draw_what_they_promise() -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    from workbench.scaling.plots import plot_isoflop, plot_loss_vs_compute

    n = np.repeat(np.geomspace(1e5, 1e8, 4), 8)
    d = np.tile(np.geomspace(1e7, 1e10, 8), 4)
    compute, loss = 6.0 * n * d, TRUE.predict(n, d)
    check = holdout_check(n, d, compute, loss, n_bootstrap=5)
    fig = plot_loss_vs_compute(compute, loss, n, holdout=check,
                               chinchilla_fit=check.chinchilla_fit)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    assert sum(label.startswith("N=") for label in labels) == 4  # one line per size
    assert "frontier" in labels and "Chinchilla compute-optimal" in labels
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # bootstrap band
    texts = " ".join(t.get_text() for t in ax.texts)
    assert f"{check.power_law.relative_error[0]:.1%}" in texts
    # The lines carry the data, not a copy of something else.
    first = next(line for line in ax.get_lines() if line.get_label().startswith("N="))
    np.testing.assert_allclose(first.get_ydata(), loss[:8])

    c_budgets = np.geomspace(1e15, 1e18, 3)
    n_iso = np.concatenate([TRUE.optimal_allocation(c).n_params * np.geomspace(0.1, 10, 7)
                            for c in c_budgets])
    d_iso = np.repeat(c_budgets, 7) / (6 * n_iso)
    iso = fit_isoflop(n_iso, d_iso, TRUE.predict(n_iso, d_iso))
    fig2 = plot_isoflop(iso, n_iso, TRUE.predict(n_iso, d_iso))
    assert len(fig2.axes) >= 2 and fig2.axes[1].get_yscale() == "log"
