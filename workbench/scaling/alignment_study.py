"""The alignment ablation: which lever makes a small TTS LM read its text, measured row by row.

Each row is one LM run that differs from the others only in how text meets speech (all at the same
size, token budget, data and seed):

- ``llasa-bpe``: Llasa's layout and a BPE front-end (the paper's recipe);
- ``llasa-chars``: Llasa's layout, one token per character;
- ``llasa-phonemes``: Llasa's layout, a BPE over espeak-ng IPA (`workbench.lm.phonemes`);
- ``llasa-bpe-guided``: Llasa's layout with the training-only attention prior and CTC alignment
  loss (`workbench.lm.alignment_loss`); inference stays plain `generate`;
- ``interleaved-chars``: each character right before its frames (`workbench.lm.interleaved`), a
  departure from Llasa's layout that needs forced alignments;
- ``interleaved-chars-noise``: the same with 20 % of the input speech frames replaced by random
  codes during training (`workbench.lm.context_noise`); it pays off only past the cpu row budget
  (design.md, "Reading is not saying"), which is why the pipeline's LM trains longer.
- ``interleaved-chars-cfg``: 10 % of training rows lose their text (`text_dropout`), and the
  samples are drawn with classifier-free guidance on the text at scale 2 (`workbench.lm.guidance`).
- ``interleaved-chars-own``: 40 % of the input speech frames replaced by the model's own samples
  from a first pass without gradients (parallel scheduled sampling, `speech_input_noise_source =
  "model"`): errors of the kind free-running generation makes, rather than random codes.

Columns: the held-out text-conditioning gain (in each row's own layout), validation loss, WER of
text-only samples by every ASR verifier beside the codec-resynthesis WER of the real recordings
(the floor no LM can beat), speaker similarity to the real recording, training wall time. Rows are
ordinary `lm` runs (resumable, reused when finished), so the notebook reruns in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from workbench.settings import stage_profiles

SAMPLING_KEY = "guidance_scale"  # a row's sampling setting, not a training field

ROWS: dict[str, dict[str, Any]] = {
    "llasa-bpe": {"sequence_layout": "llasa", "text_frontend": "bpe"},
    "llasa-chars": {"sequence_layout": "llasa", "text_frontend": "chars"},
    "llasa-phonemes": {"sequence_layout": "llasa", "text_frontend": "phonemes"},
    "llasa-bpe-guided": {"sequence_layout": "llasa", "text_frontend": "bpe", "align_prior_weight": 1.0,
                         "align_ctc_weight": 1.0},
    "interleaved-chars": {"sequence_layout": "interleaved", "text_frontend": "chars"},
    "interleaved-chars-noise": {"sequence_layout": "interleaved", "text_frontend": "chars", "speech_input_noise": 0.2},
    "interleaved-chars-own": {"sequence_layout": "interleaved", "text_frontend": "chars", "speech_input_noise": 0.4,
                              "speech_input_noise_source": "model"},
    "interleaved-chars-cfg": {"sequence_layout": "interleaved", "text_frontend": "chars", "text_dropout": 0.1,
                              SAMPLING_KEY: 2.0},
}
"""Row name -> the LMTrainConfig fields it sets on top of the train profile (and, under
`SAMPLING_KEY`, the classifier-free guidance scale its samples are drawn with)."""


@dataclass(frozen=True)
class AlignmentStudyConfig:
    rows: tuple[str, ...] = tuple(ROWS)
    preset: str = "cpu-1m"
    token_budget: int = 400_000  # the first cpu ladder's largest budget, so rows compare with the measurements in docs/design.md
    train_profile: str = "cpu"
    n_sentences: int = 20  # held-out (test split) sentences for WER and similarity
    n_samples: int = 2  # text-only samples per sentence and row
    temperature: float = 0.8
    wer_verifiers: tuple[str, ...] = ("pocketsphinx", "workbench-asr")
    sim_verifier: str = "resemblyzer"
    max_gain_utterances: int = 32
    seed: int = 0
    n_listen: int = 3
    # Inputs from earlier stages (the pipeline passes them):
    tokens_dir: str = ""
    codec: str = ""
    asr_model: str = ""  # the workbench-asr model (10_codec trains it)
    lm_path: str = ""  # the pipeline's LM (20_lm_scaling), evaluated with `lm_samples` per sentence
    lm_samples: int = 4

    PROFILES: ClassVar[dict] = stage_profiles("alignment")  # workbench/profiles.yaml

    def __post_init__(self) -> None:
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown:
            raise ValueError(f"AlignmentStudyConfig.rows: unknown {unknown}; known: {list(ROWS)}")
        for name in ("n_sentences", "n_samples", "lm_samples", "token_budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"AlignmentStudyConfig.{name} = {getattr(self, name)}: must be >= 1")


def row_train_config(config: AlignmentStudyConfig, row: str):
    from workbench.config import for_profile
    from workbench.lm.train import LMTrainConfig

    fields = {k: v for k, v in ROWS[row].items() if k != SAMPLING_KEY}
    return for_profile(LMTrainConfig, config.train_profile, preset=config.preset, token_budget=config.token_budget,
                       seed=config.seed, progress=False, **fields)


def row_guidance_scale(row: str) -> float:
    """The classifier-free guidance scale a row samples with (1 = none)."""
    return float(ROWS[row].get(SAMPLING_KEY, 1.0))


def row_run_id(config: AlignmentStudyConfig, row: str) -> str:
    from workbench.config import config_hash
    from workbench.scaling.sweep import shards_key

    return f"alignment-{row}-{config_hash(row_train_config(config, row), 8)}-{shards_key(config.tokens_dir)}"


def train_rows(config: AlignmentStudyConfig, *, root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Train every row not yet finished (resuming interrupted ones); row -> its run summary."""
    from transformers.utils import logging as hf_logging

    from workbench.lm.train import train_lm
    from workbench.runs import runs_root
    from workbench.scaling.sweep import finished_summary

    if not config.tokens_dir:
        raise ValueError("tokens_dir is empty: run 10_codec first (the pipeline passes its tokens)")
    hf_logging.disable_progress_bar()
    out: dict[str, dict[str, Any]] = {}
    for row in config.rows:
        run_id = row_run_id(config, row)
        summary = finished_summary(runs_root(root) / "lm" / run_id)
        if summary is None:
            print(f"[alignment] training {row} ({config.preset}, {config.token_budget:,} tokens)", flush=True)
            summary = train_lm(row_train_config(config, row), config.tokens_dir, run_id=run_id, root=root).to_dict()
        out[row] = summary
    return out


