"""Packed training batches (workbench.lm.packing): same losses as unpacked, real-token accounting,
exact resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, write_token_shards
from workbench.lm.data import BatchStream, collate, encode_utterances
from workbench.lm.layout import IGNORE_INDEX
from workbench.lm.model import build_model
from workbench.lm.packing import (
    PackedBatchStream, collate_packed, pack_first_fit, packed_epoch_batches, per_sequence_losses,
)
from workbench.lm.text_tokenizer import train_text_tokenizer
from workbench.lm.train import LMTrainConfig, _sum_loss, train_lm

from test_lm_train import K, synthetic_utterances  # noqa: E402

# The LM tests' synthetic utterances (codes a fixed function of the text), under the name the
# packing, compile and sharding tests use.
utterances = synthetic_utterances

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


@pytest.fixture(scope="module")
def encoded():
    utts = utterances(40, valid_every=0)
    lm_tok = train_text_tokenizer([u.text for u in utts], K, text_vocab_size=300)
    data = encode_utterances(utts, lm_tok.tokenizer, lm_tok.layout, max_seq_len=512)
    return lm_tok, data


def test_first_fit_rows_hold_every_sequence_once_within_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(20, 300) for _ in range(500)]
    rows = pack_first_fit(range(500), lengths, 512)
    assert sorted(i for row in rows for i in row) == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 512 for row in rows)
    # first-fit decreasing wastes little: rows are on average more than 90 % full
    assert sum(lengths) / (512 * len(rows)) > 0.9
    with pytest.raises(ValueError, match="600 tokens"):
        pack_first_fit([0], [600], 512)


def test_packed_epochs_are_deterministic_and_differ_between_epochs():
    lengths = [random.Random(i).randint(20, 300) for i in range(200)]
    first = packed_epoch_batches(lengths, 4, 512, seed=1, epoch=0)
    assert first == packed_epoch_batches(lengths, 4, 512, seed=1, epoch=0)
    assert first != packed_epoch_batches(lengths, 4, 512, seed=1, epoch=1)
    assert sorted(i for batch in first for row in batch for i in row) == list(range(200))


def test_packed_rows_restart_positions_and_never_target_across_utterances(encoded):
    lm_tok, data = encoded
    a, b, c = data.sequences[:3]
    batch = collate_packed([[a, b], [c]], pad_token_id=0)
    n_a, n_b, n_c = len(a), len(b), len(c)
    assert batch.attention_mask is None and batch.seq_lens == [n_a, n_b, n_c]
    assert batch.position_ids[0, :n_a].tolist() == list(range(n_a))
    assert batch.position_ids[0, n_a:n_a + n_b].tolist() == list(range(n_b))
    assert batch.position_ids[1, n_c:].tolist() == list(range(batch.input_ids.shape[1] - n_c))
    assert batch.labels[0, n_a] == IGNORE_INDEX  # b's first label would be a's last target
    # the same targets as unpacked: every utterance's loss tokens are kept, none added
    assert batch.n_loss_tokens == collate([a, b, c], 0).n_loss_tokens
    assert batch.n_tokens == n_a + n_b + n_c


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_gives_each_utterance_the_loss_it_has_unpacked(encoded, attn):
    """The packing equivalence: per-utterance losses, the summed loss and its gradient agree with
    one utterance per padded row (fp32, atol 1e-4)."""
    lm_tok, data = encoded
    model = build_model("cpu-0.1m", lm_tok.layout, seed=0, bos_token_id=lm_tok.tokenizer.bos_token_id,
                        pad_token_id=0, max_position_embeddings=512)
    model.config._attn_implementation = attn
    seqs = data.sequences[:7]
    rows = pack_first_fit(range(7), [len(s) for s in seqs], 200)
    assert any(len(row) > 1 for row in rows), "the test needs rows that hold several utterances"
    packed = collate_packed([[seqs[i] for i in row] for row in rows], pad_token_id=0)
    unpacked = collate([seqs[i] for row in rows for i in row], pad_token_id=0)

    with torch.no_grad():
        packed_logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits
        plain_logits = model(input_ids=unpacked.input_ids, attention_mask=unpacked.attention_mask).logits
    want = per_sequence_losses(plain_logits, unpacked.labels, [[n] for n in unpacked.seq_lens])
    got = per_sequence_losses(packed_logits, packed.labels, [[len(seqs[i]) for i in row] for row in rows])
    assert got == pytest.approx(want, abs=1e-4)
    assert len(set(round(x, 3) for x in want)) > 3  # distinct utterances, not one loss repeated

    grads = []
    for batch in (packed, unpacked):
        model.zero_grad()
        loss = _sum_loss(model, batch, torch.autocast("cpu", enabled=False))
        loss.backward()
        grads.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for g_packed, g_plain in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g_packed, g_plain, atol=1e-4, rtol=1e-4)


def test_packed_stream_resumes_exactly_and_refuses_an_unpacked_position(encoded):
    _, data = encoded
    stream = PackedBatchStream(data, 2, 0, seed=3, max_seq_len=256)
    seen = [next(stream) for _ in range(5)]
    resumed = PackedBatchStream(data, 2, 0, seed=3, max_seq_len=256)
    fresh = PackedBatchStream(data, 2, 0, seed=3, max_seq_len=256)
    for _ in range(3):
        next(fresh)
    resumed.load_state_dict(fresh.state_dict())
    for want in seen[3:]:
        got = next(resumed)
        assert torch.equal(got.input_ids, want.input_ids) and got.seq_lens == want.seq_lens
    with pytest.raises(ValueError, match="packed rows"):
        BatchStream(data, 2, 0, seed=3).load_state_dict(stream.state_dict())
    with pytest.raises(ValueError, match="unpacked"):
        stream.load_state_dict(BatchStream(data, 2, 0, seed=3).state_dict())


def test_packing_is_on_for_gpu_profiles_and_off_for_smoke_and_cpu():
    assert all(for_profile(LMTrainConfig, p).packing for p in ("gpu-1b", "gpu-3b", "gpu-8b"))
    assert not for_profile(LMTrainConfig, "smoke").packing and not for_profile(LMTrainConfig, "cpu").packing


def test_packed_training_learns_and_counts_real_tokens_and_their_flops(tmp_path):
    from workbench.lm.flops import count_params, training_flops
    from workbench.lm.model import load_lm
    from workbench.runs import read_metrics

    shards = tmp_path / "shards"
    write_token_shards(shards, utterances(160), CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    config = for_profile(LMTrainConfig, "smoke", progress=False, peak_flops_per_s=1e11, packing=True,
                         batch_size=2, max_seq_len=256, max_steps=12, lr=5e-3, log_every=1)
    result = train_lm(config, shards, run_id="packed", root=tmp_path)
    metrics = [m for m in read_metrics(result.run_dir) if "train_loss" in m]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 0.5
    # the same batches, rebuilt: tokens and FLOPs count utterances, not rows of padding
    lm_tok = load_lm(result.model_dir)
    from workbench.data.token_shards import read_token_shards
    from workbench.lm.data import split_utterances

    _, utts = read_token_shards(shards)
    train_utts, _ = split_utterances(utts)
    data = encode_utterances(train_utts, lm_tok.tokenizer, lm_tok.layout, 256)
    stream = PackedBatchStream(data, 2, lm_tok.tokenizer.pad_token_id, seed=0, max_seq_len=256)
    batches = [next(stream) for _ in range(12)]
    assert result.tokens_seen == sum(b.n_tokens for b in batches)
    assert result.tokens_seen < sum(b.input_ids.numel() for b in batches)
    assert result.flops == pytest.approx(sum(training_flops(lm_tok.model.config, b.seq_lens).with_embedding
                                             for b in batches))
    assert count_params(lm_tok.model.config).n_params == result.n_params
    assert json.loads((Path(result.run_dir) / "meta.json").read_text())["status"] == "finished"
