"""Align every utterance of a token-shard folder, once: ``<tokens>/alignments.json``.

The file records what it was made from (the recogniser file's sha256, the shards' index and the
alignment code's version), so a rerun with the same inputs reuses it and a changed recogniser or
re-tokenised corpus aligns again. Clips that cannot be aligned are listed with the reason and left
out of interleaved training (reported, never silently dropped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from workbench.align.forced import ALIGNMENT_FILE, ALIGNMENT_FORMAT, align_clips, load_alignments, save_alignments
from workbench.checkpoints import sha256_file


@dataclass(frozen=True)
class AlignmentSummary:
    path: str
    n_aligned: int
    n_failed: int
    mean_frames_per_unit: float
    reused: bool


def _key(tokens_dir: Path, asr_model: Path) -> dict:
    index = json.loads((tokens_dir / "index.json").read_text())
    return {"format": ALIGNMENT_FORMAT, "asr_model_sha256": sha256_file(asr_model),
            "tokens": {"codec": index.get("codec"), "n_utterances": index.get("n_utterances"),
                       "n_frames": index.get("n_frames")}}


def _summary(path: Path, reused: bool) -> AlignmentSummary:
    payload = json.loads(path.read_text())
    aligned = load_alignments(path)
    units = sum(len(a.units) for a in aligned.values())
    frames = sum(sum(a.frames) for a in aligned.values())
    return AlignmentSummary(path=str(path), n_aligned=len(aligned), n_failed=len(payload.get("failed", {})),
                            mean_frames_per_unit=frames / max(units, 1), reused=reused)


def align_token_shards(tokens_dir: str | Path, corpus_dir: str | Path, asr_model: str | Path, *,
                       progress: bool = True) -> AlignmentSummary:
    """Forced-align the utterances of `tokens_dir` (audio from the prepared corpus `corpus_dir`)
    with the CTC recogniser `asr_model`, writing ``alignments.json`` beside the shards."""
    from workbench.audio import load_audio
    from workbench.checkmodels.asr_model import SAMPLE_RATE_HZ, load_model
    from workbench.data.manifest import read_manifest
    from workbench.data.token_shards import read_token_shards

    tokens_dir, corpus_dir, asr_model = Path(tokens_dir), Path(corpus_dir), Path(asr_model)
    out = tokens_dir / ALIGNMENT_FILE
    key = _key(tokens_dir, asr_model)
    if out.exists() and json.loads(out.read_text()).get("meta") == key:
        return _summary(out, reused=True)
    info, utterances = read_token_shards(tokens_dir)
    audio = {u.utterance_id: corpus_dir / u.audio_path for u in read_manifest(corpus_dir)}
    missing = [u.utterance_id for u in utterances if u.utterance_id not in audio]
    if missing:
        raise ValueError(f"{corpus_dir}: {len(missing)} utterances of {tokens_dir} are not in its manifest "
                         f"(e.g. {missing[0]!r}): align with the corpus the shards were made from")
    model = load_model(asr_model)

    def clips():
        for u in utterances:
            wav, _ = load_audio(audio[u.utterance_id], SAMPLE_RATE_HZ)
            yield u.utterance_id, wav.reshape(-1), u.text, u.n_frames

    aligned, failed = align_clips(model, clips(), codec_frame_rate_hz=info.frame_rate_hz, progress=progress)
    save_alignments(out, aligned, failed, key)
    return _summary(out, reused=False)


__all__ = ["AlignmentSummary", "align_token_shards"]
