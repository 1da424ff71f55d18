"""The interleaved layout, its character front-end and forced alignment (workbench.lm.interleaved,
workbench.align.forced)."""

from __future__ import annotations

import random

import pytest
import torch

from workbench.align.forced import (AlignmentError, UnitAlignment, align_units, load_alignments, save_alignments,
                                    text_units)
from workbench.checkmodels.asr_model import ALPHABET
from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, TokenizedUtterance, write_token_shards
from workbench.lm.generate import SamplingConfig, generate_speech_tokens, synthesize, tts_prompt
from workbench.lm.interleaved import (END_OF_UNIT, build_interleaved_sequence, end_of_unit_id,
                                      interleaved_inference_prompt, unit_ids)
from workbench.lm.layout import IGNORE_INDEX
from workbench.lm.model import build_model
from workbench.lm.text_tokenizer import char_tokenizer, load_lm_tokenizer
from workbench.lm.train import LMTrainConfig, train_lm

K = 32
WORDS = "the a cat dog sat ran on in mat fog red big".split()

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


# -- front-end and alignment -------------------------------------------------------------------


def test_text_units_are_normalised_characters_framed_by_silence_units():
    assert text_units("Hello, World!") == " hello world "
    assert text_units("It's 2 cats.") == " it's two cats "
    assert text_units("It's 2 cats.") == text_units("it's   two  cats")
    with pytest.raises(AlignmentError, match="no characters"):
        text_units("?!")


def test_character_tokenizer_round_trips_and_reloads_with_the_same_ids(tmp_path):
    tok = char_tokenizer(K)
    text = text_units("The quick brown fox's jumps")
    ids = unit_ids(tok.tokenizer, text)
    assert len(ids) == len(text) and tok.tokenizer.decode(ids) == text
    tok.save(tmp_path / "tok")
    again = load_lm_tokenizer(tmp_path / "tok")
    assert again.layout == tok.layout and unit_ids(again.tokenizer, text) == ids
    assert end_of_unit_id(again.tokenizer) == end_of_unit_id(tok.tokenizer)
    assert again.tokenizer.convert_tokens_to_ids(END_OF_UNIT) < tok.layout.text_vocab_size
    with pytest.raises(ValueError, match="not in the character tokenizer"):
        unit_ids(tok.tokenizer, "café")


def _planted_log_probs(units: str, starts: list[int], n_frames: int) -> torch.Tensor:
    """CTC posteriors with each unit's label peaking on its planted first frame, blank elsewhere."""
    index = {c: i for i, c in enumerate(ALPHABET)}
    probs = torch.full((n_frames, len(ALPHABET)), 0.01)
    probs[:, 0] = 1.0
    for unit, start in zip(units, starts):
        probs[start] = 0.01
        probs[start, index[unit]] = 1.0
    return (probs / probs.sum(-1, keepdim=True)).log()


def test_forced_alignment_recovers_planted_unit_boundaries_in_codec_frames():
    units = " the cat sat "
    rng = random.Random(0)
    starts, frame = [], 1
    for _ in units:
        starts.append(frame)
        frame += rng.randint(1, 4)
    n_asr = frame + 3
    # 40 ms recogniser frames, 50 Hz codec: every recogniser frame is two codec frames.
    frames = align_units(_planted_log_probs(units, starts, n_asr), units, asr_frame_s=0.04,
                         n_codec_frames=2 * n_asr, codec_frame_rate_hz=50.0)
    assert sum(frames) == 2 * n_asr and len(frames) == len(units)
    bounds = [0] + [2 * s for s in starts[1:]] + [2 * n_asr]
    assert frames == [b - a for a, b in zip(bounds, bounds[1:])]
    with pytest.raises(AlignmentError, match="cannot hold"):
        align_units(_planted_log_probs(units, starts, n_asr)[:5], units, asr_frame_s=0.04,
                    n_codec_frames=10, codec_frame_rate_hz=50.0)


def test_alignment_file_round_trips(tmp_path):
    aligned = {"u1": UnitAlignment("u1", " ab ", (1, 2, 3, 0))}
    path = save_alignments(tmp_path / "alignments.json", aligned, {"u2": "too short"}, {"asr": "x"})
    assert load_alignments(path) == aligned


# -- sequences and generation -----------------------------------------------------------------


