"""The codec study the 10_codec notebook shows: train (or load) a codec, evaluate it on held-out
utterances of the training speaker and on unseen speakers, listen, tokenise the corpus.

`CodecStudyConfig` holds what the notebook decides; the codec's own architecture and training
settings stay in `CodecConfig` (its profile, plus `train_overrides` validated against it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workbench.config import config_hash, for_profile, from_params
from workbench.settings import stage_profiles

# Published reconstruction on LibriSpeech test-clean (Llasa paper, docs/reference.md §3): context only.
PUBLISHED = {
    "X-codec2 (published, LibriSpeech)": {"frame_rate_hz": 50, "wer_resynth": 2.47 / 100, "stoi": 0.92,
                                          "pesq_wb": 2.43, "pesq_nb": 3.04, "sim_resynth": 0.82},
    "ground truth (published)": {"wer_resynth": 1.96 / 100, "stoi": 1.0, "pesq_wb": 4.64, "pesq_nb": 4.55,
                                 "sim_resynth": 1.0},
}


@dataclass(frozen=True)
class CodecStudyConfig:
    codec: str = ""  # a codec to load (workbench run, codec.pt, or X-codec2 folder/hub id) instead of training
    corpus: str = "kathleen"  # training corpus (prepared with the profile's DataConfig)
    unseen_corpus: str = "vctk"  # speakers the codec never heard, for evaluation
    train_overrides: dict[str, Any] = field(default_factory=dict)  # CodecConfig fields over the profile
    # The codec's frozen semantic teacher (codec.teachers): "" none; "asr": the workbench CTC
    # recogniser trained first on the profile's ASR corpora (originals only, no codec in its
    # data, so the teacher does not depend on the codec it teaches); else a path
    # `semantic_model_path` accepts. Overrides train_overrides' semantic_model_path.
    semantic_teacher: str = ""
    eval_max_utterances: int = 0  # 0: every held-out utterance
    verifiers: tuple[str, ...] = ("pocketsphinx", "resemblyzer")  # WER and SIM of resynthesis
    n_listen: int = 4
    tokenize_batch_size: int = 16
    # --- codec ablation (see ABLATION_VARIANTS): each variant trained for ablation_steps --------
    ablation_variants: tuple[str, ...] = ()  # names in ABLATION_VARIANTS; () = no ablation
    ablation_steps: int = 500  # training steps of every variant (equal steps, not equal time)
    # False: the notebook tabulates the variants already trained (by `python -m
    # workbench.codec.study`) and names the missing ones, instead of training them in the demo
    ablation_train: bool = False

    PROFILES: ClassVar[dict] = stage_profiles("codec_study")  # workbench/profiles.yaml


# The codec ablation's variants: CodecConfig fields over the profile (and the study's own
# train_overrides). "+gan late" turns the discriminators on for the last GAN_LATE_FRACTION of the
# steps (see `variant_overrides`), the cheapest way to try the GAN at 3.6x the cost of a step.
# Every variant names the GAN switch, so that each row is the baseline plus one lever whatever
# the profile's own default (the smoke profile trains with the GAN on).
# "semantic_teacher" is a study field (see CodecStudyConfig), not a CodecConfig one: every
# variant names it, so that the baseline is teacher-free whatever the study's own choice.
_CTC = {"ctc_weight": 1.0, "ctc_batch_size": 2, "ctc_max_s": 4.0}
_PHASE = {"complex_stft_loss_weight": 10.0}
_NO_TEACHER = {"semantic_teacher": ""}
ABLATION_VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"use_gan": False, **_NO_TEACHER},
    "+ctc": {"use_gan": False, **_CTC, **_NO_TEACHER},
    "+phase": {"use_gan": False, **_PHASE, **_NO_TEACHER},
    "+ctc +phase": {"use_gan": False, **_CTC, **_PHASE, **_NO_TEACHER},
    "+gan late": {"use_gan": True, **_NO_TEACHER},
    "+asr teacher": {"use_gan": False, "semantic_teacher": "asr"},
}
STUDY_FIELDS = ("semantic_teacher",)  # variant keys that set the study, not the codec
GAN_LATE_FRACTION = 0.2


@dataclass
class TrainedCodec:
    path: str  # what load_codec reads
    run_dir: Path | None
    codec_config: Any  # CodecConfig, or None for a loaded codec


def teacher_asr_config(profile: str):
    """The `ASRTrainConfig` of the "asr" teacher: the profile's check-ASR recipe without the
    codec augmentation (the teacher must exist before the codec does)."""
    from workbench.checkmodels.setup import trained_verifier_configs

    asr_config, _ = trained_verifier_configs(profile, codec=None)
    return asr_config


def teacher_path(study: CodecStudyConfig, profile: str, train: bool = True) -> str | None:
    """The semantic teacher's path for `study` (None: no teacher, or the "asr" teacher is not
    trained yet and `train` is False). The "asr" teacher is trained, or its finished run reused."""
    if not study.semantic_teacher:
        return None
    if study.semantic_teacher != "asr":
        return study.semantic_teacher
    from workbench.checkmodels.asr_train import finished_asr_run, train_asr

    config = teacher_asr_config(profile)
    if not train:
        finished = finished_asr_run(config)
        return str(finished / "model.pt") if finished is not None else None
    return str(train_asr(config).model_path)


def codec_config_for(study: CodecStudyConfig, profile: str, teacher: str | None = None):
    """The CodecConfig `study` trains: the profile's, its train_overrides, and the teacher's path
    (from `teacher_path`) when it has one."""
    from workbench.codec.config import CodecConfig

    base = for_profile(CodecConfig, profile)
    overrides = dict(study.train_overrides)
    if teacher:
        overrides["semantic_model_path"] = teacher
    return from_params(CodecConfig, overrides, base=base) if overrides else base


def train_or_load(study: CodecStudyConfig, profile: str, data_dir: Path) -> TrainedCodec:
    """Load `study.codec`, or train the profile's codec on `data_dir` under a deterministic run id
    (so a rerun resumes an interrupted training or reuses a finished one), after its semantic
    teacher when the study names one."""
    import json

    from workbench.codec.train import train_codec
    from workbench.runs import runs_root

    if study.codec:
        return TrainedCodec(path=study.codec, run_dir=None, codec_config=None)
    codec_config = codec_config_for(study, profile, teacher_path(study, profile))
    run_id = f"{profile}-{Path(data_dir).name}-{config_hash(codec_config, 8)}"
    run_dir = runs_root() / "codec" / run_id
    meta = run_dir / "meta.json"
    # A workbench codec is saved as codec.pt; a fine-tuned X-codec2 as a transformers folder.
    artifact = run_dir / "codec.pt" if (run_dir / "codec.pt").exists() else run_dir if (run_dir / "config.json").exists() else None
    if meta.exists() and json.loads(meta.read_text()).get("status") == "finished" and artifact is not None:
        return TrainedCodec(path=str(artifact), run_dir=run_dir, codec_config=codec_config)
    result = train_codec(codec_config, data_dir, run_id=run_id)
    return TrainedCodec(path=str(result.codec_path), run_dir=result.run_dir, codec_config=codec_config)


def training_curves(run_dir: Path | None):
    """Figure of the training mel loss and the periodic valid evaluation (None for a loaded codec)."""
    from matplotlib.figure import Figure

    from workbench.runs import read_metrics

    if run_dir is None:
        return None
    records = read_metrics(run_dir)
    train = [(r["step"], r["mel_loss"]) for r in records if "mel_loss" in r and r.get("step") is not None]
    valid = [(r["step"], r["valid_mel_distance"]) for r in records if "valid_mel_distance" in r]
    usage = [(r["step"], r["valid_codebook_usage"]) for r in records if "valid_codebook_usage" in r]
    figure = Figure(figsize=(10, 3.2))
    left, right = figure.subplots(1, 2)
    if train:
        left.plot(*zip(*train), label="train mel L1", alpha=0.7)
    if valid:
        left.plot(*zip(*valid), "o-", label="valid mel distance")
    left.set_xlabel("step")
    left.set_ylabel("log-mel L1")
    left.legend()
    left.set_title("reconstruction loss")
    if usage:
        right.plot(*zip(*usage), "o-", color="C2")
    right.set_xlabel("step")
    right.set_ylabel("fraction of codes used")
    right.set_ylim(0, 1.05)
    right.set_title("codebook usage on valid")
    figure.tight_layout()
    return figure


def metrics_table(evals: dict[str, Any]):
    """Our evaluations beside the published X-codec2 row (context, not a target at this scale)."""
    import pandas as pd

    columns = ["n_utterances", "frame_rate_hz", "codebook_size", "bitrate_bps", "stoi", "pesq_wb", "pesq_nb",
               "mel_distance", "si_sdr", "codebook_usage", "codebook_perplexity", "wer_original", "wer_resynth",
               "sim_resynth", "rtf_encode", "rtf_decode"]
    rows = {name: {c: getattr(e, c, None) for c in columns} for name, e in evals.items()}
    rows.update({name: values for name, values in PUBLISHED.items()})
    return pd.DataFrame.from_dict(rows, orient="index")[columns]


def code_usage_figure(tokens_dir: str | Path, codebook_size: int):
    """Histogram of code frequencies over the tokenised corpus (how evenly the codebook is used)."""
    import torch
    from matplotlib.figure import Figure

    from workbench.data.token_shards import read_token_shards

    _, utterances = read_token_shards(tokens_dir)
    counts = torch.bincount(torch.cat([u.codes for u in utterances]), minlength=codebook_size).numpy()
    figure = Figure(figsize=(10, 3))
    left, right = figure.subplots(1, 2)
    left.bar(np.arange(codebook_size), counts, width=1.0)
    left.set_xlabel("code")
    left.set_ylabel("frames")
    left.set_title(f"code counts ({(counts > 0).mean():.1%} of {codebook_size} codes used)")
    ranked = np.sort(counts)[::-1]
    right.loglog(np.arange(1, codebook_size + 1), np.maximum(ranked, 0.5))
    right.set_xlabel("rank")
    right.set_ylabel("frames")
    right.set_title("rank-frequency")
    figure.tight_layout()
    return figure


def listening_rows(codec, data_dir: Path, n: int, split: str = "test") -> list[dict[str, Any]]:
    """Held-out utterances, each with its original and its reconstruction through `codec`."""
    import torch

    from workbench.audio import load_audio
    from workbench.data.manifest import read_manifest

    utterances = [u for u in read_manifest(data_dir) if u.split == split][:n]
    rows = []
    for u in utterances:
        wav, _ = load_audio(u.resolve(data_dir), sample_rate=codec.sample_rate)
        with torch.no_grad():
            recon = codec.decode(codec.encode(wav, codec.sample_rate))[0]
        rows.append({"utterance": u.utterance_id, "speaker": u.speaker, "text": u.text,
                     "original": wav[0], "reconstruction": recon})
    return rows


def tokens_dir_for(codec_path: str, dataset_name: str) -> Path:
    """Where the corpus tokens of this codec live: one folder per (dataset, codec weights)."""
    import hashlib

    from workbench.data.prepare import data_root

    path = Path(codec_path)
    tag = hashlib.sha256((str(path.resolve()) + str(path.stat().st_mtime_ns if path.exists() else "")).encode()).hexdigest()[:8]
    return data_root() / "tokens" / f"{dataset_name}-{tag}"




# ---------------------------------------------------------------------------------------------
# Codec ablation: variants at equal steps, one table row each
# ---------------------------------------------------------------------------------------------

ABLATION_COLUMNS = ["stoi", "pesq_wb", "pesq_nb", "mel_distance", "si_sdr", "codebook_usage",
                    "codebook_perplexity", "wer_original", "wer_resynth", "sim_resynth", "unseen_stoi",
                    "code_information_nats", "steps", "train_wall_s", "s_per_step"]


def variant_overrides(variant: str, steps: int) -> dict[str, Any]:
    """CodecConfig fields of one ablation variant trained for `steps` steps."""
    if variant not in ABLATION_VARIANTS:
        raise ValueError(f"unknown codec ablation variant {variant!r}; variants: {', '.join(ABLATION_VARIANTS)}")
    if steps < 1:
        raise ValueError(f"ablation steps {steps}: must be >= 1")
    overrides = {k: v for k, v in ABLATION_VARIANTS[variant].items() if k not in STUDY_FIELDS}
    overrides["max_steps"] = steps
    if overrides.get("use_gan"):
        overrides["disc_warmup_steps"] = int(round(steps * (1 - GAN_LATE_FRACTION)))
    return overrides


def variant_study(study: CodecStudyConfig, variant: str) -> CodecStudyConfig:
    """The study whose codec is `variant` at `study.ablation_steps` (the study's own
    train_overrides below the variant's)."""
    import dataclasses

    overrides = {**study.train_overrides, **variant_overrides(variant, study.ablation_steps)}
    study_fields = {k: v for k, v in ABLATION_VARIANTS[variant].items() if k in STUDY_FIELDS}
    return dataclasses.replace(study, codec="", train_overrides=overrides, **study_fields)


def _ablation_run_dir(study: CodecStudyConfig, profile: str, data_dir: Path, variant: str) -> Path | None:
    """Where `variant`'s codec is (to be) trained; None while its teacher is not trained."""
    from workbench.runs import runs_root

    chosen = variant_study(study, variant)
    teacher = teacher_path(chosen, profile, train=False)
    if chosen.semantic_teacher and teacher is None:
        return None
    config = codec_config_for(chosen, profile, teacher)
    return runs_root() / "codec" / f"{profile}-{Path(data_dir).name}-{config_hash(config, 8)}"


def code_information_of(codec, codec_path: str, data_dir: Path, tokens_dir: Path, asr_model: str | Path) -> float:
    """Held-out nats a character's identity gives about each of its codec frames
    (`workbench.align.information`): `data_dir` tokenised into `tokens_dir` and forced-aligned
    with the CTC recogniser `asr_model` (both reused when already done)."""
    from workbench.align.corpus import align_token_shards
    from workbench.align.information import token_dir_information
    from workbench.codec.tokenize import tokenize_corpus

    tokenize_corpus(codec, data_dir, tokens_dir, codec_id=codec_path)
    align_token_shards(tokens_dir, data_dir, asr_model, progress=False)
    return token_dir_information(tokens_dir).information_nats


def ablation_row(study: CodecStudyConfig, profile: str, data_dir: Path, unseen_dir: Path | None,
                 variant: str, train: bool, asr_model: str | Path | None = None) -> dict[str, Any] | None:
    """One variant's table row: trained (or its finished run reused; None when it is missing and
    `train` is False), then evaluated on the held-out split with the study's verifiers and on the
    unseen speakers (STOI), and, given a CTC recogniser `asr_model` to align with, the code
    information of its tokens. The evaluation is stored in the run folder and reused when the
    same evaluation is asked for again."""
    import json

    from workbench.atomic import atomic_write_json
    from workbench.codec.evaluate import evaluate_codec
    from workbench.codec.interface import load_codec

    run_dir = _ablation_run_dir(study, profile, data_dir, variant)
    meta = run_dir / "meta.json" if run_dir is not None else None
    finished = meta is not None and meta.exists() and json.loads(meta.read_text()).get("status") == "finished"
    if not finished and not train:
        return None
    trained = train_or_load(variant_study(study, variant), profile, data_dir)
    limit = study.eval_max_utterances or None
    key = {"data": str(data_dir), "unseen": str(unseen_dir), "max_utterances": limit,
           "verifiers": list(study.verifiers), "asr_model": str(asr_model) if asr_model else None}
    cache = trained.run_dir / "ablation_eval.json"
    if cache.exists() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())["row"]
    codec = load_codec(trained.path)
    held_out = evaluate_codec(codec, data_dir, split="test", max_utterances=limit, verifiers=study.verifiers)
    summary = json.loads((trained.run_dir / "summary.json").read_text())
    row = {name: getattr(held_out, name) for name in ABLATION_COLUMNS if hasattr(held_out, name)}
    row["unseen_stoi"] = (evaluate_codec(codec, unseen_dir, split=None, max_utterances=limit).stoi
                          if unseen_dir is not None else None)
    # the corpus tokens 10_codec makes for the same codec: tokenised and aligned once, for both
    tokens_dir = tokens_dir_for(trained.path, Path(data_dir).name)
    row["code_information_nats"] = (code_information_of(codec, trained.path, data_dir, tokens_dir, asr_model)
                                    if asr_model else None)
    row.update(steps=summary["steps"], train_wall_s=summary["train_wall_s"],
               s_per_step=summary["train_wall_s"] / max(summary["steps"], 1), run=str(trained.run_dir))
    atomic_write_json(cache, {"key": key, "row": row})
    return row


