"""The inference-time search ablation (Llasa §5): strategies × budgets × search verifiers.

Runs over held-out sentences (voice-cloning prompts from other held-out utterances); each chosen
clip is re-checked by metrics the search never saw.

    from workbench.config import for_profile
    from workbench.search.ablation import AblationConfig, run_ablation
    result = run_ablation(for_profile(AblationConfig, "cpu", lm_path="runs/lm/.../best"))
    result.results_csv            # one row per utterance × arm

A run of kind ``search`` writes:
- ``results.csv``: one row per utterance × arm (columns: `AblationRow`); rows already there are
  skipped when the same run is relaunched (resumable; the row is written last, after its audio).
- ``audio/<arm>/<utterance>.wav`` (chosen), ``audio/<arm>/<utterance>.worst.wav`` (the lowest
  scored candidate, when there were several), ``audio/reference/`` (the real recording) and
  ``audio/prompt/`` (the voice-cloning prompt).
- ``candidates.jsonl``: every candidate's codes and score per row (`export_preferences` reads it).

Arms. ``sample`` is the no-search baseline and runs at budget 1 only; the other strategies run at
every budget above 1 (at budget 1 each of them is plain sampling). A search-verifier spec is a
verifier name, ``a+b`` (equal-weight `weighted` combination) or ``p>o`` (process verifier p steers
partial sequences, outcome verifier o picks among complete ones: the paper's "SIM for 2 s, then
WER" is ``resemblyzer>pocketsphinx`` with ``partial_mix``). Strategies without a process step
(sample, best_of_n) only use the outcome side of a spec, so duplicates are dropped.

Checks. Each chosen clip is scored by the metric verifiers (`wer_verifier`, `sim_verifier`,
`quality_verifier`) and by independent ones (`check_verifiers`: e.g. search on pocketsphinx, check
on workbench-asr; search on resemblyzer, check on workbench-speaker), as the paper re-checked
WavLM-SIM search with ECAPA. A check verifier that is not installed or has no trained model is
reported once and its columns are left empty (NaN); the run goes on.

The package: `config` (settings and result types), `plan` (arms and verifier specs), `heldout`
(sentences, prompts, the LM's text-conditioning gain), `store` (results.csv and candidates.jsonl),
`metrics` (scores of the chosen clips), `run` (the loop), `cli` (`workbench search ablate`).
"""

from workbench.search.ablation.config import (PROCESS_STRATEGIES, RESULTS_FILE, AblationConfig, AblationResult,
                                               AblationRow, Arm)
from workbench.search.ablation.heldout import (TEXT_GAIN_FLOOR_NATS, HeldOut, corpus_dir, held_out_items,
                                                lm_text_gain, split_utterances)
from workbench.search.ablation.plan import load_check_verifier, plan_arms, search_verifiers_for
from workbench.search.ablation.run import run_ablation, search_codec_path
from workbench.search.ablation.store import read_rows

__all__ = ["PROCESS_STRATEGIES", "RESULTS_FILE", "TEXT_GAIN_FLOOR_NATS", "AblationConfig", "AblationResult",
           "AblationRow", "Arm", "HeldOut", "corpus_dir", "held_out_items", "lm_text_gain", "load_check_verifier",
           "plan_arms", "read_rows", "run_ablation", "search_codec_path", "search_verifiers_for", "split_utterances"]
