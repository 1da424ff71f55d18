"""Reading against saying: where a TTS LM's words get lost between its text gain and its samples.

The text-conditioning gain (`lm.diagnostics`) is measured teacher-forced: every frame is predicted
from the *true* past frames. Samples are generated free-running: every frame follows the model's
own earlier frames. This module decodes held-out sentences four ways and scores each with the
same ASR verifiers, so the gap between the two is a number rather than a guess:

- ``floor``: the codec's resynthesis of the real codes (what no LM on this codec can beat);
- ``teacher-forced``: each frame sampled (at the sampling temperature) from the LM given the true
  past frames and durations: what the LM's reading is worth in audio;
- ``free, true durations`` (interleaved layout only): free-running sampling with every unit held
  for its true number of frames, so timing errors are ruled out;
- ``free``: the ordinary text-only samples (`lm.generate.synthesize`), what the reports play.

At cpu scale the first two are close and the last two are not: the frames are right when the
context is right and drift once the context is the model's own (exposure bias), whatever the
durations. Each row also gets a character error rate, which still moves where WER is saturated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch

ROWS = ("floor", "teacher-forced", "free, true durations", "free")


def _speech_positions(labels: Sequence[int], layout: Any) -> list[int]:
    """Positions of a built sequence whose target is a speech token (not end-of-unit or specials)."""
    lo, hi = layout.speech_offset, layout.speech_offset + layout.codebook_size
    return [i for i, label in enumerate(labels) if lo <= label < hi]


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def teacher_forced_codes(lm: Any, utterance: Any, alignment: Any = None, *, temperature: float = 0.0,
                         generator: torch.Generator | None = None, guidance: Any = None) -> torch.Tensor:
    """One code per frame of `utterance`, each drawn from the LM given the true text and true past
    frames (and, for an interleaved LM, the true durations from `alignment`). Temperature 0 takes
    the most likely code. `guidance` (`lm.guidance.TextGuidance`): each frame from the guided
    distribution, the text-free twin of the sequence run beside it."""
    from workbench.lm.data import encode_utterances

    alignments = {utterance.utterance_id: alignment} if alignment is not None else None
    data = encode_utterances([utterance], lm.tokenizer, lm.layout, max_seq_len=10**9, alignments=alignments)
    if len(data.sequences) != 1:
        raise ValueError(f"{utterance.utterance_id}: cannot build its training sequence (interleaved LMs need an "
                         "alignment whose durations sum to the utterance's frames)")
    sequence = data.sequences[0]
    ids = torch.tensor([sequence.input_ids])
    logits = lm.model(ids).logits[0]
    if guidance is not None:
        logits = guidance.combine(logits, lm.model(guidance.text_free(ids)).logits[0])
    speech = slice(lm.layout.speech_offset, lm.layout.speech_offset + lm.layout.codebook_size)
    # the logits at position i - 1 predict the token at position i
    return torch.tensor([_pick(logits[i - 1, speech], temperature, generator)
                         for i in _speech_positions(sequence.labels, lm.layout)], dtype=torch.long)


@torch.no_grad()
def free_running_codes(lm: Any, alignment: Any, *, temperature: float = 0.8,
                       generator: torch.Generator | None = None, guidance: Any = None) -> torch.Tensor:
    """Codes an interleaved LM generates for `alignment.units` on its own past frames, each unit
    held for exactly its true number of frames (`alignment.frames`): the model chooses what the
    frames say, never how long a unit lasts. With `guidance`, the text-free twin runs as a second
    row of the same cache and each frame is drawn from the guided distribution."""
    from workbench.lm.interleaved import end_of_unit_id, interleaved_prompt_ids, unit_ids

    from transformers import DynamicCache

    from workbench.lm.model import cache_kwarg

    tokenizer, layout, model = lm.tokenizer, lm.layout, lm.model
    speech = slice(layout.speech_offset, layout.speech_offset + layout.codebook_size)
    cache = {cache_kwarg(model): DynamicCache(config=model.config)}

    def step(ids: list[int]) -> torch.Tensor:
        row = torch.tensor([ids])
        if guidance is None:
            return model(input_ids=row, use_cache=True, **cache).logits[0, -1]
        both = model(input_ids=torch.cat([row, guidance.text_free(row)]), use_cache=True, **cache).logits[:, -1]
        return guidance.combine(both[0], both[1])

    step(interleaved_prompt_ids(tokenizer, layout, alignment.units))
    eou = end_of_unit_id(tokenizer)
    codes: list[int] = []
    for unit, n_frames in zip(unit_ids(tokenizer, alignment.units), alignment.frames):
        logits = step([unit])
        for _ in range(n_frames):
            code = _pick(logits[speech], temperature, generator)
            codes.append(code)
            logits = step([code + layout.speech_offset])
        step([eou])
    return torch.tensor(codes, dtype=torch.long)


def aligned_utterances(utterances: Sequence[Any], alignments: Mapping[str, Any]) -> list[Any]:
    """The utterances whose alignment exists and whose durations sum to their frame count."""
    return [u for u in utterances
            if u.utterance_id in alignments and sum(alignments[u.utterance_id].frames) == u.n_frames]


@dataclasses.dataclass
class ExposureRow:
    row: str
    wer: dict[str, float]  # mean per-clip WER by verifier
    cer: dict[str, float]  # mean per-clip character error rate by verifier
    seconds_per_clip: float
    n_clips: int


def score_clips(verifiers: Mapping[str, Any], wavs: list[torch.Tensor], sample_rate: int,
                texts: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(mean WER, mean CER) of `wavs` against `texts` by each ASR verifier (normalised text)."""
    import jiwer

    from workbench.verifiers.text import normalize_text

    wer, cer = {}, {}
    for name, verifier in verifiers.items():
        results = verifier.evaluate(wavs, sample_rate, texts)
        wer[name] = sum(float(r.raw) for r in results) / len(results)
        errors = []
        for text, r in zip(texts, results):
            reference, hypothesis = normalize_text(text), normalize_text(r.transcript or "")
            errors.append(jiwer.cer(reference, hypothesis) if hypothesis else 1.0)
        cer[name] = sum(errors) / len(errors)
    return wer, cer


