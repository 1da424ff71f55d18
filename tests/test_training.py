"""The trainers share one schedule and one saved random state: the LM's, the codec's and the check
models' learning-rate multipliers are the same function of the step, which matches the closed
form, and a restored random state replays the same draws."""

from __future__ import annotations

import math
import random

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
