"""A look at an alignment: the log-mel spectrogram of one utterance with each unit's span marked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def alignment_figure(alignments_path: str | Path, corpus_dir: str | Path, utterance_id: str | None = None,
                     frame_rate_hz: float | None = None) -> Any:
    """Figure of one aligned utterance (default: the first held-out one): spectrogram, unit
    boundaries as vertical lines, each unit's character over its span (``␣`` for a space)."""
    import matplotlib.pyplot as plt

    from workbench.align.forced import load_alignments
    from workbench.audio import load_audio, log_mel
    from workbench.data.manifest import read_manifest

    alignments_path, corpus_dir = Path(alignments_path), Path(corpus_dir)
    aligned = load_alignments(alignments_path)
    manifest = {u.utterance_id: u for u in read_manifest(corpus_dir)}
    if utterance_id is None:
        held = [k for k, u in manifest.items() if k in aligned and u.split != "train"]
        utterance_id = (held or sorted(aligned))[0]
    if utterance_id not in aligned:
        raise KeyError(f"{utterance_id!r} has no alignment in {alignments_path}")
    if frame_rate_hz is None:
        index = json.loads((alignments_path.parent / "index.json").read_text())
        frame_rate_hz = float(index["codec"]["frame_rate_hz"])
    alignment = aligned[utterance_id]
    wav, sample_rate = load_audio(corpus_dir / manifest[utterance_id].audio_path)
    mel = log_mel(wav.reshape(1, -1), sample_rate, hop_length=sample_rate // 100)[0]  # 10 ms columns
    seconds = wav.numel() / sample_rate
    fig, ax = plt.subplots(figsize=(min(16, 2 + 3 * seconds), 3.2))
    ax.imshow(mel.numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, mel.shape[0]), cmap="magma")
    start = 0
    for unit, n in zip(alignment.units, alignment.frames):
        t0, t1 = start / frame_rate_hz, (start + n) / frame_rate_hz
        ax.axvline(t0, color="white", linewidth=0.6, alpha=0.7)
        ax.text((t0 + t1) / 2, mel.shape[0] * 1.02, "␣" if unit == " " else unit, ha="center", va="bottom", fontsize=9)
        start += n
    ax.set_xlabel("seconds")
    ax.set_ylabel("mel bin")
    ax.set_title(f"{utterance_id}: {len(alignment.units)} units, {sum(alignment.frames)} codec frames", pad=18)
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["alignment_figure"]
