"""torch.compile behind LMTrainConfig.compile: same training as eager (checked with the "eager"
backend, which traces every layer through Dynamo without generating kernels: inductor's CPU
compile takes a minute, see benchmarks/gpu_check.py for the timed comparison)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, write_token_shards
from workbench.lm.train import LMTrainConfig, train_lm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_lm_packing import K, utterances  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def test_compiled_packed_training_equals_eager_and_saves_plain_checkpoints(tmp_path):
    from safetensors.torch import load_file

    shards = tmp_path / "shards"
    write_token_shards(shards, utterances(120), CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    common = dict(progress=False, peak_flops_per_s=1e11, packing=True, batch_size=2, max_seq_len=256,
                  max_steps=4, lr=5e-3, eval_every=2, checkpoint_every=100)
    eager = train_lm(for_profile(LMTrainConfig, "smoke", **common), shards, run_id="eager", root=tmp_path)
    compiled = train_lm(for_profile(LMTrainConfig, "smoke", compile=True, compile_backend="eager", **common),
                        shards, run_id="compiled", root=tmp_path)
    # compiled rows are padded to max_seq_len (one shape); the padding is its own attention block
    assert compiled.tokens_seen == eager.tokens_seen
    assert compiled.final_train_loss == pytest.approx(eager.final_train_loss, abs=1e-5)
    assert compiled.final_valid_loss == pytest.approx(eager.final_valid_loss, abs=1e-5)
    a = load_file(str(Path(eager.model_dir) / "model.safetensors"))
    b = load_file(str(Path(compiled.model_dir) / "model.safetensors"))
    assert sorted(a) == sorted(b)  # no "_orig_mod." prefixes: the checkpoint is a plain HF folder
    for name in a:
        # Adam turns rounding-level gradient differences into up to ~lr-sized steps on a few entries
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-4, msg=name)
