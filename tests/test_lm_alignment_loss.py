"""Alignment losses on the text-span attention (workbench.lm.alignment_loss) and their use in train_lm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.data.token_shards import CodecInfo, write_token_shards
from workbench.lm.alignment_loss import (
    AlignmentObjective, ctc_alignment_loss, default_align_layers, diagonal_prior_loss, diagonal_weights,
    span_masks, text_span_attention,
)
from workbench.lm.layout import TokenLayout
from workbench.lm.train import LMTrainConfig, train_lm

from tests.test_lm_train import K, synthetic_utterances, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

LAYOUT = TokenLayout(text_vocab_size=40, codebook_size=16)
N_TEXT, N_FRAMES, N_HEADS = 7, 30, 2


def llasa_row(n_text: int = N_TEXT, n_frames: int = N_FRAMES, seed: int = 0) -> torch.Tensor:
    """BOS, two instruction tokens, the text between its markers, the speech between its markers."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, 40, (n_text,), generator=g).tolist()
    codes = torch.randint(0, 16, (n_frames,), generator=g)
    ids = [0, 1, 2, LAYOUT.text_understanding_start, *text, LAYOUT.text_understanding_end,
           LAYOUT.speech_generation_start, *LAYOUT.speech_ids(codes).tolist(), LAYOUT.speech_generation_end]
    return torch.tensor([ids])


