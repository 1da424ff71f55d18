"""LM data pipeline and training loop (workbench.lm.data / train)."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.config import ConfigError, for_profile
from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards
from workbench.lm.data import BatchStream, encode_utterances, epoch_batches, split_utterances
from workbench.lm.layout import IGNORE_INDEX
from workbench.lm.text_tokenizer import train_text_tokenizer
from workbench.lm.train import CosineWithWarmup, LMTrainConfig, LMTrainResult, train_lm

WORDS = "the a cat dog sat ran on in mat fog red big small quick brown fox jumps over lazy".split()
K = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def synthetic_utterances(n: int, seed: int = 0, valid_every: int = 10) -> list[TokenizedUtterance]:
    """Codes are a fixed function of the text's characters, so there is something to learn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        codes = [v for ch in text for v in (ord(ch) % K, (ord(ch) * 7) % K)]
        split = "valid" if valid_every and i % valid_every == 0 else "train"
        out.append(TokenizedUtterance(f"u{i:04d}", "spk", text, split, torch.tensor(codes)))
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_token_shards(out, synthetic_utterances(160), CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    return out


def tiny_config(**overrides) -> LMTrainConfig:
    return for_profile(LMTrainConfig, "smoke", progress=False, peak_flops_per_s=1e11, **overrides)


# -- data ---------------------------------------------------------------------------------------


def test_encode_drop_and_truncate_counts():
    utts = synthetic_utterances(30, valid_every=0)
    lm_tok = train_text_tokenizer([u.text for u in utts], K, 300)
    full = encode_utterances(utts, lm_tok.tokenizer, lm_tok.layout, max_seq_len=10_000)
    cap = sorted(full.lengths)[15]
    dropped = encode_utterances(utts, lm_tok.tokenizer, lm_tok.layout, cap, "drop")
    n_long = sum(n > cap for n in full.lengths)
    assert dropped.n_dropped == n_long and len(dropped) == 30 - n_long
    assert max(dropped.lengths) <= cap
    cut = encode_utterances(utts, lm_tok.tokenizer, lm_tok.layout, cap, "truncate")
    assert cut.n_truncated == n_long and len(cut) == 30 and max(cut.lengths) == cap
    # a truncated sequence keeps its first tokens and labels unchanged
    long_index = next(i for i, n in enumerate(full.lengths) if n > cap)
    assert cut.sequences[long_index].input_ids == full.sequences[long_index].input_ids[:cap]
    assert cut.sequences[long_index].labels == full.sequences[long_index].labels[:cap]


def test_split_uses_labels_else_stable_hash():
    utts = synthetic_utterances(50)
    train, valid = split_utterances(utts)
    assert len(valid) == 5 and all(u.split == "valid" for u in valid) and len(train) == 45
    unlabelled = synthetic_utterances(400, valid_every=0)
    train, valid = split_utterances(unlabelled, valid_fraction=0.1)
    assert 20 <= len(valid) <= 60 and len(train) + len(valid) == 400
    again = split_utterances(list(reversed(unlabelled)), valid_fraction=0.1)[1]
    assert {u.utterance_id for u in again} == {u.utterance_id for u in valid}


def test_batches_cover_epoch_and_padding_is_masked():
    utts = synthetic_utterances(37, valid_every=0)
    lm_tok = train_text_tokenizer([u.text for u in utts], K, 300)
    data = encode_utterances(utts, lm_tok.tokenizer, lm_tok.layout)
    batches = epoch_batches(data.lengths, 4, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(37))
    assert batches != epoch_batches(data.lengths, 4, seed=1, epoch=1)
    stream = BatchStream(data, 4, pad_token_id=lm_tok.tokenizer.pad_token_id, seed=1)
    batch = next(stream)
    assert batch.n_tokens == int(batch.attention_mask.sum())
    padded = batch.attention_mask == 0
    assert bool((batch.labels[padded] == IGNORE_INDEX).all())
    # targets: the start token (predicted from the prompt), the codes and the end token
    expected_targets = sum(len(data.sequences[i].input_ids) - data.sequences[i].input_ids.index(
        lm_tok.layout.speech_generation_start) for i in batches[0])
    assert batch.n_loss_tokens == expected_targets


def test_stream_resume_and_rank_partition():
    utts = synthetic_utterances(41, valid_every=0)
    lm_tok = train_text_tokenizer([u.text for u in utts], K, 300)
    data = encode_utterances(utts, lm_tok.tokenizer, lm_tok.layout)
    pad = lm_tok.tokenizer.pad_token_id
    straight = BatchStream(data, 3, pad, seed=5)
    reference = [next(straight).input_ids for _ in range(25)]  # crosses an epoch boundary
    first = BatchStream(data, 3, pad, seed=5)
    for _ in range(9):
        next(first)
    resumed = BatchStream(data, 3, pad, seed=5)
    resumed.load_state_dict(first.state_dict())
    assert all(torch.equal(next(resumed).input_ids, ref) for ref in reference[9:])
    # Two ranks interleave the batches one process sees in order (within an epoch of even length).
    ranks = [BatchStream(data, 3, pad, seed=5, rank=r, world_size=2) for r in range(2)]
    for step in range(6):
        for r in range(2):
            assert torch.equal(next(ranks[r]).input_ids, reference[2 * step + r])
    with pytest.raises(ValueError, match="batch_size"):
        BatchStream(data, 4, pad, seed=5).load_state_dict(first.state_dict())


# -- loop pieces -----------------------------------------------------------------------------


def test_cosine_schedule_shape():
    schedule = CosineWithWarmup(total_steps=200, warmup_frac=0.03, min_ratio=0.1)
    assert schedule.warmup_steps == 6
    assert schedule(0) == pytest.approx(1 / 6) and schedule(5) == pytest.approx(1.0)
    assert schedule(6) == pytest.approx(1.0)
    assert schedule(103) == pytest.approx(0.55)  # half-way through the cosine: (1 + 0.1) / 2
    assert schedule(200) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)
    values = [schedule(s) for s in range(6, 201)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_config_profiles_and_validation():
    smoke = for_profile(LMTrainConfig, "smoke")
    assert smoke.preset == "cpu-0.1m" and smoke.beta2 == 0.95 and smoke.weight_decay == 0.01
    assert for_profile(LMTrainConfig, "gpu-1b").preset == "llama-3.2-1b"
    with pytest.raises(ConfigError, match="token_budget"):
        for_profile(LMTrainConfig, "smoke", token_budgt=5)
    with pytest.raises(ValueError, match="grad_accum"):
        for_profile(LMTrainConfig, "smoke", grad_accum=0)
    # picklable for process pools: function, config and result
    assert pickle.loads(pickle.dumps(train_lm)) is train_lm
    assert pickle.loads(pickle.dumps(smoke)) == smoke


# -- training runs -------------------------------------------------------------------------------


def test_train_learns_and_reports_budget_and_flops(shards, tmp_path):
    from workbench.lm.flops import count_params
    from workbench.lm.model import load_lm
    from workbench.runs import read_metrics

    config = tiny_config(token_budget=5_000, lr=5e-3)
    result = train_lm(config, shards, run_id="learn", root=tmp_path)
    assert isinstance(result, LMTrainResult)
    metrics = read_metrics(result.run_dir)
    start = metrics[0]
    train_logs = [m for m in metrics if "train_loss" in m]
    valid_logs = [m for m in metrics if "valid_loss" in m]
    # learns: loss well below the uniform-guess level over the speech vocabulary
    assert train_logs[0]["train_loss"] > math.log(K) and result.final_valid_loss < math.log(K) - 0.5
    assert valid_logs[-1]["valid_loss"] < valid_logs[0]["valid_loss"]
    # token budget: stops on the first step that reaches it
    assert result.tokens_seen >= 5_000 and result.tokens_seen < 5_000 + 4 * 200
    # FLOPs: both N's, consistent with the analytic formula at the mean sequence length
    loaded = load_lm(result.model_dir)
    counts = count_params(loaded.model.config)
    assert (result.n_params, result.n_params_non_embedding) == (counts.n_params, counts.n_params_non_embedding)
    assert result.flops > result.flops_non_embedding > 6 * counts.n_params_non_embedding * result.tokens_seen
    assert result.flops - result.flops_non_embedding == pytest.approx(
        6 * (counts.n_params - counts.n_params_non_embedding) * result.tokens_seen)
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    for key in ("n_params", "n_params_non_embedding", "tokens_seen", "flops", "flops_non_embedding",
                "final_train_loss", "final_valid_loss", "wall_s", "tokens_per_s"):
        assert key in summary, key
    assert start["n_train_sequences"] == 144 and train_logs[-1]["mfu"] > 0
    assert json.loads((Path(result.run_dir) / "meta.json").read_text())["status"] == "finished"
    assert loaded.codec.codebook_size == K


def _weights(model_dir: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_resume_matches_uninterrupted_run(shards, tmp_path):
    config = tiny_config(max_steps=8, checkpoint_every=4, eval_every=4, log_every=1, lr=5e-3)
    straight = train_lm(config, shards, run_id="straight", root=tmp_path)
    partial = train_lm(config, shards, run_id="resumed", root=tmp_path, stop_after_steps=4)
    assert partial.steps == 4 and not partial.completed
    meta = json.loads((tmp_path / "lm" / "resumed" / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    resumed = train_lm(config, shards, run_id="resumed", root=tmp_path)
    assert resumed.steps == straight.steps == 8
    assert resumed.tokens_seen == straight.tokens_seen
    assert resumed.final_train_loss == pytest.approx(straight.final_train_loss, abs=1e-6)
    assert resumed.final_valid_loss == pytest.approx(straight.final_valid_loss, abs=1e-6)
    assert resumed.flops == straight.flops
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    # and training did move the weights: resumed != its own step-4 checkpoint
    ckpts = sorted((tmp_path / "lm" / "resumed" / "checkpoints").glob("step-*"))
    assert [p.name for p in ckpts] == ["step-0000004", "step-0000008"]
    mid = _weights(str(ckpts[0]))
    assert max(float((mid[n] - b[n]).abs().max()) for n in b) > 1e-4


@pytest.mark.slow
def torchrun_lm_train(shards: Path, args: list[str], run_id: str, result_json: Path,
                      port_base: int) -> subprocess.CompletedProcess:
    """`python -m workbench.lm.train` under torchrun with 2 gloo processes, one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(port_base + os.getpid() % 1000)]
    return subprocess.run(torchrun + ["-m", "workbench.lm.train", str(shards), *args, "--run-id", run_id,
                                      "--result-json", str(result_json)],
                          capture_output=True, text=True, timeout=300, env=env)


def test_torchrun_two_processes_equals_gradient_accumulation(shards, tmp_path):
    """DDP over 2 gloo processes (batch 2 each) == 1 process with 2 accumulated micro-batches."""
    common = ["--profile", "smoke", "--root", str(tmp_path), "--set", "max_steps=6",
              "--set", "batch_size=2", "--set", "progress=false", "--set", "peak_flops_per_s=1e11",
              "--set", "checkpoint_every=100", "--set", "eval_every=3"]
    ddp = torchrun_lm_train(shards, common, "ddp", tmp_path / "ddp.json", port_base=29500)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = train_lm(tiny_config(max_steps=6, batch_size=2, grad_accum=2, checkpoint_every=100,
                                  eval_every=3), shards, run_id="single", root=tmp_path)
    ddp_result = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp_result["tokens_seen"] == single.tokens_seen
    assert ddp_result["final_train_loss"] == pytest.approx(single.final_train_loss, abs=1e-5)
    assert ddp_result["final_valid_loss"] == pytest.approx(single.final_valid_loss, abs=1e-5)
    a, b = _weights(single.model_dir), _weights(ddp_result["model_dir"])
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
    assert json.loads((tmp_path / "lm" / "ddp" / "summary.json").read_text())["world_size"] == 2


def test_init_from_checkpoint_starts_from_its_weights(shards, tmp_path):
    source = train_lm(tiny_config(max_steps=3), shards, run_id="source", root=tmp_path)
    # lr ~ 0: one step must leave the source weights in place (and reuse its tokenizer)
    tuned = train_lm(tiny_config(max_steps=1, lr=1e-12, init_from=source.model_dir), shards,
                     run_id="tuned", root=tmp_path)
    a, b = _weights(source.model_dir), _weights(tuned.model_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-8, msg=name)
    fresh = _weights(train_lm(tiny_config(max_steps=1, lr=1e-12, seed=1), shards, run_id="fresh",
                              root=tmp_path).model_dir)
    assert max(float((fresh[n] - a[n]).abs().max()) for n in a) > 1e-3


def test_text_conditioning_gain_separates_reading_from_ignoring(shards, tmp_path):
    """Codes here are a function of the text: training must make the model read it (a clear gain),
    while a fresh model barely does, and identical texts give exactly zero."""
    from workbench.data.token_shards import read_token_shards
    from workbench.lm.diagnostics import text_conditioning_gain
    from workbench.lm.model import build_model, load_lm

    result = train_lm(tiny_config(token_budget=100_000, lr=5e-3), shards, run_id="reads", root=tmp_path)
    trained = load_lm(result.model_dir)
    _, utterances = read_token_shards(shards, split="valid")
    reads = text_conditioning_gain(trained.model, trained.tokenizer, trained.layout, utterances)
    fresh = build_model("cpu-0.1m", trained.layout, seed=3)
    ignores = text_conditioning_gain(fresh, trained.tokenizer, trained.layout, utterances)
    assert reads.n_utterances == 16 and reads.gain_nats > 0.5 and reads.fraction_better >= 0.9
    assert abs(ignores.gain_nats) < 0.1 < reads.gain_nats - ignores.gain_nats
    same_text = [TokenizedUtterance(u.utterance_id, u.speaker, "the cat", u.split, u.codes) for u in utterances]
    assert text_conditioning_gain(trained.model, trained.tokenizer, trained.layout, same_text).gain_nats == pytest.approx(0.0, abs=1e-6)
