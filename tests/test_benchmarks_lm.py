"""benchmarks/lm_speed.py in its quick mode: it runs end to end and reports finite ratios."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "lm_speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("lm_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through it
    spec.loader.exec_module(module)
    return module


def test_step_durations_pick_the_timed_steps():
    lm_speed = _load()
    # stamps after steps 1..4; one warm-up step: steps 2, 3, 4 are timed
    assert lm_speed.step_durations([10.0, 11.0, 13.0, 16.0], warmup_steps=1, steps=3) == [1.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match="expected 4 optimizer steps"):
        lm_speed.step_durations([1.0, 2.0], warmup_steps=1, steps=3)


@pytest.mark.slow
def test_quick_run_reports_every_ratio(capsys):
    lm_speed = _load()
    threads = torch.get_num_threads()
    result = lm_speed.main(["--quick", "--preset", "cpu-0.1m"])
    assert torch.get_num_threads() == threads  # restored
    names = [row.name for row in result.rows]
    assert names == ["train tokens/s: workbench train_lm loop", "train MFU: workbench loop FLOP/s",
                     "train MFU: bare loop FLOP/s", "train tokens/s: own-sample input noise",
                     "generate tokens/s: KV cache",
                     "best-of-8 samples/s: one batched generate", "sample tokens/s: lean loop, batch 1",
                     "sample tokens/s: lean loop, best-of-8"]
    for row in result.rows:
        assert math.isfinite(row.ratio) and row.ratio > 0, row
    assert result.overhead_ms and all(math.isfinite(v) for v in result.overhead_ms.values())
    printed = capsys.readouterr().out
    assert "bare fwd/bwd/AdamW loop" in printed and "fp32 matmul peak" in printed
    assert "identical samples to model.generate with seed 0: yes" in printed
