import json

import pytest
import torch

from workbench.align.forced import UnitAlignment, save_alignments, text_units
from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards
from workbench.scaling.sweep import SweepConfig, run_sweep, sweep_points


@pytest.fixture
def shards(tmp_path):
    """Learnable synthetic tokens: each word maps to a fixed code pattern, so loss can fall."""
    words = ["red", "green", "blue", "cat", "dog", "sun"]
    generator = torch.Generator().manual_seed(0)
    utterances = []
    for i in range(60):
        chosen = [words[j] for j in torch.randint(0, len(words), (4,), generator=generator).tolist()]
        codes = torch.cat([torch.arange(5) + 5 * words.index(w) for w in chosen])
        split = "valid" if i % 10 == 0 else "train"
        utterances.append(TokenizedUtterance(f"u{i:03d}", "s", " ".join(chosen), split, codes))
    write_token_shards(tmp_path / "shards", utterances, CodecInfo(codebook_size=32, frame_rate_hz=50, sample_rate=16000))
    # The smoke and cpu sweeps train the interleaved layout: its durations, each word's 5 frames
    # shared among its characters (the space before a word takes none; the ends take what is left).
    alignments = {}
    for u in utterances:
        units = text_units(u.text)
        frames = [0] * len(units)
        position = 1
        for word in u.text.split():
            share = [5 // len(word) + (1 if k < 5 % len(word) else 0) for k in range(len(word))]
            frames[position:position + len(word)] = share
            position += len(word) + 1
        alignments[u.utterance_id] = UnitAlignment(u.utterance_id, units, tuple(frames))
    save_alignments(tmp_path / "shards" / "alignments.json", alignments, {}, {})
    return tmp_path / "shards"


def test_grid_has_deterministic_distinct_run_ids():
    config = for_profile(SweepConfig, "cpu")
    points = sweep_points(config)
    assert len(points) == len(config.sizes) * len(config.token_budgets) >= 12
    assert len({p.run_id for p in points}) == len(points)
    assert [p.run_id for p in points] == [p.run_id for p in sweep_points(config)]


def test_sweep_runs_points_and_relaunch_reuses_them(shards, workdirs):
    config = for_profile(SweepConfig, "smoke")
    first = run_sweep(config, shards, progress=False)
    assert not first.failed and len(first.table) == 6 and first.n_reused == 0
    table = first.table
    assert (table["tokens_seen"] >= table["token_budget"]).all()
    # more parameters -> more FLOPs at equal tokens; more tokens -> more FLOPs at equal size
    for _, group in table.groupby("preset"):
        assert group.sort_values("token_budget")["flops"].is_monotonic_increasing
    # mark one point as interrupted: the relaunch reruns that one only
    victim = workdirs / "runs" / "lm" / table["run_id"].iloc[0]
    meta = json.loads((victim / "meta.json").read_text())
    meta["status"] = "interrupted"
    (victim / "meta.json").write_text(json.dumps(meta))
    second = run_sweep(config, shards, progress=False)
    assert second.n_reused == 5 and len(second.table) == 6 and not second.failed


def test_isoflop_grid_spends_each_budget_at_every_size():
    config = SweepConfig(sizes=("cpu-0.1m", "cpu-1m"), grid="isoflop", flop_budgets=(1e12, 4e12))
    n_params = {"cpu-0.1m": 3e5, "cpu-1m": 1.4e6}
    points = sweep_points(config, n_params_of=n_params.get)
    assert len(points) == 4
    for p in points:
        assert abs(6 * n_params[p.preset] * p.token_budget - p.flop_budget) / p.flop_budget < 1e-5
    assert {p.flop_budget for p in points} == {1e12, 4e12}


def test_width_rule_scales_each_sizes_learning_rate_inversely_with_its_width_and_layout_reaches_every_point():
    from workbench.lm.presets import get_preset

    base = SweepConfig(sizes=("cpu-0.1m", "cpu-1m", "cpu-7m"), token_budgets=(1000,), train_profile="smoke")
    constant = sweep_points(base)
    scaled = sweep_points(SweepConfig(**{**base.__dict__, "lr_rule": "width", "lr_reference_width": 128,
                                         "sequence_layout": "interleaved"}))
    lr0 = constant[0].train_config.lr
    assert {p.train_config.lr for p in constant} == {lr0}
    for point in scaled:
        assert point.train_config.lr == pytest.approx(lr0 * 128 / get_preset(point.preset).d_model)
        assert (point.train_config.sequence_layout, point.train_config.text_frontend) == ("interleaved", "chars")
    assert scaled[1].train_config.lr == pytest.approx(lr0)  # cpu-1m is the reference width
    assert {p.run_id for p in scaled}.isdisjoint(p.run_id for p in constant)


def test_the_final_lm_is_the_ladders_recipe_at_its_own_size_budget_and_noise_and_off_by_default():
    from workbench.scaling.sweep import final_point

    assert final_point(SweepConfig()) is None and final_point(for_profile(SweepConfig, "gpu-1b")) is None
    config = SweepConfig(sizes=("cpu-0.1m", "cpu-1m"), token_budgets=(1000,), train_profile="smoke", lr_rule="width",
                         sequence_layout="interleaved", final_preset="cpu-1m", final_token_budget=5000,
                         final_speech_input_noise=0.3)
    final = final_point(config, "abc")
    ladder = {p.preset: p for p in sweep_points(config, data_key="abc")}
    assert (final.preset, final.token_budget, final.train_config.speech_input_noise) == ("cpu-1m", 5000, 0.3)
    # everything else is the ladder's point of that size (layout, lr rule, profile)
    import dataclasses

    same = dataclasses.replace(final.train_config, token_budget=1000, speech_input_noise=0.0)
    assert same == ladder["cpu-1m"].train_config
    assert final.run_id not in {p.run_id for p in ladder.values()} and final.run_id.endswith("-abc")
    assert final_point(dataclasses.replace(config, final_speech_input_noise=0.2), "abc").run_id != final.run_id


@pytest.mark.parametrize("fields", [dict(final_preset="cpu-1m"), dict(final_token_budget=1000),
                                    dict(final_preset="cpu-1m", final_token_budget=1000, final_speech_input_noise=1.0)])
def test_a_half_set_or_bad_final_lm_is_refused_by_name(fields):
    with pytest.raises(ValueError, match="final_"):
        SweepConfig(**fields)


def test_the_final_lm_trains_once_and_is_reused(shards, workdirs):
    from workbench.scaling.sweep import train_final_lm

    config = for_profile(SweepConfig, "smoke")
    first = train_final_lm(config, shards, progress=False)
    assert first["completed"] and first["tokens_seen"] >= config.final_token_budget
    again = train_final_lm(config, shards, progress=False)
    assert again["run_id"] == first["run_id"] and again["wall_s"] == first["wall_s"]  # read back, not retrained
