"""The scaling study a notebook shows: fits of a sweep's table, the held-out check, and the same
sentences synthesised by each model size.

Thin glue over `fits` and `plots` so that the notebook stays a handful of calls.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from workbench.scaling.fits import (
    ChinchillaFit,
    HoldoutCheck,
    PowerLawFit,
    compute_frontier,
    fit_chinchilla,
    fit_isoflop,
    fit_power_law,
    holdout_check,
)
from workbench.scaling.identification import FitCheck, check_chinchilla, check_power_law


@dataclass
class ScalingFits:
    """Fits of the whole sweep and the held-out predictive check (fit below the largest compute,
    predict the largest: the number that says whether a curve can be trusted).

    A fit the sweep cannot support (too few runs, a failed optimisation) is None, with the reason
    in `not_fitted[name]`; a fit that ran is checked (`chinchilla_check`, `power_law_check`) so
    that unidentified exponents are flagged and what derives from them is withheld. Nothing here
    raises for what a sweep happens to give: a notebook always runs to the end.
    """

    chinchilla: ChinchillaFit | None
    power_law: PowerLawFit | None  # of the compute frontier, every run
    holdout: HoldoutCheck | None
    n_runs: int
    chinchilla_check: FitCheck | None = None
    power_law_check: FitCheck | None = None
    not_fitted: dict[str, str] = field(default_factory=dict)

    @property
    def allocation_identified(self) -> bool:
        return self.chinchilla_check is not None and self.chinchilla_check.derived_identified

    @property
    def allocation_withheld_reason(self) -> str:
        if self.chinchilla is None:
            return f"compute-optimal allocation withheld: {self.not_fitted.get('chinchilla', 'no Chinchilla fit')}"
        return self.chinchilla_check.withheld_reason if self.chinchilla_check else ""

    def flags(self) -> list[str]:
        """Everything a reader must know before trusting a number of this study, in words."""
        notes = [f"{name}: not fitted ({reason})" for name, reason in self.not_fitted.items()]
        for check in (self.chinchilla_check, self.power_law_check):
            if check is not None:
                notes.extend(check.flags)
        return notes


def _try_fit(name: str, not_fitted: dict[str, str], fit: Callable[[], Any]) -> Any:
    """Run one fit; a sweep that cannot support it is recorded, not raised (ValueError: too few or
    degenerate points; RuntimeError: no finite optimum from any start)."""
    try:
        return fit()
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as err:
        not_fitted[name] = str(err)
        return None


def trained_tokens(table) -> np.ndarray:
    """D of each run: the tokens its saved model was trained on. A run with early stopping saved
    its best evaluation's weights, so D is the tokens seen at that evaluation (`best_tokens_seen`),
    not all it consumed; other runs (no such column, or None in it) saved their last weights."""
    return _at_best(table, "tokens_seen")


def trained_flops(table) -> np.ndarray:
    """C of each run, on the same rule as `trained_tokens`: the FLOPs that trained the saved model."""
    return _at_best(table, "flops")


def _at_best(table, column: str) -> np.ndarray:
    values = table[column].to_numpy(float)
    best = f"best_{column}"
    if best not in table:
        return values
    at_best = table[best].to_numpy(float)  # None -> NaN
    return np.where(np.isnan(at_best), values, at_best)


def fit_sweep(table, n_bootstrap: int = 100, seed: int = 0, loss_column: str = "final_valid_loss") -> ScalingFits:
    n = table["n_params"].to_numpy(float)
    d = trained_tokens(table)
    c = trained_flops(table)
    loss = table[loss_column].to_numpy(float)
    not_fitted: dict[str, str] = {}
    if len(table) == 0:
        for name in ("chinchilla", "power_law", "holdout"):
            not_fitted[name] = "the sweep has no finished runs"
        return ScalingFits(None, None, None, 0, not_fitted=not_fitted)
    min_loss = float(np.min(loss))
    chinchilla = _try_fit("chinchilla", not_fitted,
                          lambda: fit_chinchilla(n, d, loss, n_bootstrap=n_bootstrap, seed=seed))

    def frontier_law() -> PowerLawFit:
        frontier = compute_frontier(c, loss)
        return fit_power_law(frontier.compute, frontier.loss, n_bootstrap=n_bootstrap, seed=seed)

    power_law = _try_fit("power_law", not_fitted, frontier_law)
    holdout = _try_fit("holdout", not_fitted, lambda: holdout_check(n, d, c, loss, n_bootstrap=0, seed=seed))
    return ScalingFits(
        chinchilla=chinchilla,
        power_law=power_law,
        holdout=holdout,
        n_runs=len(table),
        chinchilla_check=check_chinchilla(chinchilla, n, d, loss) if chinchilla else None,
        power_law_check=check_power_law(power_law, min_loss) if power_law else None,
        not_fitted=not_fitted,
    )


def fit_isoflop_sweep(table, loss_column: str = "final_valid_loss"):
    """Approach 2 on an IsoFLOP sweep: a parabola of loss vs log N per FLOP budget."""
    return fit_isoflop(table["n_params"].to_numpy(float), trained_tokens(table),
                       table[loss_column].to_numpy(float), budgets=table["flop_budget"].to_numpy(float))


def loss_vs_compute_figure(table, fits: ScalingFits, loss_column: str = "final_valid_loss"):
    """The report's loss-vs-FLOPs figure: every run, the frontier law (the held-out check's when
    there is one: it made the prediction), the Chinchilla optimal curve when identified, or the
    reason it is withheld written on the figure."""
    from workbench.scaling.plots import plot_loss_vs_compute

    return plot_loss_vs_compute(trained_flops(table), table[loss_column], table["n_params"],
                                power_law_fit=None if fits.holdout else fits.power_law,
                                chinchilla_fit=fits.chinchilla, holdout=fits.holdout,
                                chinchilla_check=fits.chinchilla_check,
                                title="validation loss (speech tokens) vs training FLOPs")


def isoflop_figure(table, fits: ScalingFits, loss_column: str = "final_valid_loss"):
    """IsoFLOP profiles (Approach 2) of an isoflop sweep, or a sentence saying why there are none."""
    from workbench.scaling.plots import plot_isoflop

    if "flop_budget" not in table or table["flop_budget"].isna().all():
        return "product grid: no IsoFLOP profiles (run with grid='isoflop' and flop_budgets for Approach 2)"
    try:
        isoflop = fit_isoflop_sweep(table, loss_column)
    except ValueError as err:
        return f"IsoFLOP profiles not fitted: {err}"
    return plot_isoflop(isoflop, table["n_params"], table[loss_column], chinchilla_fit=fits.chinchilla)


def fit_summary(fits: ScalingFits):
    """One table: fitted parameters (with bootstrap intervals), whether each is identified (in
    words), the held-out errors, and a row for each fit the sweep could not support."""
    import pandas as pd

    rows = []
    for law, fit, check, names in (("Chinchilla L(N, D)", fits.chinchilla, fits.chinchilla_check, ("E", "A", "B", "alpha", "beta")),
                                   ("frontier L(C)", fits.power_law, fits.power_law_check, ("E", "A", "alpha"))):
        if fit is None:
            continue
        for name in names:
            low, high = fit.bootstrap.intervals.get(name, (np.nan, np.nan)) if fit.bootstrap else (np.nan, np.nan)
            status = "identified"
            if name in ("E", "alpha", "beta"):
                status = check.parameter(name).flag or "identified"
            elif not check.derived_identified:
                status = "not interpretable: its exponent is not identified"
            rows.append({"law": law, "parameter": name, "value": getattr(fit, name),
                         "ci_low": low, "ci_high": high, "status": status})
    if fits.holdout is not None:
        for label, prediction in (("Chinchilla L(N, D)", fits.holdout.chinchilla), ("frontier L(C)", fits.holdout.power_law)):
            rows.append({"law": label, "parameter": "held-out relative error", "value": prediction.max_relative_error,
                         "ci_low": np.nan, "ci_high": np.nan, "status": "measured"})
    for name, reason in fits.not_fitted.items():
        rows.append({"law": name, "parameter": "(none)", "value": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                     "status": f"not fitted: {reason}"})
    return pd.DataFrame(rows, columns=["law", "parameter", "value", "ci_low", "ci_high", "status"])


def fit_flags_html(fits: ScalingFits) -> str:
    """The flags of `fits` as an HTML note for the report (empty string when all is identified)."""
    flags = fits.flags()
    if not flags:
        return ""
    items = "".join(f"<li>{html.escape(flag)}</li>" for flag in flags)
    return ("<div style='border-left:4px solid #c60;padding:4px 12px;background:#fff6ec'>"
            "<b>What this sweep does not identify</b> (numbers derived from these are withheld below)"
            f"<ul>{items}</ul></div>")


def allocation_table(fits: ScalingFits, budgets_flops) -> Any:
    """Compute-optimal model size, tokens and predicted loss at each budget (Chinchilla fit), or,
    when the fit does not identify its exponents, the budgets with the reason in `withheld`."""
    import pandas as pd

    budgets = np.asarray(budgets_flops, dtype=float)
    if not fits.allocation_identified:
        nan = np.full(budgets.shape, np.nan)
        return pd.DataFrame({"compute_flops": budgets, "n_params_opt": nan, "tokens_opt": nan, "loss_pred": nan,
                             "withheld": [fits.allocation_withheld_reason] * budgets.size})
    allocation = fits.chinchilla.optimal_allocation(budgets)
    return pd.DataFrame({"compute_flops": budgets, "n_params_opt": np.asarray(allocation.n_params),
                         "tokens_opt": np.asarray(allocation.n_tokens),
                         "loss_pred": np.asarray(fits.chinchilla.predict_optimal_loss(budgets))})


def decade_slider_bounds(min_flops: float, max_flops: float) -> tuple[float, float]:
    """log10 bounds on whole decades around [min_flops, max_flops], so every round budget (1e11,
    1e12, ...) is a slider position (the step, 0.1 decade, divides a decade exactly)."""
    low, high = math.floor(math.log10(min_flops)), math.ceil(math.log10(max_flops))
    return float(low), float(max(high, low + 1))


def allocation_widget(fits: ScalingFits, min_flops: float, max_flops: float):
    """A log slider over the compute budget showing the predicted optimal size, tokens and loss;
    disabled, with the reason in words, when the fit does not identify the allocation."""
    import ipywidgets as widgets

    low, high = decade_slider_bounds(min_flops, max_flops)
    start = round(math.log10(math.sqrt(min_flops * max_flops)), 1)
    slider = widgets.FloatLogSlider(value=10 ** start, base=10, min=low, max=high, step=0.1, description="FLOPs",
                                    readout_format=".1e", layout=widgets.Layout(width="520px"))
    output = widgets.HTML()
    if not fits.allocation_identified:
        slider.disabled = True
        output.value = f"<span style='color:#a50'>{html.escape(fits.allocation_withheld_reason)}</span>"
        return widgets.VBox([slider, output])

    def show(change=None) -> None:  # noqa: ARG001
        row = allocation_table(fits, [slider.value]).iloc[0]
        output.value = (f"<b>C = {row.compute_flops:.3g} FLOPs</b>: optimal N ≈ {row.n_params_opt:,.0f} parameters, "
                        f"D ≈ {row.tokens_opt:,.0f} tokens, predicted loss {row.loss_pred:.4f}")

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, output])


def summary_fields(fits: ScalingFits) -> dict[str, Any]:
    """The fit numbers a run's summary.json records (None where a fit is missing), with the
    identification verdict so that nobody reads an unidentified exponent as a result."""
    chinchilla, holdout = fits.chinchilla, fits.holdout
    return {
        "n_runs": fits.n_runs,
        "chinchilla_E": chinchilla.E if chinchilla else None,
        "chinchilla_alpha": chinchilla.alpha if chinchilla else None,
        "chinchilla_beta": chinchilla.beta if chinchilla else None,
        "chinchilla_allocation_identified": fits.allocation_identified,
        "holdout_rel_error_chinchilla": holdout.chinchilla.max_relative_error if holdout else None,
        "holdout_rel_error_power_law": holdout.power_law.max_relative_error if holdout else None,
        "fit_flags": fits.flags(),
    }


def best_runs_by_size(table):
    """For each model size, the run with the largest token budget (the most-trained model)."""
    return table.sort_values("token_budget").groupby("preset", sort=False).tail(1).sort_values("n_params")


def synthesize_by_size(table, texts: list[str], codec_path: str, *, seed: int = 0, temperature: float = 0.8,
                       frames_per_word: int = 30, reference: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The same sentences spoken by the most-trained model of each size: one row per sentence with
    one audio column per size (and the codec's resynthesis of the real recording when given)."""
    import torch

    from workbench.codec import load_codec
    from workbench.lm.generate import SamplingConfig, synthesize
    from workbench.lm.model import load_lm

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per size would clutter the report
    codec = load_codec(codec_path)
    rows = [{"text": text, **({"reference": reference[text]} if reference and text in reference else {})} for text in texts]
    for run in best_runs_by_size(table).itertuples():
        lm = load_lm(run.model_dir)
        lm.model.eval()
        for row in rows:
            limit = frames_per_word * max(1, len(row["text"].split())) + 50
            sampling = SamplingConfig(temperature=temperature, max_new_tokens=limit, seed=seed)
            with torch.no_grad():
                [result] = synthesize(lm.model, lm.tokenizer, lm.layout, row["text"], sampling=sampling, codec=codec)
            row[run.preset] = result.wav[0] if result.wav is not None else None
    return rows