def test_interleaved_sequence_puts_each_unit_before_its_frames_and_trains_only_on_speech_and_ends():
    tok = char_tokenizer(K)
    tokenizer, layout = tok.tokenizer, tok.layout
    codes = torch.arange(7) % K
    seq = build_interleaved_sequence(tokenizer, layout, " ab ", [1, 2, 3, 1], codes)
    eou = end_of_unit_id(tokenizer)
    speech_part = seq.input_ids[seq.input_ids.index(layout.speech_generation_start) + 1:]
    a, b, space = unit_ids(tokenizer, "ab ")
    expected = [space, *layout.speech_ids(codes[:1]).tolist(), eou, a, *layout.speech_ids(codes[1:3]).tolist(), eou,
                b, *layout.speech_ids(codes[3:6]).tolist(), eou, space, *layout.speech_ids(codes[6:]).tolist(), eou,
                layout.speech_generation_end]
    assert speech_part == expected
    targets = [t for t in seq.labels if t != IGNORE_INDEX]
    assert targets == [layout.speech_generation_start] + [t for t in expected if t not in (a, b, space)][:-1]
    with pytest.raises(ValueError, match="sum to"):
        build_interleaved_sequence(tokenizer, layout, " ab ", [1, 1, 1, 1], codes)


def _interleaved_model(seed: int = 0):
    tok = char_tokenizer(K)
    tok.tokenizer.init_kwargs["sequence_layout"] = "interleaved"
    model = build_model("cpu-0.1m", tok.layout, seed=seed, max_position_embeddings=512)
    model.config.sequence_layout = "interleaved"
    model.config.end_of_unit_token_id = end_of_unit_id(tok.tokenizer)
    return model.eval(), tok


@pytest.mark.parametrize("fast", [True, False])
def test_interleaved_generation_forces_every_unit_in_order_and_then_ends(fast):
    model, tok = _interleaved_model()
    tokenizer, layout = tok.tokenizer, tok.layout
    texts = ["the cat", "a big red dog sat"]
    prompts = [tts_prompt(tokenizer, layout, t) for t in texts]
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=800, num_return_sequences=2, seed=3)
    # A random model rarely samples end-of-unit by itself: the 40-frame cap per unit closes them.
    out = generate_speech_tokens(model, layout, prompts, sampling, fast=fast)
    assert all(out.ended)
    for row, codes in enumerate(out.codes):
        assert codes.numel() > 0 and int(codes.max()) < K
    again = generate_speech_tokens(model, layout, prompts, sampling, fast=not fast)
    assert all(torch.equal(a, b) for a, b in zip(out.codes, again.codes))


def test_interleaved_generation_sequences_hold_the_units_in_order():
    model, tok = _interleaved_model(seed=1)
    tokenizer, layout = tok.tokenizer, tok.layout
    prompt = tts_prompt(tokenizer, layout, "on a mat")
    ids = torch.tensor([prompt.input_ids])
    from workbench.lm.interleaved import interleaved_processor
    from transformers import LogitsProcessorList

    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=400,
                         logits_processor=LogitsProcessorList([interleaved_processor(model, layout, 5)]),
                         eos_token_id=layout.speech_generation_end, pad_token_id=layout.speech_generation_end)
    new = out[0, ids.shape[1]:].tolist()
    eou = end_of_unit_id(tokenizer)
    units = [t for i, t in enumerate(new) if i == 0 or new[i - 1] == eou]
    assert tokenizer.decode(units[:-1]) == text_units("on a mat") and units[-1] == layout.speech_generation_end
    between = [t for t in new if t != eou and t not in units]
    assert all(layout.is_speech(between).tolist())


def test_voice_prompt_is_interleaved_and_generation_continues_with_the_targets_first_unit():
    model, tok = _interleaved_model(seed=2)
    tokenizer, layout = tok.tokenizer, tok.layout
    prompt_codes = torch.arange(9) % K
    prompt = interleaved_inference_prompt(tokenizer, layout, "red fog", prompt_text="the cat", prompt_codes=prompt_codes)
    eou = end_of_unit_id(tokenizer)
    assert prompt.input_ids[-1] == eou
    speech_part = prompt.input_ids[prompt.input_ids.index(layout.speech_generation_start) + 1:]
    assert speech_part.count(eou) == len(text_units("the cat"))
    assert layout.codes_from_ids([t for t in speech_part if layout.is_speech([t]).item()]).tolist() == prompt_codes.tolist()
    [result] = synthesize(model, tokenizer, layout, "red fog", prompt_text="the cat", prompt_codes=prompt_codes,
                          sampling=SamplingConfig(temperature=1.0, max_new_tokens=400, seed=0), chunk=False)
    assert result.ended and result.codes.numel() > 0


# -- training --------------------------------------------------------------------------------