def planted_attention(ids: torch.Tensor, text_order: list[int] | None = None, text_mass: float = 1.0,
                      sharpness: float = 10.0) -> torch.Tensor:
    """(1, heads, L, L) attention: speech query s puts `text_mass` on the text, spread as a softmax
    with logit `sharpness` on text token floor(s T / S) of `text_order` (the diagonal when None)
    and 0 on the others, and the rest of its mass on BOS; every other row is uniform causal."""
    L = ids.shape[1]
    attn = torch.tril(torch.ones(L, L))
    attn = attn / attn.sum(dim=1, keepdim=True)
    text_mask, speech_mask = span_masks(ids, LAYOUT)
    text_pos = torch.tensor(text_mask[0].nonzero().flatten().tolist())
    queries = speech_mask[0].nonzero().flatten().tolist()
    order = text_order or list(range(len(text_pos)))
    for s, q in enumerate(queries):
        logits = torch.zeros(len(text_pos))
        logits[order[s * len(text_pos) // len(queries)]] = sharpness
        attn[q] = 0.0
        attn[q, text_pos] = text_mass * logits.softmax(0)
        attn[q, 0] += 1.0 - text_mass
    return attn[None, None].expand(1, N_HEADS, L, L).clone()


def losses(attn: torch.Tensor, ids: torch.Tensor) -> tuple[float, float]:
    span = text_span_attention([attn], *span_masks(ids, LAYOUT))
    return float(diagonal_prior_loss(span)), float(ctc_alignment_loss(span))


def test_span_masks_find_the_text_between_its_markers_and_the_queries_that_predict_frames():
    ids = llasa_row()
    text_mask, speech_mask = span_masks(ids, LAYOUT)
    text_start = ids[0].tolist().index(LAYOUT.text_understanding_start)
    assert text_mask[0].nonzero().flatten().tolist() == list(range(text_start + 1, text_start + 1 + N_TEXT))
    start = ids[0].tolist().index(LAYOUT.speech_generation_start)
    # the start token predicts frame 0; the last frame predicts the end token (not a query)
    assert speech_mask[0].nonzero().flatten().tolist() == list(range(start, start + N_FRAMES))


def test_renormalised_attention_sums_to_one_over_the_text_of_every_speech_query():
    ids = llasa_row()
    torch.manual_seed(0)
    logits = torch.randn(1, N_HEADS, ids.shape[1], ids.shape[1])
    causal = torch.tril(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool))
    attn = logits.masked_fill(~causal, float("-inf")).softmax(-1)
    span = text_span_attention([attn, attn], *span_masks(ids, LAYOUT))
    assert span.probs.shape == (1, 2, N_HEADS, N_FRAMES, N_TEXT)
    assert torch.allclose(span.probs.sum(-1), torch.ones(1, 2, N_HEADS, N_FRAMES), atol=1e-5)


def test_a_planted_diagonal_gives_lower_prior_and_ctc_losses_than_shuffled_text_positions():
    ids = llasa_row()
    diagonal = losses(planted_attention(ids), ids)
    for seed in range(3):
        order = torch.randperm(N_TEXT, generator=torch.Generator().manual_seed(seed)).tolist()
        if order == sorted(order):
            continue
        shuffled = losses(planted_attention(ids, text_order=order), ids)
        assert diagonal[0] < shuffled[0] - 0.1  # prior: the expected penalty, in [0, 1)
        assert diagonal[1] < shuffled[1] - 1.0  # ctc: nats per speech query
    assert diagonal[0] < 0.1 and diagonal[1] < 0.2


def test_attention_moved_off_the_text_does_not_lower_the_prior():
    """The dodge measured on raw attention: put 99 % of every speech query's mass on BOS. The raw
    penalty falls 100-fold; the renormalised prior and the CTC loss stay where they were."""
    ids = llasa_row()
    order = [3, 6, 0, 5, 1, 4, 2]
    for text_order in (None, order):
        on_text = planted_attention(ids, text_order=text_order)
        dodged = planted_attention(ids, text_order=text_order, text_mass=0.01)
        full, away = losses(on_text, ids), losses(dodged, ids)
        assert away == pytest.approx(full, rel=1e-4)
        text_mask, speech_mask = span_masks(ids, LAYOUT)
        weights = diagonal_weights(torch.tensor([N_FRAMES]), torch.tensor([N_TEXT]), N_FRAMES, N_TEXT, 0.2)
        raw = [float((a[0, 0][speech_mask[0]][:, text_mask[0]] * weights[0]).sum()) for a in (on_text, dodged)]
        if text_order is not None:
            assert raw[1] < raw[0] / 50
    # Leaving the text altogether renormalises to the uniform spread: worse than the diagonal.
    gone = planted_attention(ids, text_mass=0.0)
    assert all(g > d + 0.1 for g, d in zip(losses(gone, ids), losses(planted_attention(ids), ids)))


def test_padded_rows_score_like_the_same_rows_alone():
    long_ids, short_ids = llasa_row(9, 40, seed=1), llasa_row(5, 20, seed=2)
    width = long_ids.shape[1]
    padded = torch.cat([long_ids, torch.cat([short_ids, torch.zeros(1, width - short_ids.shape[1], dtype=torch.long)
                                             .fill_(LAYOUT.speech_generation_end)], dim=1)])
    a_long, a_short = planted_attention(long_ids), planted_attention(short_ids)
    order = [2, 0, 4, 1, 3]
    a_short = planted_attention(short_ids, text_order=order)
    batch = torch.zeros(2, N_HEADS, width, width)
    batch[0] = a_long[0]
    batch[1, :, :short_ids.shape[1], :short_ids.shape[1]] = a_short[0]
    span = text_span_attention([batch], *span_masks(padded, LAYOUT))
    prior, ctc = diagonal_prior_loss(span), ctc_alignment_loss(span)
    alone = [losses(a_long, long_ids), losses(a_short, short_ids)]
    for b in range(2):
        assert float(prior[b]) == pytest.approx(alone[b][0], rel=1e-5)
        assert float(ctc[b]) == pytest.approx(alone[b][1], rel=1e-4)


def test_default_layers_are_the_middle_third_and_bad_layers_are_refused():
    assert default_align_layers(5) == (1, 2) and default_align_layers(8) == (2, 3, 4)
    assert default_align_layers(2) == (0,) and default_align_layers(1) == (0,)
    with pytest.raises(ValueError, match="do not exist"):
        AlignmentObjective.for_model(LAYOUT, 2, (0, 5), 1.0, 1.0, 0.2)
    with pytest.raises(ValueError, match="heads \\[4\\] do not exist"):
        AlignmentObjective.for_model(LAYOUT, 2, (0,), 1.0, 1.0, 0.2, heads=(0, 4), n_heads=4)


def test_chosen_heads_alone_carry_the_loss():
    """With align_heads only those heads are scored: a shuffled head left out does not count."""
    ids = llasa_row()
    diagonal = planted_attention(ids)
    shuffled = planted_attention(ids, text_order=[3, 6, 0, 5, 1, 4, 2])
    mixed = torch.cat([diagonal[:, :1], shuffled[:, 1:]], dim=1)  # head 0 diagonal, head 1 shuffled
    all_heads = AlignmentObjective(LAYOUT, (0,), 1.0, 1.0).sums([mixed], ids)
    head0 = AlignmentObjective(LAYOUT, (0,), 1.0, 1.0, heads=(0,)).sums([mixed], ids)
    alone = AlignmentObjective(LAYOUT, (0,), 1.0, 1.0).sums([diagonal], ids)
    for name in ("align_prior", "align_ctc"):
        assert float(head0[name]) == pytest.approx(float(alone[name]), rel=1e-6)
        assert float(all_heads[name]) > float(head0[name]) + 0.1


def test_config_refuses_packing_and_the_interleaved_layout_with_alignment_losses():
    with pytest.raises(ValueError, match="packing=false"):
        LMTrainConfig(align_ctc_weight=1.0, packing=True)
    with pytest.raises(ValueError, match="sequence_layout='llasa'"):
        LMTrainConfig(align_prior_weight=1.0, sequence_layout="interleaved", text_frontend="chars")
    with pytest.raises(ValueError, match="align_prior_weight=-1"):
        LMTrainConfig(align_prior_weight=-1.0)


# -- in train_lm -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_token_shards(out, synthetic_utterances(120), CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    return out


def _records(result) -> list[dict]:
    lines = (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _weights(result) -> dict[str, torch.Tensor]:
    from workbench.lm.model import load_lm

    return {k: v.clone() for k, v in load_lm(result.model_dir, device="cpu").model.state_dict().items()}


def test_train_lm_with_alignment_losses_logs_them_and_they_fall(shards, tmp_path):
    config = tiny_config(align_prior_weight=1.0, align_ctc_weight=1.0, max_steps=40, lr=1e-2, log_every=5)
    result = train_lm(config, shards, run_id="aligned", root=tmp_path)
    records = _records(result)
    start = next(r for r in records if r.get("event") == "start")
    assert start["attention"] == "eager"
    logged = [r for r in records if "align_ctc" in r]
    assert len(logged) == 8 and all("align_prior" in r for r in logged)
    def mean(records: list[dict], key: str) -> float:
        return sum(r[key] for r in records) / len(records)

    # measured: prior 0.56 -> 0.43, ctc 1.26 -> 0.81 nats per speech query (first / last 10 steps)
    assert mean(logged[-2:], "align_prior") < mean(logged[:2], "align_prior") - 0.05
    assert mean(logged[-2:], "align_ctc") < mean(logged[:2], "align_ctc") - 0.2
    assert result.completed and result.final_valid_loss == result.final_valid_loss  # not NaN


def test_zero_alignment_weights_leave_training_exactly_as_without_them(shards, tmp_path):
    """The default path is untouched: weights 0 (whatever the other align settings) train to the
    same weights bit for bit with SDPA and log no alignment terms; a positive weight changes them."""
    plain = train_lm(tiny_config(max_steps=12), shards, run_id="plain", root=tmp_path)
    zero = train_lm(tiny_config(max_steps=12, align_layers=(1,), align_prior_sigma=0.5),
                    shards, run_id="zero", root=tmp_path)
    on = train_lm(tiny_config(max_steps=12, align_prior_weight=1.0), shards, run_id="on", root=tmp_path)
    for result in (plain, zero):
        records = _records(result)
        assert next(r for r in records if r.get("event") == "start")["attention"] == "sdpa"
        assert not any("align_prior" in r or "align_ctc" in r for r in records)
    a, b, c = _weights(plain), _weights(zero), _weights(on)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert plain.final_train_loss == zero.final_train_loss