def text_gain_by_size(table, utterances, max_utterances: int = 32):
    """Text-conditioning gain (`workbench.lm.diagnostics`) of the most-trained model of each size
    on held-out utterances: how much the speech loss rises under another utterance's transcript.
    Near zero: the model continues audio without reading the text, so search on WER has nothing
    to select from."""
    import pandas as pd

    from transformers.utils import logging as hf_logging

    from workbench.lm.diagnostics import lm_text_gain
    from workbench.lm.model import load_lm

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per size would clutter the report
    rows = []
    for run in best_runs_by_size(table).itertuples():
        lm = load_lm(run.model_dir)
        gain = lm_text_gain(lm, utterances, max_utterances=max_utterances)
        rows.append({"preset": run.preset, "tokens_seen": run.tokens_seen, "loss_own_text": gain.loss_right,
                     "loss_other_text": gain.loss_wrong, "text_gain_nats": gain.gain_nats,
                     "fraction_own_text_better": gain.fraction_better, "n_utterances": gain.n_utterances})
    return pd.DataFrame(rows)


def size_columns(table) -> list[str]:
    return list(best_runs_by_size(table)["preset"])


def lm_of_best_run(table, loss_column: str = "final_valid_loss") -> str:
    """Model folder of the run with the lowest validation loss (what the search stage uses)."""
    return str(Path(table.sort_values(loss_column).iloc[0]["model_dir"]))