def exposure_rows(lm: Any, codec: Any, utterances: Sequence[Any], verifiers: Mapping[str, Any], *,
                  alignments: Mapping[str, Any] | None = None, temperature: float = 0.8,
                  seed: int = 0, guidance_scale: float = 1.0,
                  rows: Sequence[str] = ROWS) -> list[ExposureRow]:
    """The module's rows for `utterances` (held-out `TokenizedUtterance`s): one clip per sentence
    and row. An interleaved LM needs `alignments` (utterances without a matching one are left out);
    a Llasa-layout LM has no "free, true durations" row. `guidance_scale` != 1 samples every LM row
    with classifier-free guidance on the text (`lm.guidance`; the model must have trained with
    text dropout). `rows`: which of `ROWS` to decode (the others are skipped)."""
    from workbench.lm.generate import SamplingConfig, synthesize
    from workbench.lm.guidance import guidance_for

    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"exposure rows {unknown}: known rows are {list(ROWS)}")
    from workbench.lm.interleaved import is_interleaved

    interleaved = is_interleaved(lm.model)
    guidance = guidance_for(lm.model, guidance_scale)
    if interleaved:
        if alignments is None:
            raise ValueError("an interleaved LM needs the utterances' alignments (workbench.align)")
        utterances = aligned_utterances(utterances, alignments)
    if not utterances:
        raise ValueError("no utterance to score (none has an alignment that matches its frames)")
    sample_rate = int(codec.sample_rate)
    silence = torch.zeros(sample_rate // 10)

    def decode(codes: torch.Tensor) -> torch.Tensor:
        return codec.decode(codes[None].long())[0] if codes.numel() else silence

    generator = torch.Generator().manual_seed(seed)
    clips: dict[str, list[torch.Tensor]] = {name: [] for name in ROWS}
    lm.model.eval()
    wanted = set(rows)
    for i, u in enumerate(utterances):
        alignment = alignments[u.utterance_id] if interleaved else None
        if "floor" in wanted:
            clips["floor"].append(decode(u.codes))
        if "teacher-forced" in wanted:
            clips["teacher-forced"].append(decode(teacher_forced_codes(lm, u, alignment, temperature=temperature,
                                                                       generator=generator, guidance=guidance)))
        if interleaved and "free, true durations" in wanted:
            clips["free, true durations"].append(decode(free_running_codes(lm, alignment, temperature=temperature,
                                                                           generator=generator, guidance=guidance)))
        if "free" in wanted:
            sampling = SamplingConfig(temperature=temperature, num_return_sequences=1, seed=seed + i,
                                      max_new_tokens=2 * u.n_frames + 50, guidance_scale=guidance_scale)
            with torch.no_grad():
                result = synthesize(lm.model, lm.tokenizer, lm.layout, u.text, chunk=False, sampling=sampling,
                                    codec=codec)[0]
            clips["free"].append(result.wav[0] if result.wav is not None else silence)
    texts = [u.text for u in utterances]
    out = []
    for name in ROWS:
        if not clips[name]:
            continue
        wer, cer = score_clips(verifiers, clips[name], sample_rate, texts)
        seconds = sum(w.numel() for w in clips[name]) / sample_rate / len(clips[name])
        out.append(ExposureRow(name, wer, cer, seconds, len(clips[name])))
    return out


def exposure_table(rows: Sequence[ExposureRow]):
    """One pandas row per `ExposureRow`: wer_<verifier>, cer_<verifier>, seconds per clip, clips."""
    import pandas as pd

    return pd.DataFrame([{"row": r.row, **{f"wer_{k}": v for k, v in r.wer.items()},
                          **{f"cer_{k}": v for k, v in r.cer.items()},
                          "seconds_per_clip": r.seconds_per_clip, "n_clips": r.n_clips} for r in rows]).set_index("row")


def main(argv: list[str] | None = None) -> None:
    """``python -m workbench.lm.exposure MODEL_DIR TOKENS_DIR CODEC [--asr MODEL] [--n 20]``: the
    four rows for the first N test-split sentences, as a table."""
    import argparse

    from workbench.codec import load_codec
    from workbench.data.token_shards import read_token_shards
    from workbench.lm.diagnostics import lm_alignments
    from workbench.lm.model import load_lm
    from workbench.verifiers.base import get

    parser = argparse.ArgumentParser(prog="python -m workbench.lm.exposure", description=main.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("tokens_dir")
    parser.add_argument("codec")
    parser.add_argument("--asr", default="", help="workbench-asr model (10_codec trains it); '' = pocketsphinx only")
    parser.add_argument("--n", type=int, default=20, help="held-out sentences")
    parser.add_argument("--split", default="test")
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.8],
                        help="sampling temperatures, one table each (0 = the most likely code)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS),
                        help="which rows to decode (e.g. floor teacher-forced: no free-running)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0],
                        help="classifier-free guidance scales on the text, one table each (1 = off; > 1 needs "
                             "a model trained with text_dropout)")
    args = parser.parse_args(argv)
    lm = load_lm(args.model_dir)
    _, utterances = read_token_shards(args.tokens_dir, split=args.split)
    verifiers = {"pocketsphinx": get("pocketsphinx")}
    if args.asr:
        verifiers["workbench-asr"] = get("workbench-asr", model=args.asr)
    alignments = lm_alignments(lm)
    if alignments is not None:
        utterances = aligned_utterances(utterances, alignments)
    codec = load_codec(args.codec)
    for scale in args.guidance:
        for temperature in args.temperature:
            rows = exposure_rows(lm, codec, utterances[: args.n], verifiers, alignments=alignments,
                                 temperature=temperature, seed=args.seed, guidance_scale=scale, rows=args.rows)
            print(f"guidance scale {scale}, temperature {temperature}:\n{exposure_table(rows).round(4).to_string()}",
                  flush=True)


if __name__ == "__main__":
    main()


__all__ = ["ROWS", "aligned_utterances", "teacher_forced_codes", "free_running_codes", "ExposureRow", "score_clips", "exposure_rows",
           "exposure_table"]