def ablation_table(study: CodecStudyConfig, profile: str, data_dir: Path, unseen_dir: Path | None = None,
                   train: bool | None = None, asr_model: str | Path | None = None):
    """(table, missing variant names): one row per variant of `study.ablation_variants`."""
    import pandas as pd

    train = study.ablation_train if train is None else train
    rows, missing = {}, []
    for variant in study.ablation_variants:
        row = ablation_row(study, profile, data_dir, unseen_dir, variant, train, asr_model)
        if row is None:
            missing.append(variant)
        else:
            rows[variant] = row
    table = pd.DataFrame.from_dict(rows, orient="index", columns=ABLATION_COLUMNS + ["run"])
    return table, missing


def with_pipeline_row(table, name: str, trained: TrainedCodec, held_out, unseen, code_information_nats: float | None):
    """`table` with the notebook's own codec as its first row (`name`), from the evaluations the
    notebook already made: so the ablation always holds at least one measured row, at the
    pipeline's full step count, beside the variants."""
    import json

    import pandas as pd

    row = {c: getattr(held_out, c) for c in ABLATION_COLUMNS if hasattr(held_out, c)}
    row.update(unseen_stoi=unseen.stoi, code_information_nats=code_information_nats, run=str(trained.run_dir or trained.path))
    if trained.run_dir is not None and (trained.run_dir / "summary.json").exists():
        summary = json.loads((trained.run_dir / "summary.json").read_text())
        row.update(steps=summary["steps"], train_wall_s=summary["train_wall_s"],
                   s_per_step=summary["train_wall_s"] / max(summary["steps"], 1))
    # A variant trained in the very same run (same config) is this codec: one row, named for both.
    same = [v for v, run in table["run"].items() if Path(str(run)) == Path(row["run"])] if len(table) else []
    if same:
        name = f"{name} (= {', '.join(same)})"
        table = table.drop(index=same)
    own = pd.DataFrame.from_dict({name: row}, orient="index", columns=list(table.columns))
    return pd.concat([own, table]) if len(table) else own


