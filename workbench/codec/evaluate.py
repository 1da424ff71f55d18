"""Codec evaluation on a set of utterances: resynthesis quality, codebook use, speed.

Every utterance is encoded and decoded on its own (batch 1), so codes and timings do not depend
on batching; the reconstruction is cut to the input length. Quality metrics are means over
utterances; real-time factors are total processing time / total audio duration.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from workbench.codec import metrics as M
from workbench.codec.data import corpus_utterances, load_corpus_audio
from workbench.codec.interface import Codec


@dataclass
class UtteranceEval:
    utterance_id: str
    duration_s: float
    stoi: float
    pesq_wb: float
    pesq_nb: float
    mel_distance: float
    si_sdr: float


@dataclass
class CodecEval:
    source: str  # the codec
    data: str  # the data folder
    split: str | None
    n_utterances: int
    duration_s: float
    stoi: float
    pesq_wb: float
    pesq_nb: float
    mel_distance: float
    si_sdr: float
    codebook_usage: float  # fraction of the codebook used on this data
    codebook_perplexity: float
    codebook_size: int
    frame_rate_hz: float
    bitrate_bps: float
    rtf_encode: float  # encode seconds per second of audio (lower is faster)
    rtf_decode: float
    n_threads: int
    wer_original: float | None = None  # set when an ASR verifier is passed
    wer_resynth: float | None = None
    sim_resynth: float | None = None  # speaker similarity resynthesis vs original
    verifier_raw: dict[str, dict[str, float | str]] = field(default_factory=dict)  # name -> kind, original, resynth
    utterances: list[UtteranceEval] = field(default_factory=list)

    def to_json(self, path: str | Path) -> Path:
        from workbench.atomic import atomic_write_json

        return atomic_write_json(path, asdict(self))

    def headline(self) -> dict[str, float]:
        """The scalar metrics, without the per-utterance list (what goes in a results table)."""
        return {k: v for k, v in asdict(self).items() if k not in ("utterances", "verifier_raw")}


def _verifier_scores(names: Sequence[str], originals: list[torch.Tensor], resynth: list[torch.Tensor],
                     sample_rate: int, texts: list[str]) -> dict[str, dict[str, float | str]]:
    """Mean raw metric of each verifier on the originals and on the resynthesis. Speaker
    verifiers compare each resynthesis with its original (the prompt)."""
    import workbench.verifiers as V  # lazy: verifier models are heavy

    out: dict[str, dict[str, float | str]] = {}
    for name in names:
        verifier = V.get(name)

        def mean_raw(results) -> float:
            values = [r.raw.ovrl if hasattr(r.raw, "ovrl") else float(r.raw) for r in results]
            return float(np.mean(values)) if values else float("nan")

        resynth_results = verifier.evaluate(resynth, sample_rate, texts, prompts=originals)
        entry = {"resynth": mean_raw(resynth_results),
                 "kind": "asr" if resynth_results and resynth_results[0].transcript is not None
                 else "speaker" if hasattr(verifier, "similarity") else "other"}
        if entry["kind"] != "speaker":  # original vs itself is 1 for a speaker verifier
            entry["original"] = mean_raw(verifier.evaluate(originals, sample_rate, texts, prompts=originals))
        out[name] = entry
    return out


def evaluate_codec(codec: Codec, data: str | Path, split: str | None = "test",
                   max_utterances: int | None = None, verifiers: Sequence[str] | None = None,
                   out_dir: str | Path | None = None, n_audio_examples: int = 4,
                   progress: bool = False) -> CodecEval:
    """Encode/decode the utterances of `data` (a transcripts.tsv folder or a prepared corpus with
    manifest.jsonl) in `split` (None: all) and measure them.

    With `verifiers` (names registered in workbench.verifiers), adds WER of original and
    resynthesised audio (ASR verifiers) and speaker similarity of resynthesis to original.
    With `out_dir`, writes ``codec_eval.json`` and the first `n_audio_examples` original /
    resynthesised pairs as WAV files."""
    from tqdm.auto import tqdm

    utterances = corpus_utterances(data, split)[:max_utterances]
    if not utterances:
        raise ValueError(f"{data}: no utterances in split {split!r}")
    audio = load_corpus_audio(utterances, codec.sample_rate)
    rate = codec.sample_rate
    per_utt, all_codes, resynth = [], [], []
    encode_s = decode_s = 0.0
    for utterance, wav in tqdm(list(zip(utterances, audio.wavs)), disable=not progress, desc="codec eval"):
        start = time.perf_counter()
        codes = codec.encode(wav.unsqueeze(0), rate)
        middle = time.perf_counter()
        out = codec.decode(codes)[0]
        encode_s += middle - start
        decode_s += time.perf_counter() - middle
        codes = codes[0, : codec.n_frames(wav.numel())]
        all_codes.append(codes)
        if out.numel() < wav.numel():  # never expected; pad so metrics see equal lengths
            out = torch.nn.functional.pad(out, (0, wav.numel() - out.numel()))
        out = out[: wav.numel()]
        resynth.append(out)
        per_utt.append(UtteranceEval(
            utterance_id=utterance.utterance_id, duration_s=wav.numel() / rate,
            stoi=M.stoi(wav, out, rate), pesq_wb=M.pesq_wb(wav, out, rate), pesq_nb=M.pesq_nb(wav, out, rate),
            mel_distance=M.mel_distance(wav, out, rate), si_sdr=M.si_sdr(wav, out),
        ))
    stats = M.codebook_stats(torch.cat(all_codes), codec.codebook_size)
    duration = audio.duration_s

    def mean(name: str) -> float:
        return float(np.mean([getattr(u, name) for u in per_utt]))

    result = CodecEval(
        source=str(getattr(codec, "source", "")), data=str(data), split=split, n_utterances=len(per_utt),
        duration_s=duration, stoi=mean("stoi"), pesq_wb=mean("pesq_wb"), pesq_nb=mean("pesq_nb"),
        mel_distance=mean("mel_distance"), si_sdr=mean("si_sdr"), codebook_usage=stats.usage,
        codebook_perplexity=stats.perplexity, codebook_size=codec.codebook_size,
        frame_rate_hz=codec.frame_rate_hz, bitrate_bps=M.bitrate_bps(codec.frame_rate_hz, codec.codebook_size),
        rtf_encode=encode_s / duration, rtf_decode=decode_s / duration, n_threads=torch.get_num_threads(),
        utterances=per_utt,
    )
    if verifiers:
        texts = [u.text for u in utterances]
        raw = _verifier_scores(list(verifiers), audio.wavs, resynth, rate, texts)
        result.verifier_raw = raw
        for entry in raw.values():
            if entry["kind"] == "asr" and result.wer_resynth is None:
                result.wer_original, result.wer_resynth = entry["original"], entry["resynth"]
            elif entry["kind"] == "speaker" and result.sim_resynth is None:
                result.sim_resynth = entry["resynth"]
    if out_dir is not None:
        from workbench.audio import save_audio

        out_dir = Path(out_dir)
        result.to_json(out_dir / "codec_eval.json")
        for utterance, original, recon in list(zip(utterances, audio.wavs, resynth))[:n_audio_examples]:
            save_audio(out_dir / "audio" / f"{utterance.utterance_id}_original.wav", original, rate)
            save_audio(out_dir / "audio" / f"{utterance.utterance_id}_resynth.wav", recon, rate)
    if not math.isfinite(result.stoi):
        raise ValueError(f"evaluate_codec: non-finite STOI on {data}")
    return result
