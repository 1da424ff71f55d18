"""The ablation's run loop: every held-out sentence through every arm, resumable by run id."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from workbench.codec.interface import Codec
from workbench.lm.model import LoadedLM, load_lm, read_checkpoint_meta
from workbench.search.ablation.config import RESULTS_FILE, AblationConfig, AblationResult, AblationRow
from workbench.search.ablation.heldout import TEXT_GAIN_FLOOR_NATS, held_out_items, lm_text_gain
from workbench.search.ablation.metrics import ChosenClipMetrics
from workbench.search.ablation.plan import plan_arms, search_verifiers_for
from workbench.search.ablation.store import append_jsonl, append_row, read_rows, row_key
from workbench.search.preferences import CANDIDATES_FILE


def search_codec_path(config: AblationConfig, lm: LoadedLM | None = None) -> str:
    """The codec the ablation decodes with: `codec_path`, else the one the LM checkpoint records
    (from `lm`, a loaded `LoadedLM`, when given; else from the metadata under `lm_path`)."""
    if config.codec_path:
        return config.codec_path
    if lm is not None:
        recorded = lm.codec.codec if lm.codec is not None else ""
    else:
        recorded = (read_checkpoint_meta(config.lm_path).get("codec") or {}).get("codec", "")
    if not recorded:
        raise ValueError("no codec: set AblationConfig.codec_path (the LM checkpoint records none)")
    return str(recorded)


def _load_lm_quietly(path: str | Path) -> LoadedLM:
    """`load_lm` without transformers' "Loading weights" bar: in a live notebook it is a stray
    widget above the search's own progress bar, and it says nothing (the previous bar setting is
    restored, so other callers keep theirs)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load_lm(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def run_ablation(config: AblationConfig, *, run_id: str | None = None, root: str | Path | None = None,
                 progress: bool = True, lm: LoadedLM | None = None, codec: Codec | None = None) -> AblationResult:
    """Run (or resume, with the same `run_id`) the ablation; see the module docstring.
    `lm` (a `LoadedLM`) and `codec` may be passed already loaded (tests, notebooks)."""
    import torch
    from tqdm.auto import tqdm

    from workbench.audio import load_audio, save_audio
    from workbench.codec.interface import load_codec
    from workbench.lm.generate import SamplingConfig
    from workbench.runs import start_run
    from workbench.search import SearchOptions, SearchRequest, VoicePrompt, get
    from workbench.search.preferences import candidate_record

    start = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if lm is None:
        if not config.lm_path:
            raise ValueError("AblationConfig.lm_path is empty: give the LM checkpoint folder to search with")
        lm = _load_lm_quietly(config.lm_path)
    if codec is None:
        codec = load_codec(search_codec_path(config, lm))
    if codec.codebook_size != lm.layout.codebook_size:
        raise ValueError(f"codec has {codec.codebook_size} codes, LM layout {lm.layout.codebook_size}")
    lm.model.eval()  # dropout off while sampling
    items = held_out_items(config)
    arms = plan_arms(config)
    sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p, guidance_scale=config.guidance_scale)
    options = SearchOptions(step_tokens=config.step_tokens, partial_s=config.partial_s,
                            seconds_per_word=config.seconds_per_word, margin_s=config.margin_s)
    notes: list[str] = []
    search_cache: dict[str, Any] = {}
    arm_verifiers = {arm.verifier: search_verifiers_for(arm.verifier, search_cache) for arm in arms}
    metrics = ChosenClipMetrics(config, int(codec.sample_rate), notes, search_cache)
    text_gain = lm_text_gain(lm, codec, config)
    if text_gain.gain_nats < TEXT_GAIN_FLOOR_NATS:
        notes.append(f"the LM barely reads its text: its speech loss on {text_gain.n_utterances} held-out "
                     f"utterances rises only {text_gain.gain_nats:.3f} nats/token under another transcript "
                     "(workbench.lm.diagnostics), so search on WER has little to select from")
    for note in notes:
        print(f"[search ablate] {note}", file=sys.stderr, flush=True)

    # rows are keyed by sentence and arm, so a relaunch with other metric settings adds to them
    with start_run("search", config, run_id=run_id, root=root, bind_config=False) as run:
        results_csv = run.dir / RESULTS_FILE
        existing = read_rows(results_csv)
        done = {row_key(r.utterance_id, r.arm) for r in existing}
        n_skipped = sum(1 for item in items for arm in arms if row_key(item.utterance_id, arm.name) in done)
        rows = list(existing)
        n_new = 0
        complete = True
        total = len(items) * len(arms)
        bar = tqdm(total=total, initial=n_skipped, disable=not progress, desc="search ablate", unit="row")
        sample_rate = int(codec.sample_rate)
        for index, item in enumerate(items):
            todo = [arm for arm in arms if row_key(item.utterance_id, arm.name) not in done]
            if not todo:
                continue
            reference, _ = load_audio(item.audio_path, sample_rate)
            reference = reference[0] if reference.dim() == 2 else reference
            save_audio(run.artifact(f"audio/reference/{item.utterance_id}.wav"), reference, sample_rate)
            prompt = None
            if item.prompt_audio is not None:
                prompt_wav, _ = load_audio(item.prompt_audio, sample_rate)
                prompt_wav = prompt_wav[0] if prompt_wav.dim() == 2 else prompt_wav
                prompt = VoicePrompt(codes=codec.encode(prompt_wav, sample_rate)[0], text=item.prompt_text,
                                     wav=prompt_wav, sample_rate=sample_rate)
                save_audio(run.artifact(f"audio/prompt/{item.utterance_id}.wav"), prompt_wav, sample_rate)
            # Speaker similarity is measured against the prompt when cloning, else against the
            # real recording (same speaker).
            speaker_reference = prompt.wav if prompt is not None else reference
            seed = config.seed * 100_003 + index  # the same per sentence in every arm
            for arm in todo:
                if config.time_limit_s and time.perf_counter() - start > config.time_limit_s:
                    complete = False
                    break
                result = get(arm.strategy)(SearchRequest(
                    lm=lm, codec=codec, text=item.text, verifiers=arm_verifiers[arm.verifier], budget=arm.budget,
                    sampling=sampling, seed=seed, prompt=prompt, options=options))
                audio_rel = f"audio/{arm.name}/{item.utterance_id}.wav"
                if result.wav.numel():
                    save_audio(run.artifact(audio_rel), result.wav, sample_rate)
                else:
                    audio_rel = ""
                if len(result.candidates) > 1 and result.worst.wav is not None:
                    save_audio(run.artifact(f"audio/{arm.name}/{item.utterance_id}.worst.wav"),
                               result.worst.wav, sample_rate)
                append_jsonl(run.dir / CANDIDATES_FILE, candidate_record(
                    result, utterance_id=item.utterance_id, prompt_text=prompt.text if prompt else None,
                    prompt_codes=prompt.codes.tolist() if prompt else None, extra={"arm": arm.name}))
                check_name = metrics.check_names.get(arm.outcome, "")
                wav, codes = result.wav, result.codes
                row = AblationRow(
                    utterance_id=item.utterance_id, text=item.text, prompt_id=item.prompt_id, arm=arm.name,
                    strategy=arm.strategy, budget=arm.budget, verifier=arm.verifier, check_verifier=check_name,
                    score=result.score,
                    check_score=metrics.value(check_name, wav, codes, item.text, speaker_reference, raw=False)
                    if check_name else math.nan,
                    wer=metrics.value(config.wer_verifier, wav, codes, item.text, speaker_reference, raw=True),
                    check_wer=metrics.value(metrics.check_names.get(config.wer_verifier, ""), wav, codes, item.text,
                                            speaker_reference, raw=True),
                    sim=metrics.value(config.sim_verifier, wav, codes, item.text, speaker_reference, raw=True),
                    check_sim=metrics.value(metrics.check_names.get(config.sim_verifier, ""), wav, codes, item.text,
                                            speaker_reference, raw=True),
                    dnsmos=metrics.value(config.quality_verifier, wav, codes, item.text, speaker_reference, raw=True)
                    if config.quality_verifier else math.nan,
                    n_candidates=len(result.candidates), frames=int(result.codes.numel()),
                    duration_s=result.codes.numel() / float(codec.frame_rate_hz), ended=result.best.ended,
                    tokens_generated=result.compute.tokens_generated, decodes=result.compute.codec_decodes,
                    verifier_calls=result.compute.verifier_calls, lm_flops=result.compute.lm_flops,
                    wall_s=result.compute.wall_s, seed=seed, audio=audio_rel)
                append_row(results_csv, row)  # last: a row in results.csv means the arm is done
                rows.append(row)
                n_new += 1
                bar.update(1)
            if not complete:
                break
        bar.close()
        wall_s = time.perf_counter() - start
        if not complete:
            notes.append(f"time limit {config.time_limit_s:.0f} s reached: {len(rows)} of {total} rows done; "
                         "relaunch with the same run id to continue")
        run.summary(n_rows=len(rows), n_rows_planned=total, n_new_rows=n_new, complete=complete,
                    results_csv=str(results_csv), arms=[a.name for a in arms], notes=notes, wall_s=wall_s,
                    lm_text_gain_nats=text_gain.gain_nats, lm_text_gain_fraction_better=text_gain.fraction_better,
                    check_models=metrics.model_files())
        return AblationResult(run_dir=run.dir, results_csv=results_csv, rows=rows, n_new_rows=n_new,
                              n_skipped_rows=n_skipped, complete=complete, notes=notes, wall_s=wall_s,
                              lm_text_gain=text_gain)
