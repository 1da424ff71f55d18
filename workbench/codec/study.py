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
    eval_max_utterances: int = 0  # 0: every held-out utterance
    verifiers: tuple[str, ...] = ("pocketsphinx", "resemblyzer")  # WER and SIM of resynthesis
    n_listen: int = 4
    tokenize_batch_size: int = 16

    PROFILES: ClassVar[dict] = stage_profiles("codec_study")  # workbench/profiles.yaml


@dataclass
class TrainedCodec:
    path: str  # what load_codec reads
    run_dir: Path | None
    codec_config: Any  # CodecConfig, or None for a loaded codec


def codec_config_for(study: CodecStudyConfig, profile: str):
    from workbench.codec.config import CodecConfig

    base = for_profile(CodecConfig, profile)
    return from_params(CodecConfig, study.train_overrides, base=base) if study.train_overrides else base


def train_or_load(study: CodecStudyConfig, profile: str, data_dir: Path) -> TrainedCodec:
    """Load `study.codec`, or train the profile's codec on `data_dir` under a deterministic run id
    (so a rerun resumes an interrupted training or reuses a finished one)."""
    import json

    from workbench.codec.train import train_codec
    from workbench.runs import runs_root

    if study.codec:
        return TrainedCodec(path=study.codec, run_dir=None, codec_config=None)
    codec_config = codec_config_for(study, profile)
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


