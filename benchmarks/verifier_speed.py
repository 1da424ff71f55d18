"""Throughput of the offline verifiers (pocketsphinx, resemblyzer, dnsmos) on real Kathleen clips.

Search cost is dominated by verifier calls (Llasa §5 scores every candidate, and every beam every
0.5 s), so this reports, per verifier: first-call time (model load), utterances per second, and
speed against two baselines measured in the same run on the same clips:
  - real time: audio seconds scored per wall-clock second (>1 means faster than real time);
  - log-mel: `workbench.audio.log_mel` over the same clips, the cheapest full pass over the audio,
    so "x log-mel" says how many feature passes one verifier call costs.
It also prints each ASR's corpus WER on the clips. With `--workbench-asr RUN_DIR` the workbench's
own CTC recogniser is timed with each decoder (greedy; dictionary beam search; beam search plus
the run's word LM), so the cost of the better decoders is a ratio against greedy, same run.

    .venv/bin/python benchmarks/verifier_speed.py --n-clips 10 [--workbench-asr runs/asr/<id>]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench import verifiers
from workbench.audio import load_audio, log_mel
from workbench.data.readers import read_transcripts_tsv

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ as a folder of scripts
from timing import best_of  # noqa: E402

DEFAULT_CORPUS = Path("/work/shared/data/kathleen")


@dataclass(frozen=True)
class Timing:
    name: str
    first_call_s: float
    wall_s: float
    n_clips: int
    audio_s: float

    @property
    def clips_per_s(self) -> float:
        return self.n_clips / self.wall_s

    @property
    def speed_x_real_time(self) -> float:
        return self.audio_s / self.wall_s




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder with transcripts.tsv")
    parser.add_argument("--n-clips", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes; the fastest is reported")
    parser.add_argument("--workbench-asr", help="an asr run directory (or model.pt) to time with each decoder")
    args = parser.parse_args()

    rows = list(read_transcripts_tsv(args.corpus))[: args.n_clips]
    rate = 16000
    clips = [load_audio(r.audio_path, sample_rate=rate)[0][0] for r in rows]
    texts = [r.text for r in rows]
    prompt = clips[0]  # speaker prompt: the first clip, scored against every clip (itself included)
    audio_s = sum(c.numel() for c in clips) / rate
    print(f"{len(clips)} clips from {args.corpus}, {audio_s:.1f} s of audio, torch threads {torch.get_num_threads()}")

    # Baseline: log-mel features of the same clips, one clip at a time like the verifiers.
    log_mel(clips[0].unsqueeze(0), rate)  # build the cached transform outside the timing
    baseline_wall = best_of(lambda: [log_mel(c.unsqueeze(0), rate) for c in clips], args.repeats)
    baseline = Timing("log-mel baseline", 0.0, baseline_wall, len(clips), audio_s)

    timings = [baseline]
    wers: dict[str, float] = {}
    candidates = [("pocketsphinx", "pocketsphinx", {}, {"texts": texts}), ("resemblyzer", "resemblyzer", {}, {"prompts": prompt}),
                  ("dnsmos", "dnsmos", {}, {})]
    if args.workbench_asr:
        candidates += [(f"workbench-asr/{d}", "workbench-asr", {"model": args.workbench_asr, "decoder": d}, {"texts": texts})
                       for d in ("greedy", "lexicon", "lexicon-lm")]
    for label, name, options, kwargs in candidates:
        verifier = verifiers.get(name, **options)
        first_kwargs = {k: (v[:1] if k == "texts" else v) for k, v in kwargs.items()}
        start = time.perf_counter()
        verifier.evaluate(clips[:1], rate, **first_kwargs)  # model load and first-call warm-up
        first = time.perf_counter() - start
        results: list[verifiers.VerifierResult] = []

        def run(verifier=verifier, kwargs=kwargs) -> None:  # type: ignore[no-untyped-def]
            results[:] = verifier.evaluate(clips, rate, **kwargs)

        wall = best_of(run, args.repeats)
        timings.append(Timing(label, first, wall, len(clips), audio_s))
        if "texts" in kwargs:
            wers[label] = verifiers.corpus_wer(texts, [r.transcript or "" for r in results])

    print(f"\n{'verifier':<26} {'first call s':>12} {'clips/s':>9} {'x real time':>12} {'x log-mel':>10}")
    for t in timings:
        print(f"{t.name:<26} {t.first_call_s:>12.2f} {t.clips_per_s:>9.2f} {t.speed_x_real_time:>12.2f} "
              f"{t.clips_per_s / baseline.clips_per_s:>10.4f}")
    print("\nx real time = audio seconds scored per wall second (baseline 1.0 = real time; RTF = 1 / this)")
    for label, value in wers.items():
        print(f"{label} corpus WER on these {len(clips)} clips: {value:.3f}")
    greedy = next((t for t in timings if t.name == "workbench-asr/greedy"), None)
    if greedy is not None:
        print("(workbench-asr's WER here is not a held-out measure when these clips are in its training set, as "
              "Kathleen's first clips are; the run's summary holds its test-set WER)")
    for t in timings:
        if greedy is not None and t.name.startswith("workbench-asr/") and t is not greedy:
            print(f"{t.name}: {greedy.clips_per_s / t.clips_per_s:.2f}x the time of greedy decoding")


if __name__ == "__main__":
    main()
