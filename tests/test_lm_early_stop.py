"""Early stopping on validation loss (LMTrainConfig.early_stop_patience, workbench.training.EarlyStopping).

The planted case: validation utterances whose codes follow another function of the text than the
training ones. A tiny model first learns what both share (which tokens are speech, their
frequencies), so validation loss falls, then learns the training mapping, which is wrong for
validation, so it rises: the best model is an early one.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, TokenizedUtterance, read_token_shards, write_token_shards
from workbench.lm.train import BEST_WEIGHTS_FILE, LMTrainConfig, train_lm
from workbench.runs import read_metrics
from workbench.training import EarlyStopping

WORDS = "the a cat dog sat ran on in mat fog red big small quick brown fox jumps over lazy".split()
K = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def disagreeing_utterances(n: int, seed: int = 0) -> list[TokenizedUtterance]:
    """One utterance in four is held out, and its codes are another function of its characters."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        valid = i % 4 == 0
        codes = [(ord(ch) * 5 + 3) % K if valid else ord(ch) % K for ch in text]
        out.append(TokenizedUtterance(f"u{i:04d}", "spk", text, "valid" if valid else "train", torch.tensor(codes)))
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("overfit_shards")
    write_token_shards(out, disagreeing_utterances(40), CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    return out


def config(**overrides) -> LMTrainConfig:
    # max_steps: 40 steps of the smoke model take ~3 s; validation every 2 steps over the whole set
    base = dict(max_steps=40, eval_every=2, eval_batches=0, lr=5e-3, checkpoint_every=100, progress=False,
                peak_flops_per_s=1e11)
    return for_profile(LMTrainConfig, "smoke", **{**base, **overrides})


def valid_logs(run_dir: str) -> list[dict]:
    return [m for m in read_metrics(run_dir) if "valid_loss" in m]


def saved_model_valid_loss(model_dir: str, shards_dir: Path) -> float:
    """Mean next-token loss of the saved model over every validation target, computed here."""
    from workbench.lm.data import collate, encode_utterances
    from workbench.lm.layout import IGNORE_INDEX
    from workbench.lm.model import load_lm

    lm = load_lm(model_dir)
    _, utterances = read_token_shards(shards_dir, split="valid")
    data = encode_utterances(utterances, lm.tokenizer, lm.layout, max_seq_len=10_000)
    batch = collate(data.sequences, lm.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    targets = torch.nn.functional.pad(batch.labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    total = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                              reduction="sum")
    return float(total) / int((targets != IGNORE_INDEX).sum())


def _weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


# -- the rule ----------------------------------------------------------------------------------


def test_patience_counts_evaluations_without_an_improvement_of_min_delta():
    rule = EarlyStopping(patience=2, min_delta=0.1)
    assert rule.update(5.0, step=10) and rule.best_step == 10
    assert not rule.update(4.95, step=20)  # better, but by less than min_delta
    assert rule.update(4.8, step=30) and (rule.best_loss, rule.best_step, rule.evals_since_best) == (4.8, 30, 0)
    assert not rule.update(4.9, step=40) and not rule.stopped
    assert not rule.update(4.75, step=50) and rule.stopped and rule.best_step == 30
    assert not rule.update(1.0, step=60) and rule.best_step == 30  # stopped stays stopped
    off = EarlyStopping(patience=0)
    assert not any(off.update(loss, step) for step, loss in enumerate([5.0, 6.0, 7.0, 8.0])) and not off.stopped
    nan_first = EarlyStopping(patience=1)
    assert not nan_first.update(float("nan"), step=1) and nan_first.stopped and nan_first.best_step == -1
    again = EarlyStopping(patience=2, min_delta=0.1)
    again.load_state_dict(rule.state_dict())
    assert again == rule


@pytest.mark.parametrize("field, value", [("early_stop_patience", -1), ("early_stop_patience", 1.5),
                                          ("early_stop_min_delta", -0.01), ("early_stop_min_delta", math.nan)])
def test_bad_early_stopping_values_are_named_in_the_error(field, value):
    with pytest.raises(ValueError, match=rf"{field}'? = {value!r}"):
        config(**{field: value})
    with pytest.raises(ValueError, match="patience=-3"):
        EarlyStopping(patience=-3)


def test_early_stopping_is_off_in_every_profile():
    for profile in LMTrainConfig.PROFILES:
        assert for_profile(LMTrainConfig, profile).early_stop_patience == 0, profile


# -- training runs -------------------------------------------------------------------------------


def test_rising_valid_loss_stops_early_and_saves_the_best_model(shards, tmp_path):
    result = train_lm(config(early_stop_patience=3), shards, run_id="stops", root=tmp_path)
    logs = valid_logs(result.run_dir)
    losses = [m["valid_loss"] for m in logs]
    best = min(range(len(logs)), key=lambda i: losses[i])
    # the planted rise: validation loss fell, then rose for `patience` evaluations after the best
    assert losses[best] < losses[0] - 0.3 and len(logs) == best + 1 + 3
    assert all(loss >= losses[best] for loss in losses[best + 1:])
    assert result.stopped_early and result.completed and result.steps == logs[-1]["step"] < 40
    assert result.best_step == logs[best]["step"] and result.best_valid_loss == losses[best]
    assert result.best_tokens_seen == logs[best]["tokens_seen"] < result.tokens_seen
    assert result.best_flops == logs[best]["flops"] < result.flops
    assert result.final_valid_loss == result.best_valid_loss and result.last_valid_loss == losses[-1]
    # the saved model is the best evaluation's, not the last step's
    saved_loss = saved_model_valid_loss(result.model_dir, shards)
    assert saved_loss == pytest.approx(losses[best], abs=1e-5)
    assert saved_loss < losses[-1] - 0.1
    run_dir = Path(result.run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stopped_early"], summary["best_step"], summary["best_tokens_seen"]) == \
        (True, result.best_step, result.best_tokens_seen)
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "model" / "workbench_lm.json").read_text())["step"] == result.best_step
    # a rerun reuses the finished run: no step is trained again, the same model comes back
    from workbench.scaling.sweep import finished_summary

    assert finished_summary(run_dir) is not None
    n_records = len(read_metrics(run_dir))
    again = train_lm(config(early_stop_patience=3), shards, run_id="stops", root=tmp_path)
    assert (again.steps, again.best_step, again.final_valid_loss) == (result.steps, result.best_step,
                                                                      result.final_valid_loss)
    assert not [m for m in read_metrics(run_dir)[n_records:] if "train_loss" in m or "valid_loss" in m]
    a, b = _weights(result.model_dir), _weights(again.model_dir)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_early_stopping_off_trains_to_the_budget_and_keeps_the_last_weights(shards, tmp_path):
    result = train_lm(config(), shards, run_id="off", root=tmp_path)
    losses = [m["valid_loss"] for m in valid_logs(result.run_dir)]
    assert result.steps == 40 and not result.stopped_early and result.best_step is None
    assert min(losses) < losses[-1] - 0.1  # the same rise, ignored
    assert result.final_valid_loss == losses[-1]
    assert saved_model_valid_loss(result.model_dir, shards) == pytest.approx(losses[-1], abs=1e-5)
    checkpoint = Path(result.run_dir) / "checkpoints" / "step-0000040"
    assert not (checkpoint / BEST_WEIGHTS_FILE).exists()
    assert "early_stop" not in torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    # a run made before these fields existed (its config.yaml lacks them) reopens under its run id
    import yaml

    config_path = Path(result.run_dir) / "config.yaml"
    old = {k: v for k, v in yaml.safe_load(config_path.read_text()).items() if not k.startswith("early_stop")}
    config_path.write_text(yaml.safe_dump(old, sort_keys=False))
    again = train_lm(config(), shards, run_id="off", root=tmp_path)
    assert (again.steps, again.final_valid_loss) == (40, result.final_valid_loss)


def test_resume_after_interruption_stops_where_the_uninterrupted_run_does(shards, tmp_path):
    # interrupted after the best evaluation and before the stop: the resumed run must take its
    # best weights, best loss and patience count from the checkpoint
    common = config(early_stop_patience=3, checkpoint_every=4)
    straight = train_lm(common, shards, run_id="straight", root=tmp_path)
    stop_at = straight.best_step + 3  # one evaluation without improvement done, the next not yet
    assert straight.stopped_early and stop_at < straight.steps
    partial = train_lm(common, shards, run_id="resumed", root=tmp_path, stop_after_steps=stop_at)
    assert not partial.completed and partial.steps == stop_at
    resumed = train_lm(common, shards, run_id="resumed", root=tmp_path)
    for field in ("steps", "tokens_seen", "best_step", "best_tokens_seen", "stopped_early"):
        assert getattr(resumed, field) == getattr(straight, field), field
    assert resumed.best_valid_loss == pytest.approx(straight.best_valid_loss, abs=1e-6)
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def test_early_stopping_without_a_validation_set_is_refused(tmp_path):
    shards = tmp_path / "no_valid"
    train_only = [TokenizedUtterance(u.utterance_id, u.speaker, u.text, "train", u.codes)
                  for u in disagreeing_utterances(12)]
    write_token_shards(shards, train_only, CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    with pytest.raises(ValueError, match="early_stop_patience=2 needs a validation set"):
        train_lm(config(early_stop_patience=2, valid_fraction=0.0), shards, run_id="nv", root=tmp_path)


# -- the sweep -----------------------------------------------------------------------------------


def test_sweep_passes_early_stopping_to_every_point_and_off_leaves_the_points_unchanged():
    from workbench.scaling.sweep import SweepConfig, sweep_points

    base = dict(sizes=("cpu-0.1m", "cpu-1m"), token_budgets=(1000, 2000), train_profile="smoke")
    off = sweep_points(SweepConfig(**base))
    on = sweep_points(SweepConfig(**base, early_stop_patience=4, early_stop_min_delta=0.01))
    assert all((p.train_config.early_stop_patience, p.train_config.early_stop_min_delta) == (4, 0.01) for p in on)
    assert all(p.train_config == for_profile(LMTrainConfig, "smoke", preset=p.preset, token_budget=p.token_budget,
                                             seed=0, progress=False) for p in off)
    assert {p.run_id for p in on}.isdisjoint(p.run_id for p in off)
    with pytest.raises(ValueError, match="SweepConfig.early_stop_patience = -2"):
        SweepConfig(early_stop_patience=-2)


def test_the_fits_take_d_and_c_at_the_best_step_of_runs_that_kept_an_earlier_model():
    """A planted Chinchilla surface whose loss is that of the tokens at each run's best step, while
    the runs with larger budgets stopped relatively earlier (consumed D^1.5 / 1000, up to 100x their
    best): the fit finds the planted beta only on the tokens at the best (on the consumed ones it
    would read beta / 1.5)."""
    import numpy as np
    import pandas as pd

    from workbench.scaling import study

    n, d_best = (a.ravel() for a in np.meshgrid(np.geomspace(1e5, 1e9, 6), np.geomspace(1e6, 1e10, 5)))
    consumed = d_best**1.5 / 1e3
    stopped = consumed > d_best
    table = pd.DataFrame({"n_params": n, "tokens_seen": consumed, "flops": 6 * n * consumed,
                          "best_tokens_seen": [b if s else None for b, s in zip(d_best, stopped)],
                          "best_flops": [6 * x * b if s else None for x, b, s in zip(n, d_best, stopped)],
                          "final_valid_loss": 1.7 + 400.0 * n ** -0.34 + 410.0 * d_best ** -0.28,
                          "token_budget": consumed, "preset": [f"size-{int(x)}" for x in n]})
    np.testing.assert_array_equal(study.trained_tokens(table), d_best)
    np.testing.assert_allclose(study.trained_flops(table), 6 * n * d_best)
    fits = study.fit_sweep(table, n_bootstrap=0, seed=0)
    assert fits.chinchilla.beta == pytest.approx(0.28, abs=0.01)
    assert fits.chinchilla.alpha == pytest.approx(0.34, abs=0.01)
    consumed_only = study.fit_sweep(table.drop(columns=["best_tokens_seen", "best_flops"]), n_bootstrap=0, seed=0)
    assert consumed_only.chinchilla.beta == pytest.approx(0.28 / 1.5, abs=0.01)


def test_a_sweep_with_early_stopping_reports_the_stopped_points_at_their_best_and_reuses_them(shards, workdirs):
    from workbench.scaling import study
    from workbench.scaling.sweep import SweepConfig, run_sweep

    config = for_profile(SweepConfig, "smoke", sizes=("cpu-0.1m",), token_budgets=(20_000,), sequence_layout="",
                         early_stop_patience=2)
    first = run_sweep(config, shards, progress=False)
    assert not first.failed and len(first.table) == 1
    row = first.table.iloc[0]
    assert row["stopped_early"] and row["tokens_seen"] < 20_000
    assert row["best_tokens_seen"] < row["tokens_seen"] and row["final_valid_loss"] == row["best_valid_loss"]
    assert study.trained_tokens(first.table)[0] == row["best_tokens_seen"]
    assert row["compute"] == row["best_flops"] < row["flops"]
    again = run_sweep(config, shards, progress=False)
    assert again.n_reused == 1 and again.table.iloc[0]["best_step"] == row["best_step"]
