"""Inference-time search (workbench.search): strategies, KV-cache continuation, compute accounting,
and the directional check that search moves outputs toward what the verifier prefers.

Everything runs on a tiny random LM (cpu-0.1m) and an untrained smoke-profile codec (16 codes,
50 Hz): the tests check mechanics and numbers, not audio quality. With 16 speech tokens plus the
end token allowed, a random model ends a sequence after ~17 tokens on average, which exercises
end-of-speech handling inside beam steps.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from workbench import search, verifiers
from workbench.lm.flops import generation_flops
from workbench.lm.generate import SamplingConfig
from workbench.lm.layout import build_inference_prompt
from workbench.search.decoding import Sampler, extend, next_logits, prefill, prefill_flops

TEXT = "the cat sat on the mat"
STEP = 4  # tokens between process-verifier decisions (short: random sequences are short)


class _CodeVerifier:
    """A deterministic verifier on the generated codes (the search passes them: accepts_codes)."""

    accepts_codes = True
    score_range = (0.0, 1.0)

    def __init__(self, name: str, fn) -> None:  # type: ignore[no-untyped-def]
        self.name = name
        self.fn = fn

    def evaluate(self, audios, sample_rate, texts=None, prompts=None, codes=None):  # type: ignore[no-untyped-def]
        assert codes is not None and len(codes) == len(audios)
        return [verifiers.VerifierResult(self.name, float(self.fn(c)), float(self.fn(c))) for c in codes]

    def score(self, audios, sample_rate, texts=None, prompts=None, codes=None):  # type: ignore[no-untyped-def]
        return [r.score for r in self.evaluate(audios, sample_rate, texts, prompts, codes)]


def _even_fraction(codes: torch.Tensor) -> float:
    return float((codes % 2 == 0).float().mean()) if codes.numel() else 0.0


def _low_fraction(codes: torch.Tensor) -> float:
    return float((codes < 8).float().mean())


@verifiers.register("test-even-codes")
def _even_verifier() -> _CodeVerifier:
    return _CodeVerifier("test-even-codes", _even_fraction)


@verifiers.register("test-low-codes")
def _low_verifier() -> _CodeVerifier:
    return _CodeVerifier("test-low-codes", _low_fraction)


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


@pytest.fixture(scope="module")
def setup():
    from workbench.codec.config import CodecConfig
    from workbench.codec.interface import WorkbenchCodec
    from workbench.codec.model import build_model as build_codec
    from workbench.config import for_profile
    from workbench.lm.model import build_model
    from workbench.lm.text_tokenizer import train_text_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        codec = WorkbenchCodec(build_codec(for_profile(CodecConfig, "smoke")))
    lm_tok = train_text_tokenizer([TEXT, "a dog ran in the fog"] * 4, codebook_size=codec.codebook_size,
                                  text_vocab_size=290)
    model = build_model("cpu-0.1m", lm_tok.layout, seed=0, pad_token_id=lm_tok.tokenizer.pad_token_id).eval()
    return model, lm_tok.tokenizer, lm_tok.layout, codec


def _run(setup, strategy: str, verifier, budget: int, seed: int, **options):  # type: ignore[no-untyped-def]
    from workbench.lm.model import LoadedLM

    model, tok, layout, codec = setup
    lm = LoadedLM(model=model, tokenizer=tok, layout=layout, codec=None, meta={})
    return search.get(strategy)(search.SearchRequest(
        lm=lm, codec=codec, text=TEXT, verifiers=verifier, budget=budget, sampling=SamplingConfig(), seed=seed,
        options=search.SearchOptions(step_tokens=STEP, **options)))


def test_registry_names_and_errors():
    assert {"sample", "best_of_n", "beam", "partial_mix"} <= set(search.available())
    with pytest.raises(search.SearchError, match="best_of_n"):
        search.get("best_of_m")
    assert search.beam_shape(1) == (1, 1) and search.beam_shape(8) == (2, 4) and search.beam_shape(16) == (4, 4)
    assert search.beam_shape(8, beam_width=3) == (3, 3)
    # 20 frames per word at 50 Hz (+ margin and the end token)
    assert search.max_new_tokens_for("one two three", 50.0) == 3 * 20 + 50 + 1


def test_a_request_for_fewer_than_one_candidate_is_refused_naming_the_budget(setup):
    from workbench.lm.model import LoadedLM

    model, tok, layout, codec = setup
    lm = LoadedLM(model=model, tokenizer=tok, layout=layout, codec=None, meta={})
    with pytest.raises(search.SearchError, match="budget must be >= 1, got 0"):
        search.SearchRequest(lm=lm, codec=codec, text=TEXT, verifiers=verifiers.get("test-even-codes"), budget=0)


def test_best_of_n_picks_the_max_and_counts_exactly(setup):
    model, tok, layout, codec = setup
    n = 6
    result = _run(setup, "best_of_n", verifiers.get("test-even-codes"), n, seed=0)
    assert len(result.candidates) == n
    scores = [c.score for c in result.candidates]
    assert result.score == max(scores) and result.best.score == max(scores)
    assert torch.equal(result.codes, result.candidates[result.chosen_index].codes)
    assert result.worst.score == min(scores)
    assert all(c.n_frames >= 2 for c in result.candidates)  # this seed: every candidate decodable
    compute = result.compute
    # each candidate generated its frames plus the end token when it ended
    assert compute.tokens_generated == sum(c.n_frames + int(c.ended) for c in result.candidates)
    assert compute.verifier_calls == n and compute.codec_decodes == n
    prompt_len = len(build_inference_prompt(tok, layout, TEXT))
    expected_flops = sum(generation_flops(model.config, prompt_len, c.n_frames + int(c.ended)).with_embedding
                         for c in result.candidates)
    assert compute.lm_flops == pytest.approx(expected_flops, rel=1e-12)
    assert compute.wall_s > 0 and result.wav.numel() == result.codes.numel() * 320


def test_batched_candidates_are_reproducible_stop_at_end_and_match_the_search_sampler(setup):
    model, tok, layout, codec = setup
    verifier = verifiers.get("test-even-codes")
    first = _run(setup, "best_of_n", verifier, 8, seed=11)
    again = _run(setup, "best_of_n", verifier, 8, seed=11)
    other = _run(setup, "best_of_n", verifier, 8, seed=12)
    for a, b in zip(first.candidates, again.candidates):
        assert torch.equal(a.codes, b.codes) and a.ended == b.ended
    assert any(not torch.equal(a.codes, b.codes) for a, b in zip(first.candidates, other.candidates))
    cap = search.max_new_tokens_for(TEXT, codec.frame_rate_hz)
    assert any(c.ended for c in first.candidates)
    for c in first.candidates:
        assert c.codes.dtype == torch.long and c.codes.dim() == 1
        assert c.n_frames == 0 or 0 <= int(c.codes.min()) <= int(c.codes.max()) < codec.codebook_size
        assert c.ended or c.n_frames == cap  # stopped at end-of-speech, or ran to the cap
        assert c.wav is None or c.wav.numel() == c.n_frames * 320
    # The search's own KV-cached loop (one prefill, rows forked) samples the same sequences as
    # model.generate with num_return_sequences: same processors, same RNG stream.
    ids = build_inference_prompt(tok, layout, TEXT).input_ids
    state = prefill(model, ids).select([0] * 8)
    state = extend(model, state, Sampler(model, layout, SamplingConfig(), seed=11), cap)
    for row, c in enumerate(first.candidates):
        assert torch.equal(layout.codes_from_ids(state.generated(row)), c.codes), f"row {row}"
        assert bool(state.ended[row]) == c.ended


def test_cached_continuation_matches_full_recompute(setup):
    model, tok, layout, _ = setup
    ids = build_inference_prompt(tok, layout, TEXT).input_ids
    sampler = Sampler(model, layout, SamplingConfig(), seed=0)
    state = prefill(model, ids).select([0, 0, 0])
    state = extend(model, state, sampler, 5)
    state = state.select([2, 0, 2, 1])  # prune and fork, as a beam step does
    state = extend(model, state, sampler, 3)
    cached = next_logits(model, state)
    with torch.no_grad():
        full = model(input_ids=state.sequences).logits[:, -1].float()
    assert torch.allclose(cached, full, atol=1e-4), float((cached - full).abs().max())


class _ForwardCounter:
    """Wraps model.forward to record the width of every call (positions fed per row)."""

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self.model = model
        self.original = model.forward
        self.widths: list[tuple[int, int]] = []

    def __enter__(self):  # type: ignore[no-untyped-def]
        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            ids = kwargs.get("input_ids")
            self.widths.append((int(ids.shape[0]), int(ids.shape[1])))
            return self.original(*args, **kwargs)

        self.model.forward = counted
        return self

    def __exit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
        self.model.forward = self.original


def test_beam_keeps_b_beams_and_accounting_adds_up(setup):
    model, tok, layout, _ = setup
    budget = 8
    width, n_cont = search.beam_shape(budget)
    with _ForwardCounter(model) as counter:
        result = _run(setup, "beam", verifiers.get("test-even-codes"), budget, seed=5)
    process = [s for s in result.steps if s.phase == "process"]
    assert len(process) >= 2
    assert process[0].n_candidates == width * n_cont
    live = width
    for step in process:
        assert step.n_candidates == live * n_cont if step.index else width * n_cont
        assert step.n_kept == width  # exactly B kept per step (finished ones among them leave)
        live = step.n_kept - step.n_kept_finished
    compute = result.compute
    assert compute.tokens_generated == sum(s.tokens_generated for s in result.steps)
    # Same verifier for process and outcome: the final pick reuses the last scores, so every
    # decode and verifier call belongs to a process step (empty candidates are not scored).
    assert compute.verifier_calls == compute.codec_decodes
    assert compute.verifier_calls <= sum(s.n_candidates for s in process)
    assert compute.verifier_calls >= sum(s.n_candidates for s in process) - sum(1 for s in process
                                                                                 for x in s.scores if x < 0)
    assert result.steps[-1].phase == "outcome" and result.score == max(c.score for c in result.candidates)
    # KV cache: the prompt is run once; every later forward feeds exactly one token per row.
    prompt_len = len(build_inference_prompt(tok, layout, TEXT))
    assert counter.widths[0] == (1, prompt_len - 1)
    assert all(w == 1 for _, w in counter.widths[1:])
    fed_rows = sum(rows for rows, _ in counter.widths[1:])
    assert fed_rows >= compute.tokens_generated - len(result.candidates)  # every token but the last one fed
    per_token_max = generation_flops(model.config, prompt_len + 200, 0).with_embedding / (prompt_len + 200)
    assert prefill_flops(model.config, prompt_len) < compute.lm_flops
    assert compute.lm_flops <= prefill_flops(model.config, prompt_len) + 2 * per_token_max * compute.tokens_generated


def test_partial_mix_switches_verifier_after_partial_seconds(setup):
    _, _, _, codec = setup
    partial_s = 0.2  # 10 frames at 50 Hz: process steps at 4, 8 and 10 frames
    budget = 4
    chosen_by = search.SearchVerifiers(process=verifiers.get("test-even-codes"),
                                       outcome=verifiers.get("test-low-codes"))
    result = _run(setup, "partial_mix", chosen_by, budget, seed=2, partial_s=partial_s)
    names = [(s.phase, s.verifier, s.frames) for s in result.steps]
    process = [s for s in result.steps if s.phase == "process"]
    assert [s.frames for s in process] == [4, 8, 10], names
    assert all(s.verifier == "test-even-codes" and s.seconds <= partial_s + 1e-9 for s in process)
    final = result.steps[-1]
    assert final.phase == "outcome" and final.verifier == "test-low-codes" and result.verifier == "test-low-codes"
    assert final.frames > round(partial_s * codec.frame_rate_hz)  # completions ran past the prefix
    assert len(result.candidates) >= budget  # `budget` completions (+ beams that had ended)
    assert result.score == max(c.score for c in result.candidates)
    assert all(c.verifier == "test-low-codes" for c in result.candidates)
    assert result.compute.tokens_generated == sum(s.tokens_generated for s in result.steps)


def test_search_raises_the_verifier_score_over_plain_sampling(setup):
    verifier = verifiers.get("test-even-codes")
    seeds = range(6)
    means = {}
    for strategy in ("sample", "best_of_n", "beam"):
        scores = [_even_fraction(_run(setup, strategy, verifier, 8, seed=s).codes) for s in seeds]
        means[strategy] = sum(scores) / len(scores)
    assert means["best_of_n"] > means["sample"] + 0.1, means
    assert means["beam"] > means["sample"] + 0.1, means


def test_export_preferences_from_results(setup, tmp_path):
    verifier = verifiers.get("test-even-codes")
    results = [_run(setup, "best_of_n", verifier, 4, seed=s) for s in (0, 1)]
    path = tmp_path / "prefs.jsonl"
    n = search.export_preferences(results, path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert n == len(lines) >= 1
    for line in lines:
        assert line["chosen_score"] > line["rejected_score"]
        assert line["verifier"] == "test-even-codes" and line["text"] == TEXT
        assert _even_fraction(torch.tensor(line["chosen_codes"])) == line["chosen_score"]


# ---------------------------------------------------------------------------------------------
# Ablation runner (smoke-sized): rows, resume, check-verifier fallback, preferences, CLI


@pytest.fixture(scope="module")
def ablation_inputs(setup, mirror, tmp_path_factory):
    """A held-out manifest over real Kathleen clips, the tiny LM saved as a checkpoint and the
    untrained smoke codec saved as codec.pt (so the CLI path loads them like real runs)."""
    from workbench.codec.train import save_codec
    from workbench.data.manifest import write_manifest
    from workbench.data.readers import read_transcripts_tsv
    from workbench.lm.model import save_checkpoint
    import soundfile

    model, tok, layout, codec = setup
    root = tmp_path_factory.mktemp("ablation")
    utterances = [dataclasses.replace(u, duration_s=soundfile.info(u.audio_path).duration, sample_rate=16000,
                                      split="test")
                  for u in list(read_transcripts_tsv(mirror / "kathleen"))[:10]]
    write_manifest(root / "corpus" / "manifest.jsonl", utterances)
    save_codec(root / "codec" / "codec.pt", codec.model, step=0)
    save_checkpoint(root / "lm", model, tok, layout)
    return root


def test_ablation_rows_resume_and_preferences(ablation_inputs, workdirs):
    import csv

    from workbench.config import for_profile
    from workbench.search.ablation import AblationConfig, plan_arms, run_ablation
    from workbench.search.ablation.cli import main

    root = ablation_inputs
    overrides = dict(lm_path=str(root / "lm"), codec_path=str(root / "codec"), corpus=str(root / "corpus"),
                     n_sentences=2, strategies=("sample", "best_of_n", "partial_mix"), budgets=(1, 2),
                     search_verifiers=("test-even-codes>test-low-codes",),
                     check_verifiers=("test-low-codes=test-even-codes", "resemblyzer=not-a-verifier"),
                     wer_verifier="", sim_verifier="resemblyzer", time_limit_s=0.0)
    config = for_profile(AblationConfig, "smoke", **overrides)
    arms = plan_arms(config)
    # sample/best_of_n use only the outcome side of a process>outcome spec; sample runs at budget 1
    assert [(a.strategy, a.budget, a.verifier) for a in arms] == [
        ("sample", 1, "test-low-codes"), ("best_of_n", 2, "test-low-codes"),
        ("partial_mix", 2, "test-even-codes>test-low-codes")]
    first = run_ablation(config, run_id="abl", progress=False)
    assert first.complete and first.n_new_rows == 2 * len(arms) and first.n_skipped_rows == 0
    assert any("not-a-verifier" in note for note in first.notes)  # fallback, reported
    with open(first.results_csv) as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6
    required = {"strategy", "budget", "verifier", "check_verifier", "score", "check_score", "wer", "check_wer",
                "sim", "check_sim", "dnsmos", "tokens_generated", "decodes", "verifier_calls", "lm_flops", "wall_s"}
    assert required <= set(table[0])
    for row in table:
        assert row["check_verifier"] == "test-even-codes"
        assert math.isfinite(float(row["check_score"]))  # the check verifier exists
        assert row["check_sim"] == "nan" and row["wer"] == "nan"  # unavailable / disabled metrics
        assert -1.0 <= float(row["sim"]) <= 1.0
        assert (first.run_dir / row["audio"]).exists()
    # the lowest-scored candidate is kept next to the chosen one (for listening and preferences)
    assert list(first.run_dir.glob("audio/best_of_n-b2-*/*.worst.wav"))
    assert (first.run_dir / "audio" / "reference").is_dir() and (first.run_dir / "audio" / "prompt").is_dir()
    # relaunch through the CLI entry: every row is already there, nothing is recomputed
    argv = ["--profile", "smoke", "--lm", str(root / "lm"), "--codec", str(root / "codec"),
            "--corpus", str(root / "corpus"), "--n-sentences", "2", "--strategies", "sample", "best_of_n",
            "partial_mix", "--budgets", "1", "2", "--verifiers", "test-even-codes>test-low-codes",
            "--check", "test-low-codes=test-even-codes", "resemblyzer=not-a-verifier", "--time-limit-s", "0",
            "--run-id", "abl", "--no-progress", "--preferences", str(workdirs / "prefs.jsonl")]
    config_again = for_profile(AblationConfig, "smoke", **{**overrides, "wer_verifier": "pocketsphinx",
                                                          "sim_verifier": "resemblyzer"})
    assert config_again != config  # the CLI cannot set wer/sim verifiers: they keep the profile's
    assert main(argv) == 0
    with open(first.results_csv) as handle:
        assert len(list(csv.DictReader(handle))) == 6
    prefs = [json.loads(line) for line in (workdirs / "prefs.jsonl").read_text().splitlines()]
    assert prefs and all(p["chosen_score"] > p["rejected_score"] and p["prompt_codes"] for p in prefs)


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "partial_mix"])
def test_every_strategy_searches_an_interleaved_lm_and_its_candidates_say_every_unit(setup, strategy):
    """Search on an LM of the interleaved layout: the prompt is built in that layout, the sampler
    forces each character in turn (units and end-of-unit tokens never reach the codes), and every
    finished candidate went through all the sentence's units."""
    from workbench.align.forced import text_units
    from workbench.lm.interleaved import end_of_unit_id
    from workbench.lm.model import LoadedLM, build_model
    from workbench.lm.text_tokenizer import char_tokenizer

    _, _, _, codec = setup
    tok = char_tokenizer(codec.codebook_size)
    tok.tokenizer.init_kwargs["sequence_layout"] = "interleaved"
    model = build_model("cpu-0.1m", tok.layout, seed=0).eval()
    model.config.sequence_layout = "interleaved"
    model.config.end_of_unit_token_id = end_of_unit_id(tok.tokenizer)
    lm = LoadedLM(model=model, tokenizer=tok.tokenizer, layout=tok.layout, codec=None, meta={})
    # A random model rarely ends a unit itself: the processor closes each after 40 frames, so
    # the cap must leave room for all units.
    sampling = SamplingConfig(max_new_tokens=40 * len(text_units(TEXT)))
    result = search.get(strategy)(search.SearchRequest(
        lm=lm, codec=codec, text=TEXT, verifiers=verifiers.get("test-even-codes"), budget=4, sampling=sampling,
        seed=0, options=search.SearchOptions(step_tokens=STEP)))
    assert result.candidates and all(int(c.codes.max()) < codec.codebook_size for c in result.candidates)
    finished = [c for c in result.candidates if c.ended]
    assert finished
    assert all(c.n_frames >= len(text_units(TEXT)) - 2 for c in finished)  # every non-silence unit got frames
