"""Audio players for notebooks and their HTML export: compressed, inline, no scripts.

IPython's `Audio` embeds 16-bit WAV as base64, which makes a report with dozens of clips tens of
megabytes. Here clips are encoded as Ogg/Opus (about 1/15 the size of WAV at speech quality; plays
in every current browser) inside a plain `<audio>` element with a data: URI, so the exported HTML
plays with no network and no widget state.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def encode_audio(wav, sample_rate: int) -> tuple[bytes, str]:
    """(bytes, mime type) of a mono clip in the most compact format libsndfile writes for it."""
    import soundfile as sf

    from workbench.audio import resample

    data = torch.as_tensor(np.asarray(wav, dtype=np.float32)).flatten()
    if sample_rate not in OPUS_RATES:  # Opus only takes these rates; 16 kHz speech is unharmed
        data = resample(data.unsqueeze(0), sample_rate, 16000).squeeze(0)
        sample_rate = 16000
    buffer = io.BytesIO()
    sf.write(buffer, data.clamp(-1, 1).numpy(), sample_rate, format="OGG", subtype="OPUS")
    return buffer.getvalue(), "audio/ogg"


def audio_html(wav, sample_rate: int, label: str | None = None) -> str:
    payload, mime = encode_audio(wav, sample_rate)
    src = f"data:{mime};base64,{base64.b64encode(payload).decode()}"
    caption = f"<div style='font-size:0.85em'>{html.escape(label)}</div>" if label else ""
    return f"<div style='display:inline-block;margin:4px'>{caption}<audio controls preload='metadata' src='{src}'></audio></div>"


@dataclass
class _HTML:
    """Minimal object with an HTML repr, so this module does not need IPython at import time."""

    body: str

    def _repr_html_(self) -> str:
        return self.body


def player(wav, sample_rate: int, label: str | None = None) -> _HTML:
    """One playable clip, for display in a notebook cell."""
    return _HTML(audio_html(wav, sample_rate, label))


def player_table(rows: Sequence[dict], audio_columns: Sequence[str], sample_rate: int,
                 text_columns: Sequence[str] = ()) -> _HTML:
    """A table with one row per item: text columns, then one player per audio column
    (e.g. original beside reconstruction)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (*text_columns, *audio_columns))
    body = []
    for row in rows:
        cells = [f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in text_columns]
        cells += [f"<td>{audio_html(row[c], sample_rate) if row.get(c) is not None else ''}</td>"
                  for c in audio_columns]
        body.append(f"<tr>{''.join(cells)}</tr>")
    # Its own scrolling box: one column per model size can be wider than the page.
    return _HTML(f"<div style='overflow-x:auto;max-width:100%'><table><thead><tr>{head}</tr></thead>"
                 f"<tbody>{''.join(body)}</tbody></table></div>")
