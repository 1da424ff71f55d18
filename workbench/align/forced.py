"""Character durations in codec frames, by CTC forced alignment over the workbench's own recogniser.

Why: the interleaved LM layout (`workbench.lm.interleaved`) places each text unit right before the
codec frames that say it, so it needs to know which frames those are. A CTC recogniser trained on
the same corpus (`workbench.checkmodels.asr_model`) gives per-frame character log-probabilities;
`torchaudio.functional.forced_align` finds the most likely monotonic path through the known
transcript, which is reliable even where free decoding is not (the transcript is given, so a CER of
0.3 still places most characters within a frame or two).

Units are the characters of ``normalize_text(text)`` (lowercase letters, apostrophe and space),
framed by one space at each end: the leading and trailing space units absorb the silence before and
after the speech, so every codec frame belongs to exactly one unit. Unit i starts at the first
recogniser frame of its aligned character and ends where unit i+1 starts (the blanks after a
character belong to it), and the boundaries are then mapped from recogniser frames to codec frames
by time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from workbench.atomic import atomic_write_text
from workbench.checkmodels.asr_model import ALPHABET, CTCRecognizer
from workbench.verifiers.text import normalize_text

ALIGNMENT_FILE = "alignments.json"
ALIGNMENT_FORMAT = 1


class AlignmentError(ValueError):
    """An utterance that cannot be aligned (too short for its transcript, or an empty transcript)."""


def text_units(text: str, vocab: Sequence[str] = ALPHABET) -> str:
    """The unit string of `text`: its normalised characters that the recogniser knows, with one
    space before and after (the silence units). Deterministic; the same at training and inference."""
    known = set(vocab[1:])
    body = "".join(c for c in normalize_text(text) if c in known)
    if not body.strip():
        raise AlignmentError(f"text {text!r} has no characters the aligner knows")
    return f" {body} "


def align_units(log_probs: torch.Tensor, units: str, *, asr_frame_s: float, n_codec_frames: int,
                codec_frame_rate_hz: float, vocab: Sequence[str] = ALPHABET) -> list[int]:
    """Codec frames per unit (they sum to `n_codec_frames`) from one clip's (frames, vocab) CTC
    log-probabilities; raises AlignmentError when the clip is too short for its units."""
    import torchaudio.functional as AF

    index = {c: i for i, c in enumerate(vocab)}
    targets = torch.tensor([[index[c] for c in units]], dtype=torch.int32)
    n_repeats = sum(1 for a, b in zip(units, units[1:]) if a == b)
    if log_probs.shape[0] < len(units) + n_repeats:
        raise AlignmentError(f"{log_probs.shape[0]} recogniser frames cannot hold {len(units)} units")
    path, _ = AF.forced_align(log_probs[None].float(), targets, blank=0)
    path = path[0].tolist()
    # First frame of each unit on the path: a new non-blank label, or the same label after a blank
    # (a doubled letter), starts the next unit.
    starts: list[int] = []
    previous = 0
    for frame, label in enumerate(path):
        if label != 0 and label != previous:
            starts.append(frame)
        previous = label
    if len(starts) != len(units):
        raise AlignmentError(f"alignment path has {len(starts)} units, expected {len(units)}")
    starts[0] = 0  # the leading silence unit begins the clip
    boundaries = [min(n_codec_frames, round(s * asr_frame_s * codec_frame_rate_hz)) for s in starts]
    boundaries.append(n_codec_frames)
    for i in range(1, len(boundaries)):  # rounding must never make a unit negative
        boundaries[i] = max(boundaries[i], boundaries[i - 1])
    return [b - a for a, b in zip(boundaries, boundaries[1:])]


@dataclass(frozen=True)
class UnitAlignment:
    utterance_id: str
    units: str
    frames: tuple[int, ...]  # codec frames per unit

    def __post_init__(self) -> None:
        if len(self.units) != len(self.frames):
            raise ValueError(f"{self.utterance_id}: {len(self.units)} units but {len(self.frames)} durations")


def align_clips(model: CTCRecognizer, clips: Iterable[tuple[str, torch.Tensor, str, int]], *,
                codec_frame_rate_hz: float, batch_size: int = 16,
                progress: bool = True) -> tuple[dict[str, UnitAlignment], dict[str, str]]:
    """Align (utterance id, 16 kHz waveform, transcript, codec frames) clips. Returns the
    alignments and, for each clip that could not be aligned, the reason (reported, not raised)."""
    from tqdm.auto import tqdm

    clips = list(clips)
    asr_frame_s = model.spec.hop_length * model.spec.stride / 16000.0
    aligned: dict[str, UnitAlignment] = {}
    failed: dict[str, str] = {}
    bar = tqdm(total=len(clips), desc="forced alignment", unit="utt", disable=not progress)
    for start in range(0, len(clips), batch_size):
        chunk = clips[start:start + batch_size]
        log_probs = model.log_probs_of([wav for _, wav, _, _ in chunk], batch_size=batch_size)
        for (utt_id, _, text, n_frames), lp in zip(chunk, log_probs):
            try:
                units = text_units(text, model.spec.vocab)
                frames = align_units(lp, units, asr_frame_s=asr_frame_s, n_codec_frames=n_frames,
                                     codec_frame_rate_hz=codec_frame_rate_hz, vocab=model.spec.vocab)
                aligned[utt_id] = UnitAlignment(utt_id, units, tuple(frames))
            except AlignmentError as err:
                failed[utt_id] = str(err)
        bar.update(len(chunk))
    bar.close()
    return aligned, failed


def save_alignments(path: str | Path, alignments: dict[str, UnitAlignment], failed: dict[str, str],
                    meta: dict) -> Path:
    payload = {"format": ALIGNMENT_FORMAT, "meta": meta, "failed": failed,
               "alignments": {k: {"units": a.units, "frames": list(a.frames)} for k, a in sorted(alignments.items())}}
    atomic_write_text(Path(path), json.dumps(payload, sort_keys=True) + "\n")
    return Path(path)


def load_alignments(path: str | Path) -> dict[str, UnitAlignment]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no alignment file; run `python -m workbench.align` first")
    payload = json.loads(path.read_text())
    if payload.get("format") != ALIGNMENT_FORMAT:
        raise ValueError(f"{path}: alignment format {payload.get('format')!r}, expected {ALIGNMENT_FORMAT}")
    return {k: UnitAlignment(k, v["units"], tuple(v["frames"])) for k, v in payload["alignments"].items()}


__all__ = ["ALIGNMENT_FILE", "AlignmentError", "UnitAlignment", "text_units", "align_units", "align_clips",
           "save_alignments", "load_alignments"]