def _utterances_and_alignments(n: int):
    """Each character says two fixed codes: a model that reads its unit knows its frames."""
    rng = random.Random(0)
    utterances, alignments = [], {}
    for i in range(n):
        units = text_units(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))))
        codes = [v for ch in units for v in (ord(ch) % K, (ord(ch) * 7) % K)]
        uid = f"u{i:04d}"
        utterances.append(TokenizedUtterance(uid, "spk", units.strip(), "valid" if i % 10 == 0 else "train",
                                             torch.tensor(codes)))
        alignments[uid] = UnitAlignment(uid, units, tuple(2 for _ in units))
    return utterances, alignments


def test_interleaved_training_learns_to_read_its_units_and_saves_a_self_describing_checkpoint(tmp_path):
    from workbench.data.token_shards import read_token_shards
    from workbench.lm.diagnostics import text_conditioning_gain
    from workbench.lm.model import load_lm

    utterances, alignments = _utterances_and_alignments(120)
    shards = tmp_path / "shards"
    write_token_shards(shards, utterances, CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    save_alignments(shards / "alignments.json", alignments, {}, {})
    config = for_profile(LMTrainConfig, "smoke", progress=False, peak_flops_per_s=1e11, token_budget=60_000,
                         lr=5e-3, text_frontend="chars", sequence_layout="interleaved")
    result = train_lm(config, shards, run_id="il", root=tmp_path / "runs")
    lm = load_lm(result.model_dir)
    assert lm.meta["sequence_layout"] == "interleaved" and lm.model.config.sequence_layout == "interleaved"
    _, valid = read_token_shards(shards, split="valid")
    gain = text_conditioning_gain(lm.model, lm.tokenizer, lm.layout, valid, alignments=alignments)
    assert gain.gain_nats > 0.5 and gain.fraction_better >= 0.9
    # Greedy generation from the text alone says the planted codes of every unit.
    [said] = synthesize(lm.model, lm.tokenizer, lm.layout, "the cat", chunk=False,
                        sampling=SamplingConfig(temperature=0.0, max_new_tokens=60))
    planted = [v for ch in text_units("the cat") for v in (ord(ch) % K, (ord(ch) * 7) % K)]
    assert said.ended and said.codes.tolist() == planted


def test_interleaved_layout_needs_the_character_front_end():
    with pytest.raises(ValueError, match="text_frontend='chars'"):
        LMTrainConfig(sequence_layout="interleaved")
    with pytest.raises(ValueError, match="sequence_layout"):
        LMTrainConfig(sequence_layout="ella")


def test_code_information_is_the_codes_entropy_when_characters_fix_them_and_near_zero_when_independent():
    import math

    from workbench.align.information import code_information

    rng = random.Random(1)
    fixed, independent, alignments = [], [], {}
    for i in range(300):
        units = text_units(" ".join(rng.choice(WORDS) for _ in range(3)))
        uid = f"u{i}"
        alignments[uid] = UnitAlignment(uid, units, tuple(1 for _ in units))
        fixed.append(TokenizedUtterance(uid, "s", units, "train" if i < 250 else "valid",
                                        torch.tensor([ord(c) % K for c in units])))
        independent.append(TokenizedUtterance(uid, "s", units, "train" if i < 250 else "valid",
                                              torch.tensor([rng.randrange(K) for _ in units])))
    determined = code_information(fixed[:250], fixed[250:], alignments, K)
    assert determined.conditional_entropy_nats < 0.1 and determined.information_nats > 1.5
    assert determined.n_frames == sum(len(alignments[u.utterance_id].units) for u in fixed[250:])
    noise = code_information(independent[:250], independent[250:], alignments, K)
    assert noise.entropy_nats == pytest.approx(math.log(K), abs=0.1) and noise.information_nats < 0.05


def test_text_gain_command_prints_the_gain_of_a_saved_model(tmp_path, capsys):
    import json

    from workbench.lm.diagnostics import main

    utterances, alignments = _utterances_and_alignments(40)
    shards = tmp_path / "shards"
    write_token_shards(shards, utterances, CodecInfo(K, 50.0, 16000, "toy"), shard_size=64)
    save_alignments(shards / "alignments.json", alignments, {}, {})
    config = for_profile(LMTrainConfig, "smoke", progress=False, peak_flops_per_s=1e11, token_budget=3000,
                         text_frontend="chars", sequence_layout="interleaved")
    result = train_lm(config, shards, run_id="cli", root=tmp_path / "runs")
    main([result.model_dir, str(shards), "--split", "valid"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_utterances"] == 4 and printed["gain_nats"] == pytest.approx(printed["loss_wrong"] - printed["loss_right"])