def ablation_command(profile: str, study: CodecStudyConfig) -> str:
    """The command that trains and evaluates the ablation the notebook reads."""
    return (f"python -m workbench.codec.study --profile {profile} --steps {study.ablation_steps} "
            f"--variants {' '.join(repr(v) for v in study.ablation_variants)}")


def ablation_listening_rows(table, data_dir: Path, n: int) -> list[dict[str, Any]]:
    """The first `n` held-out utterances: the original, then each variant's reconstruction in a
    column named after the variant (for `player_table`)."""
    from workbench.codec.interface import load_codec

    rows: list[dict[str, Any]] = []
    for variant, run in table["run"].items():
        variant_rows = listening_rows(load_codec(Path(run) / "codec.pt"), data_dir, n)
        if not rows:
            rows = [{k: r[k] for k in ("utterance", "speaker", "text", "original")} for r in variant_rows]
        for row, variant_row in zip(rows, variant_rows):
            row[variant] = variant_row["reconstruction"]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Train and evaluate the codec ablation of a profile (what the 10_codec notebook tabulates)."""
    import argparse
    import dataclasses

    from workbench.data.prepared import ensure_prepared

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps per variant")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(ABLATION_VARIANTS))
    parser.add_argument("--eval-max-utterances", type=int, default=None)
    parser.add_argument("--asr", default=None,
                        help="CTC recogniser (model file or asr run) that aligns each variant's tokens for the "
                             "code-information column; default: the 'asr' teacher, trained if missing")
    args = parser.parse_args(argv)
    study = for_profile(CodecStudyConfig, args.profile)
    changes = {k: v for k, v in (("ablation_steps", args.steps), ("ablation_variants", tuple(args.variants or ()) or None),
                                 ("eval_max_utterances", args.eval_max_utterances)) if v is not None}
    study = dataclasses.replace(study, **changes)
    data_dir = ensure_prepared(study.corpus, args.profile)
    unseen_dir = ensure_prepared(study.unseen_corpus, args.profile)
    asr = args.asr or teacher_path(dataclasses.replace(study, semantic_teacher="asr"), args.profile)
    for variant in study.ablation_variants:  # one at a time, so that each row is printed as it lands
        row = ablation_row(study, args.profile, data_dir, unseen_dir, variant, train=True, asr_model=asr)
        print(variant, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    table, _ = ablation_table(study, args.profile, data_dir, unseen_dir, train=False, asr_model=asr)
    print(table.drop(columns=["run"]).round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
