"""Reading against saying (workbench.lm.exposure): the teacher-forced and free-running code paths."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench.align.forced import UnitAlignment, save_alignments, text_units
from workbench.config import for_profile
from workbench.data.token_shards import CodecInfo, TokenizedUtterance, read_token_shards, write_token_shards
from workbench.lm.exposure import free_running_codes, teacher_forced_codes
from workbench.lm.model import load_lm
from workbench.lm.train import LMTrainConfig, train_lm

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

WORDS = ["red", "green", "blue", "cat", "dog", "sun"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke LM of each layout on tokens where every word has its own 5 codes, with durations."""
    root = tmp_path_factory.mktemp("exposure")
    generator = torch.Generator().manual_seed(0)
    utterances, alignments = [], {}
    for i in range(40):
        chosen = [WORDS[j] for j in torch.randint(0, len(WORDS), (3,), generator=generator).tolist()]
        codes = torch.cat([torch.arange(5) + 5 * WORDS.index(w) for w in chosen])
        u = TokenizedUtterance(f"u{i:03d}", "s", " ".join(chosen), "test" if i % 8 == 0 else "train", codes)
        utterances.append(u)
        units = text_units(u.text)
        frames = [0] * len(units)
        position = 1
        for word in chosen:  # each word's 5 frames shared among its characters
            frames[position:position + len(word)] = [5 // len(word) + (1 if k < 5 % len(word) else 0)
                                                     for k in range(len(word))]
            position += len(word) + 1
        alignments[u.utterance_id] = UnitAlignment(u.utterance_id, units, tuple(frames))
    shards = root / "shards"
    write_token_shards(shards, utterances, CodecInfo(codebook_size=32, frame_rate_hz=50, sample_rate=16000))
    save_alignments(shards / "alignments.json", alignments, {}, {})
    models = {}
    for name, layout, frontend, dropout in (("interleaved", "interleaved", "chars", 0.0), ("llasa", "llasa", "bpe", 0.0),
                                            ("interleaved-dropout", "interleaved", "chars", 0.2)):
        config = for_profile(LMTrainConfig, "smoke", max_steps=15, progress=False, sequence_layout=layout,
                             text_frontend=frontend, valid_fraction=0.1, text_dropout=dropout)
        models[name] = load_lm(train_lm(config, shards, run_id=name, root=root).model_dir)
    _, held_out = read_token_shards(shards, split="test")
    return models, held_out, alignments


def test_greedy_free_running_is_what_teacher_forcing_predicts_on_its_own_output(trained):
    # Two code paths (incremental with a KV cache; one forward over the training layout) agree only
    # if the generator lays out units, frames and end-of-unit tokens exactly as training does.
    models, held_out, alignments = trained
    lm = models["interleaved"]
    for u in held_out:
        alignment = alignments[u.utterance_id]
        free = free_running_codes(lm, alignment, temperature=0.0)
        assert free.numel() == sum(alignment.frames) == u.n_frames
        own = dataclasses.replace(u, codes=free)
        assert torch.equal(teacher_forced_codes(lm, own, alignment, temperature=0.0), free)


def test_guided_free_running_is_what_guided_teacher_forcing_predicts_on_its_own_output(trained):
    # The same agreement with classifier-free guidance: the text-free twin as a second cache row
    # (incremental) and as a second full forward pass (teacher-forced) give the same distribution.
    from workbench.lm.guidance import guidance_for

    models, held_out, alignments = trained
    lm = models["interleaved-dropout"]
    guidance = guidance_for(lm.model, 3.0)
    for u in held_out:
        alignment = alignments[u.utterance_id]
        free = free_running_codes(lm, alignment, temperature=0.0, guidance=guidance)
        own = dataclasses.replace(u, codes=free)
        assert torch.equal(teacher_forced_codes(lm, own, alignment, temperature=0.0, guidance=guidance), free)


def test_teacher_forcing_gives_one_code_per_frame_in_either_layout(trained):
    models, held_out, alignments = trained
    u = held_out[0]
    for layout, lm in ((k, models[k]) for k in ("interleaved", "llasa")):
        alignment = alignments[u.utterance_id] if layout == "interleaved" else None
        codes = teacher_forced_codes(lm, u, alignment, temperature=0.0)
        assert codes.shape == (u.n_frames,) and int(codes.min()) >= 0 and int(codes.max()) < 32
        sampled = teacher_forced_codes(lm, u, alignment, temperature=1.0, generator=torch.Generator().manual_seed(1))
        assert sampled.shape == codes.shape


def test_an_interleaved_lm_without_a_matching_alignment_is_refused(trained):
    models, held_out, alignments = trained
    u = held_out[0]
    wrong = dataclasses.replace(alignments[u.utterance_id], frames=(1,) * len(alignments[u.utterance_id].units))
    with pytest.raises(ValueError, match=u.utterance_id):
        teacher_forced_codes(models["interleaved"], u, wrong)