@dataclass
class SpokenEvaluation:
    """WER (per verifier) and speaker similarity of text-only samples of held-out sentences."""

    wer: dict[str, float]
    sim: float
    n_clips: int
    listen: list[Any]  # the first sample of the first `n_listen` sentences (waveforms)


def held_out(config: AlignmentStudyConfig) -> list[Any]:
    from workbench.data.token_shards import read_token_shards

    _, utterances = read_token_shards(config.tokens_dir, split="test")
    if len(utterances) < 2:
        raise ValueError(f"{config.tokens_dir}: {len(utterances)} test utterances; the study needs at least 2")
    return utterances


def wer_verifiers_of(config: AlignmentStudyConfig) -> dict[str, Any]:
    """The study's ASR verifiers by name (workbench-asr with the pipeline's model)."""
    from workbench.verifiers.base import get

    out = {}
    for name in config.wer_verifiers:
        options = {"model": config.asr_model} if name == "workbench-asr" and config.asr_model else {}
        out[name] = get(name, **options)
    return out


def _mean_wer(config: AlignmentStudyConfig, wavs: list, texts: list[str], sample_rate: int) -> dict[str, float]:
    """Mean per-clip WER of `wavs` against `texts` by each of the study's ASR verifiers."""
    from workbench.lm.exposure import score_clips

    return score_clips(wer_verifiers_of(config), wavs, sample_rate, texts)[0]


