"""What the 30_search notebook shows of an ablation run: tables, metric-vs-compute curves with the
independent check beside the search verifier, gains over plain sampling, and the audio.

Reads a finished (or partial) ablation run directory; no model is loaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("wer", "check_wer", "sim", "check_sim", "dnsmos")
COMPUTE = ("tokens_generated", "decodes", "verifier_calls", "lm_flops", "wall_s")


def load_results(run_dir: str | Path):
    import pandas as pd

    from workbench.search.ablation.config import RESULTS_FILE

    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results yet; run the ablation first")
    return pd.read_csv(path)


def arm_table(results):
    """One row per arm (strategy x budget x verifier): mean metrics and mean compute per sentence."""
    columns = [c for c in (*METRICS, "score", "check_score", *COMPUTE) if c in results]
    table = results.groupby(["strategy", "budget", "verifier"], as_index=False)[columns].mean(numeric_only=True)
    table.insert(3, "n", results.groupby(["strategy", "budget", "verifier"]).size().to_numpy())
    return table.sort_values(["strategy", "verifier", "budget"]).reset_index(drop=True)


def gains_over_sampling(results, metric: str):
    """Relative change of `metric` against plain sampling on the same sentences, per arm
    (negative = lower; for WER lower is better, for SIM higher is better)."""
    import pandas as pd

    base = results[results["strategy"] == "sample"].groupby("utterance_id")[metric].mean()
    rows = []
    for (strategy, budget, verifier), group in results[results["strategy"] != "sample"].groupby(
            ["strategy", "budget", "verifier"]):
        paired = group.groupby("utterance_id")[metric].mean()
        common = paired.index.intersection(base.index)
        if len(common) == 0:
            continue
        ours, reference = paired[common].mean(), base[common].mean()
        rows.append({"strategy": strategy, "budget": budget, "verifier": verifier, "n_sentences": len(common),
                     f"sample_{metric}": reference, metric: ours,
                     "relative_change": (ours - reference) / reference if reference else np.nan})
    return pd.DataFrame(rows)


def compute_curves(results, x: str = "lm_flops"):
    """Metric vs measured compute per strategy: search-side metric (solid) beside the independent
    check (dashed), for WER and SIM. Plain sampling is the black point at the left."""
    from matplotlib.figure import Figure

    table = arm_table(results)
    figure = Figure(figsize=(11, 3.8))
    axes = figure.subplots(1, 2)
    for ax, (metric, check, label) in zip(axes, (("wer", "check_wer", "WER (lower is better)"),
                                                 ("sim", "check_sim", "speaker similarity (higher is better)"))):
        for i, ((strategy, verifier), group) in enumerate(table.groupby(["strategy", "verifier"])):
            group = group.sort_values(x)
            colour = "black" if strategy == "sample" else f"C{i}"
            name = "sample" if strategy == "sample" else f"{strategy} [{verifier}]"
            marker = "s" if strategy == "sample" else "o"
            if metric in group and group[metric].notna().any():
                ax.plot(group[x], group[metric], marker=marker, color=colour, label=f"{name}")
            if check in group and group[check].notna().any():
                ax.plot(group[x], group[check], marker=marker, linestyle="--", color=colour, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlabel(f"{x} per sentence (measured)")
        ax.set_title(f"{label}\nsolid: metric verifier, dashed: independent check")
    axes[0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def listening_rows(run_dir: str | Path, results, strategy: str, budget: int, verifier: str | None = None,
                   max_rows: int = 4) -> list[dict[str, Any]]:
    """Per sentence: the real recording, the voice prompt, plain sampling, and the arm's best and
    worst candidates, with the arm's WER and SIM in the text columns."""
    from workbench.audio import load_audio

    run_dir = Path(run_dir)
    chosen = results[(results["strategy"] == strategy) & (results["budget"] == budget)]
    if verifier is not None:
        chosen = chosen[chosen["verifier"] == verifier]
    plain = {r.utterance_id: r.audio for r in results[results["strategy"] == "sample"].itertuples()}
    rows = []

    def clip(path: Path):
        return load_audio(path)[0][0] if path.is_file() else None

    for row in chosen.drop_duplicates("utterance_id").head(max_rows).itertuples():
        audio = run_dir / str(row.audio)
        rows.append({
            "text": row.text,
            "scores": f"WER {row.wer:.2f} / check {row.check_wer:.2f}; SIM {row.sim:.2f} / check {row.check_sim:.2f}",
            "reference": clip(run_dir / "audio" / "reference" / f"{row.utterance_id}.wav"),
            "prompt": clip(run_dir / "audio" / "prompt" / f"{row.utterance_id}.wav"),
            "sample": clip(run_dir / str(plain[row.utterance_id])) if row.utterance_id in plain else None,
            "best": clip(audio),
            "worst": clip(audio.with_suffix(".worst.wav")),
        })
    return rows


def arm_picker(run_dir: str | Path, results, sample_rate: int):
    """Dropdowns over strategy and budget that show that arm's clips (live in JupyterLab)."""
    import ipywidgets as widgets

    from workbench.report.audio import player_table

    arms = results[results["strategy"] != "sample"]
    strategy = widgets.Dropdown(options=sorted(arms["strategy"].unique()), description="strategy")
    budget = widgets.Dropdown(options=sorted(int(b) for b in arms["budget"].unique()), description="budget")
    output = widgets.HTML()

    def show(change=None) -> None:  # noqa: ARG001
        rows = listening_rows(run_dir, results, strategy.value, budget.value)
        output.value = player_table(rows, ["reference", "prompt", "sample", "best", "worst"], sample_rate,
                                    text_columns=["text", "scores"])._repr_html_()

    strategy.observe(show, names="value")
    budget.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([strategy, budget]), output])
