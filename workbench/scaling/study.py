"""The scaling study a notebook shows: fits of a sweep's table, the held-out check, and the same
sentences synthesised by each model size.

Thin glue over `fits` and `plots` so that the notebook stays a handful of calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ScalingFits:
    """Fits of the whole sweep and the held-out predictive check (fit below the largest compute,
    predict the largest: the number that says whether a curve can be trusted)."""

    chinchilla: Any  # ChinchillaFit on every run
    power_law: Any  # PowerLawFit of the compute frontier, every run
    holdout: Any  # HoldoutCheck
    n_runs: int


def fit_sweep(table, n_bootstrap: int = 100, seed: int = 0, loss_column: str = "final_valid_loss") -> ScalingFits:
    from workbench.scaling.fits import compute_frontier, fit_chinchilla, fit_power_law, holdout_check

    n = table["n_params"].to_numpy(float)
    d = table["tokens_seen"].to_numpy(float)
    c = table["flops"].to_numpy(float)
    loss = table[loss_column].to_numpy(float)
    if len(table) < 4:
        raise ValueError(f"a scaling fit needs at least 4 runs, the sweep has {len(table)}")
    frontier = compute_frontier(c, loss)
    return ScalingFits(
        chinchilla=fit_chinchilla(n, d, loss, n_bootstrap=n_bootstrap, seed=seed),
        power_law=fit_power_law(frontier.compute, frontier.loss, n_bootstrap=n_bootstrap, seed=seed),
        holdout=holdout_check(n, d, c, loss, n_bootstrap=0, seed=seed),
        n_runs=len(table),
    )


def fit_isoflop_sweep(table, loss_column: str = "final_valid_loss"):
    """Approach 2 on an IsoFLOP sweep: a parabola of loss vs log N per FLOP budget."""
    from workbench.scaling.fits import fit_isoflop

    return fit_isoflop(table["n_params"].to_numpy(float), table["tokens_seen"].to_numpy(float),
                       table[loss_column].to_numpy(float), budgets=table["flop_budget"].to_numpy(float))


def fit_summary(fits: ScalingFits):
    """One table: fitted parameters (with bootstrap intervals) and the held-out errors."""
    import pandas as pd

    rows = []
    chinchilla, power = fits.chinchilla, fits.power_law
    for name in ("E", "A", "B", "alpha", "beta"):
        low, high = (chinchilla.bootstrap.intervals.get(name, (np.nan, np.nan)) if chinchilla.bootstrap
                     else (np.nan, np.nan))
        rows.append({"law": "Chinchilla L(N, D)", "parameter": name, "value": getattr(chinchilla, name),
                     "ci_low": low, "ci_high": high})
    for name in ("E", "A", "alpha"):
        low, high = (power.bootstrap.intervals.get(name, (np.nan, np.nan)) if power.bootstrap else (np.nan, np.nan))
        rows.append({"law": "frontier L(C)", "parameter": name, "value": getattr(power, name),
                     "ci_low": low, "ci_high": high})
    for label, prediction in (("Chinchilla L(N, D)", fits.holdout.chinchilla), ("frontier L(C)", fits.holdout.power_law)):
        rows.append({"law": label, "parameter": "held-out relative error",
                     "value": float(np.max(np.atleast_1d(prediction.relative_error))), "ci_low": np.nan, "ci_high": np.nan})
    return pd.DataFrame(rows)


def allocation_table(fits: ScalingFits, budgets_flops) -> Any:
    """Compute-optimal model size, tokens and predicted loss at each budget (Chinchilla fit)."""
    import pandas as pd

    budgets = np.asarray(budgets_flops, dtype=float)
    allocation = fits.chinchilla.optimal_allocation(budgets)
    return pd.DataFrame({"compute_flops": budgets, "n_params_opt": np.asarray(allocation.n_params),
                         "tokens_opt": np.asarray(allocation.n_tokens),
                         "loss_pred": np.asarray(fits.chinchilla.predict_optimal_loss(budgets))})


def allocation_widget(fits: ScalingFits, min_flops: float, max_flops: float):
    """A log slider over the compute budget showing the predicted optimal size, tokens and loss."""
    import ipywidgets as widgets

    slider = widgets.FloatLogSlider(value=np.sqrt(min_flops * max_flops), base=10, min=np.log10(min_flops),
                                    max=np.log10(max_flops), step=0.05, description="FLOPs",
                                    readout_format=".2e", layout=widgets.Layout(width="520px"))
    output = widgets.HTML()

    def show(change=None) -> None:  # noqa: ARG001
        row = allocation_table(fits, [slider.value]).iloc[0]
        output.value = (f"<b>C = {row.compute_flops:.3g} FLOPs</b>: optimal N ≈ {row.n_params_opt:,.0f} parameters, "
                        f"D ≈ {row.tokens_opt:,.0f} tokens, predicted loss {row.loss_pred:.4f}")

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, output])


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

    from workbench.lm.diagnostics import text_conditioning_gain
    from workbench.lm.model import load_lm

    rows = []
    for run in best_runs_by_size(table).itertuples():
        lm = load_lm(run.model_dir)
        gain = text_conditioning_gain(lm.model, lm.tokenizer, lm.layout, utterances, max_utterances=max_utterances)
        rows.append({"preset": run.preset, "tokens_seen": run.tokens_seen, "loss_own_text": gain.loss_right,
                     "loss_other_text": gain.loss_wrong, "text_gain_nats": gain.gain_nats,
                     "fraction_own_text_better": gain.fraction_better, "n_utterances": gain.n_utterances})
    return pd.DataFrame(rows)


def size_columns(table) -> list[str]:
    return list(best_runs_by_size(table)["preset"])


def lm_of_best_run(table, loss_column: str = "final_valid_loss") -> str:
    """Model folder of the run with the lowest validation loss (what the search stage uses)."""
    return str(Path(table.sort_values(loss_column).iloc[0]["model_dir"]))
