"""Sharded training (workbench.lm.sharded, FSDP2): equal to unsharded, same checkpoint format, and
a memory estimate that matches a measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, write_token_shards
from workbench.lm.train import LMTrainConfig, train_lm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_lm_packing import K, utterances  # noqa: E402
from test_lm_train import torchrun_lm_train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def _weights(model_dir: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_fsdp_over_two_gloo_processes_equals_one_process_with_accumulation(tmp_path):
    """FSDP2 over 2 processes (batch 2 each, checkpoints gathered mid-run, one validation batch so
    that rank 1 evaluates nothing yet joins the collectives) == 1 process with 2
    accumulated micro-batches: same losses, same final weights, same HF checkpoint folder."""
    from workbench.lm.model import load_lm

    shards = tmp_path / "shards"
    write_token_shards(shards, utterances(160), CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    common = ["--profile", "smoke", "--root", str(tmp_path), "--set", "max_steps=6", "--set", "batch_size=2",
              "--set", "progress=false", "--set", "peak_flops_per_s=1e11", "--set", "checkpoint_every=3",
              "--set", "eval_every=3", "--set", "eval_batches=1", "--set", "sharding=fsdp"]
    run = torchrun_lm_train(shards, common, "fsdp", tmp_path / "fsdp.json", port_base=30500)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "per-GPU memory estimate (fsdp, 2 process(es)" in run.stderr
    single = train_lm(for_profile(LMTrainConfig, "smoke", progress=False, peak_flops_per_s=1e11, max_steps=6,
                                  batch_size=2, grad_accum=2, checkpoint_every=3, eval_every=3, eval_batches=1),
                      shards, run_id="single", root=tmp_path)
    sharded = json.loads((tmp_path / "fsdp.json").read_text())
    assert sharded["tokens_seen"] == single.tokens_seen
    assert sharded["final_train_loss"] == pytest.approx(single.final_train_loss, abs=1e-5)
    assert sharded["final_valid_loss"] == pytest.approx(single.final_valid_loss, abs=1e-5)
    a, b = _weights(single.model_dir), _weights(sharded["model_dir"])
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
    # the mid-run checkpoint holds the full (unsharded) AdamW state, like an unsharded run's
    ckpt = tmp_path / "lm" / "fsdp" / "checkpoints" / "step-0000006"
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    n_params = sum(t.numel() for t in b.values())
    assert sum(s["exp_avg"].numel() for s in state["optimizer"]["state"].values()) == n_params
    loaded = load_lm(sharded["model_dir"])
    assert type(loaded.model).__name__ == "LlamaForCausalLM"


def test_memory_estimate_matches_the_h200_measurement_and_shards_the_8b_state():
    """1B shape, 8 x 2048 tokens per micro-batch, one GPU: 55.5 GB peak measured on an H200
    (bf16 autocast, 512-token BPE + 65,536 codes). FSDP over 8 GPUs divides the 16 bytes per
    parameter of the 8B shape by 8."""
    from workbench.lm.layout import TokenLayout
    from workbench.lm.model import build_llama_config
    from workbench.lm.sharded import estimate_memory

    layout = TokenLayout(text_vocab_size=512, codebook_size=65_536)
    one_b = build_llama_config("llama-3.2-1b", layout, max_position_embeddings=2048)
    estimate = estimate_memory(one_b, world_size=1, sharding="ddp", tokens_per_micro_batch=8 * 2048)
    assert estimate.total / 1e9 == pytest.approx(55.5, rel=0.15)
    eight_b = build_llama_config("llama-3.1-8b", TokenLayout(128_256, 65_536), max_position_embeddings=2048)
    ddp = estimate_memory(eight_b, world_size=8, sharding="ddp", tokens_per_micro_batch=2 * 2048)
    fsdp = estimate_memory(eight_b, world_size=8, sharding="fsdp", tokens_per_micro_batch=2 * 2048)
    assert ddp.weights_grads_optimizer == pytest.approx(16 * ddp.n_params)
    assert fsdp.weights_grads_optimizer == pytest.approx(2 * ddp.n_params)
    assert ddp.total > 141e9 > fsdp.total  # DDP cannot fit on one H200; FSDP can
    assert for_profile(LMTrainConfig, "gpu-8b").sharding == "fsdp" == for_profile(LMTrainConfig, "gpu-3b").sharding


def test_the_documented_multinode_sbatch_is_the_shipped_script_and_its_config_is_valid():
    import re
    import shlex

    from workbench.config import from_params

    repo = Path(__file__).resolve().parents[1]
    script = (repo / "scripts" / "lm_multinode.sbatch").read_text()
    assert script in (repo / "docs" / "scale.md").read_text()
    subprocess.run(["bash", "-n", str(repo / "scripts" / "lm_multinode.sbatch")], check=True)
    args = shlex.split(script.split("-m workbench.lm.train", 1)[1].replace("\\\n", " "))
    profile = args[args.index("--profile") + 1]
    overrides = dict(item.split("=", 1) for item in (args[i + 1] for i, a in enumerate(args) if a == "--set"))
    config = from_params(LMTrainConfig, {k: int(v) for k, v in overrides.items()},
                         base=for_profile(LMTrainConfig, profile))
    nodes = int(re.search(r"--nodes=(\d+)", script).group(1))
    gpus = int(re.search(r"--gpus-per-node=(\d+)", script).group(1))
    tokens_per_step = config.batch_size * config.max_seq_len * config.grad_accum * nodes * gpus
    assert config.sharding == "fsdp" and 1.5e6 < tokens_per_step < 2.5e6  # the paper's ~2M