def speak_and_score(lm: Any, codec: Any, config: AlignmentStudyConfig, n_samples: int,
                    guidance_scale: float = 1.0) -> SpokenEvaluation:
    """`n_samples` text-only samples (temperature `config.temperature`, classifier-free guidance
    `guidance_scale`) of each held-out sentence, decoded and scored by every WER verifier and by
    the speaker verifier against the recording."""
    import torch

    from workbench.lm.generate import SamplingConfig, synthesize
    from workbench.verifiers.base import get

    sentences = held_out(config)[: config.n_sentences]
    wavs, texts, references, listen = [], [], [], []
    for i, u in enumerate(sentences):
        reference = codec.decode(u.codes[None].long())[0]
        sampling = SamplingConfig(temperature=config.temperature, num_return_sequences=n_samples,
                                  seed=config.seed + i, max_new_tokens=2 * u.n_frames + 50,
                                  guidance_scale=guidance_scale)
        with torch.no_grad():
            results = synthesize(lm.model, lm.tokenizer, lm.layout, u.text, chunk=False, sampling=sampling, codec=codec)
        for k, result in enumerate(results):
            wav = result.wav[0] if result.wav is not None else torch.zeros(int(codec.sample_rate) // 10)
            wavs.append(wav)
            texts.append(u.text)
            references.append(reference)
            if k == 0 and i < config.n_listen:
                listen.append(wav)
    wer = _mean_wer(config, wavs, texts, int(codec.sample_rate))
    sim = float("nan")
    if config.sim_verifier:
        scores = get(config.sim_verifier).evaluate(wavs, int(codec.sample_rate), texts, prompts=references)
        sim = sum(float(r.raw) for r in scores) / len(scores)
    return SpokenEvaluation(wer=wer, sim=sim, n_clips=len(wavs), listen=listen)


def resynthesis_floor(codec: Any, config: AlignmentStudyConfig) -> SpokenEvaluation:
    """WER of the codec's resynthesis of the real recordings: what no LM on this codec can beat."""
    sentences = held_out(config)[: config.n_sentences]
    wavs = [codec.decode(u.codes[None].long())[0] for u in sentences]
    texts = [u.text for u in sentences]
    wer = _mean_wer(config, wavs, texts, int(codec.sample_rate))
    return SpokenEvaluation(wer=wer, sim=1.0, n_clips=len(wavs), listen=wavs[: config.n_listen])


def evaluate_model(model_dir: str | Path, codec: Any, config: AlignmentStudyConfig, n_samples: int,
                   guidance_scale: float = 1.0) -> dict[str, Any]:
    """Text gain (own layout) and spoken evaluation of one trained LM."""
    from workbench.lm.diagnostics import lm_text_gain
    from workbench.lm.model import load_lm

    lm = load_lm(model_dir)
    lm.model.eval()
    gain = lm_text_gain(lm, held_out(config), max_utterances=config.max_gain_utterances)
    spoken = speak_and_score(lm, codec, config, n_samples, guidance_scale)
    return {"layout": lm.meta.get("sequence_layout", "llasa"), "text_frontend": lm.meta.get("text_frontend", "bpe"),
            "guidance_scale": guidance_scale, "text_gain_nats": gain.gain_nats, "own_text_better": gain.fraction_better, "gain_utterances": gain.n_utterances,
            **{f"wer_{k}": v for k, v in spoken.wer.items()}, "sim": spoken.sim, "n_clips": spoken.n_clips,
            "_listen": spoken.listen}


def ablation_table(config: AlignmentStudyConfig, summaries: dict[str, dict[str, Any]], codec: Any):
    """One row per lever: the columns of the module docstring; audio kept aside for listening."""
    import pandas as pd

    rows, audio = [], {}
    for row, summary in summaries.items():
        record = evaluate_model(summary["model_dir"], codec, config, config.n_samples, row_guidance_scale(row))
        audio[row] = record.pop("_listen")
        rows.append({"row": row, **record, "valid_loss": summary["final_valid_loss"],
                     "tokens_seen": summary["tokens_seen"], "train_wall_s": summary["wall_s"]})
    table = pd.DataFrame(rows).set_index("row")
    return table, audio


def best_row(table) -> str:
    """The row whose text gain is largest (what the pipeline's LM should use)."""
    return str(table["text_gain_nats"].idxmax())


def listening_rows(config: AlignmentStudyConfig, audio: dict[str, list[Any]], floor: SpokenEvaluation) -> list[dict]:
    sentences = held_out(config)[: config.n_listen]
    return [{"text": u.text, "reference (codec)": floor.listen[i] if i < len(floor.listen) else None,
             **{row: clips[i] if i < len(clips) else None for row, clips in audio.items()}}
            for i, u in enumerate(sentences)]


__all__ = ["ROWS", "SAMPLING_KEY", "row_guidance_scale", "AlignmentStudyConfig", "SpokenEvaluation", "row_train_config", "row_run_id", "train_rows",
           "speak_and_score", "resynthesis_floor", "evaluate_model", "ablation_table", "best_row", "listening_rows",
           "held_out"]
