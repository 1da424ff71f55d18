"""The trainers share one schedule, one saved random state and one way to stop early: the LM's,
the codec's and the check models' learning-rate multipliers are the same function of the step,
which matches the closed form, a restored random state replays the same draws, and each of the
four stopped by `stop_after_steps` returns an incomplete result, leaves its run interrupted and
resumable, and finishes it when called again."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from workbench.checkmodels import asr_train, speaker_train
from workbench.codec.train import lr_lambda
from workbench.config import for_profile
from workbench.lm.train import CosineWithWarmup
from workbench.training import WarmupCosine, rng_state, set_rng_state, warmup_cosine


def test_the_schedule_matches_its_closed_form_at_planted_steps():
    assert warmup_cosine(0, 10, 110, 0.1) == pytest.approx(0.1)  # first warm-up step
    assert warmup_cosine(9, 10, 110, 0.1) == pytest.approx(1.0)  # warm-up done
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 110, 0.1) == pytest.approx(0.1)  # flat after the end, never rising
    assert warmup_cosine(0, 0, 100, 0.0) == pytest.approx(1.0)  # no warm-up


def test_every_trainer_uses_the_same_schedule():
    steps = range(0, 400, 7)
    asr = for_profile(asr_train.ASRTrainConfig, "smoke", warmup_steps=20, max_steps=300)
    speaker = for_profile(speaker_train.SpeakerTrainConfig, "smoke", warmup_steps=20, max_steps=300)
    reference = [warmup_cosine(s, 20, 300, asr.min_lr_ratio) for s in steps]
    assert [asr_train._lr_multiplier(s, asr) for s in steps] == reference
    assert [lr_lambda(20, 300, asr.min_lr_ratio)(s) for s in steps] == reference
    assert [speaker_train._lr_multiplier(s, speaker) for s in steps] == [
        warmup_cosine(s, 20, 300, speaker.min_lr_ratio) for s in steps]
    lm = CosineWithWarmup(total_steps=300, warmup_frac=20 / 300, min_ratio=0.1)
    assert [lm(s) for s in steps] == [warmup_cosine(s, 20, 300, 0.1) for s in steps]


def test_the_schedule_object_survives_a_lambda_lr_state_round_trip():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(5, 50, 0.2))
    for _ in range(12):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, WarmupCosine(1, 2, 0.9))
    fresh.load_state_dict(state)
    assert fresh.lr_lambdas[0] == WarmupCosine(5, 50, 0.2)
    assert fresh.get_last_lr() == scheduler.get_last_lr()


def test_a_restored_random_state_replays_the_same_draws():
    saved = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(saved)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


# -- stopping early: one behaviour for the four trainers -----------------------------------------

MIRROR = Path("/work/shared/data")


@pytest.fixture(scope="module")
def stop_inputs(tmp_path_factory) -> dict[str, Path]:
    """The smallest real inputs of each trainer: LM token shards, a 3-clip codec corpus and the
    check models' tiny prepared Kathleen + VCTK corpora."""
    from test_codec_train import make_corpus
    from test_lm_train import K, synthetic_utterances
    from test_trained_verifiers import write_tiny_data

    from workbench.data.token_shards import CodecInfo, write_token_shards

    root = tmp_path_factory.mktemp("stop_inputs")
    write_token_shards(root / "shards", synthetic_utterances(40), CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    return {"shards": root / "shards", "corpus": make_corpus(root / "corpus", n_train=2, n_valid=1, n_test=0),
            "data": write_tiny_data(root / "data")}


def _trainer(name: str, inputs: dict[str, Path], runs: Path) -> tuple[Callable[[str, int | None], Any], str]:
    """(train(run_id, stop_after_steps) -> result, the final artefact in the run directory) of a
    3-step run of trainer `name`, checkpointing only at the end and where it stops."""
    if name == "lm":
        from test_lm_train import tiny_config

        from workbench.lm.train import train_lm

        config = tiny_config(max_steps=3, checkpoint_every=100, eval_every=100, log_every=1)
        return (lambda run_id, stop: train_lm(config, inputs["shards"], run_id=run_id, root=runs,
                                              stop_after_steps=stop)), "model"
    if name == "codec":
        from test_codec_train import tiny

        from workbench.codec import train_codec

        config = tiny(max_steps=3, checkpoint_every=100, eval_every=100, use_gan=False)
        return (lambda run_id, stop: train_codec(config, inputs["corpus"], run_id=run_id, root=runs,
                                                 stop_after_steps=stop, progress=False)), "codec.pt"
    if name == "asr":
        from test_trained_verifiers import _asr_config

        config = _asr_config(inputs["data"], width=32, n_blocks=1, max_steps=3, checkpoint_every=100,
                             eval_every=100, log_every=1, max_eval_utterances=1)
        return (lambda run_id, stop: asr_train.train_asr(config, run_id=run_id, root=runs,
                                                         stop_after_steps=stop)), "model.pt"
    from test_trained_verifiers import _speaker_config

    config = _speaker_config(inputs["data"], max_steps=3, checkpoint_every=100, log_every=1,
                             max_eval_clips_per_speaker=1)
    return (lambda run_id, stop: speaker_train.train_speaker(config, run_id=run_id, root=runs,
                                                             stop_after_steps=stop)), "model.pt"


@pytest.mark.skipif(not (MIRROR / "kathleen" / "transcripts.tsv").exists(), reason="shared speech data absent")
@pytest.mark.parametrize("name", ["lm", "codec", "asr", "speaker"])
def test_every_trainer_stops_early_the_same_way_and_resumes(name, stop_inputs, tmp_path, one_torch_thread):
    from workbench.runs import read_metrics

    train, artefact = _trainer(name, stop_inputs, tmp_path / "runs")
    with pytest.raises(ValueError, match="stop_after_steps=0"):
        train("bad", 0)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made

    partial = train("split", 2)  # returns (nothing raised) its usual typed result
    run_dir = Path(partial.run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert partial.steps == 2 and partial.completed is False
    assert meta["status"] == "interrupted" and meta["error"] == "stop_after_steps=2 reached"
    assert summary["steps"] == 2 and summary["completed"] is False
    assert not (run_dir / artefact).exists()  # only a finished run writes its model

    # a stop at the run's own end is no stop: the resumed run finishes
    resumed = train("split", 3)
    assert type(resumed) is type(partial) and resumed.steps == 3 and resumed.completed is True
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "summary.json").read_text())["completed"] is True
    assert (run_dir / artefact).exists()
    # it continued from the checkpoint written where it stopped
    assert [m["step"] for m in read_metrics(run_dir) if m.get("event") == "resumed"] == [2]
