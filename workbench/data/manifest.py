"""The manifest: one record per utterance, the common currency of every corpus reader.

A prepared corpus lives in ``data/<corpus>/`` with ``manifest.jsonl`` (one `Utterance` per line,
audio paths relative to that folder) and ``wav/`` holding mono audio at the corpus sample rate.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

from workbench.atomic import atomic_write_text

SPLITS = ("train", "valid", "test")
MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class Utterance:
    utterance_id: str
    audio_path: str  # absolute, or relative to the manifest's folder
    text: str
    speaker: str
    duration_s: float = 0.0
    sample_rate: int = 0
    split: str = ""

    def resolve(self, root: str | Path) -> Path:
        """Absolute path of the audio, relative paths taken from `root` (the manifest's folder)."""
        path = Path(self.audio_path)
        return path if path.is_absolute() else Path(root) / path


_FIELD_NAMES = tuple(f.name for f in fields(Utterance))


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> Path:
    lines = [json.dumps(asdict(u), ensure_ascii=False) for u in utterances]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a manifest.jsonl; a line with unknown or missing fields raises with its line number."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no manifest; prepare the corpus first (`workbench data prepare`)")
    utterances = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        unknown = set(record) - set(_FIELD_NAMES)
        if unknown:
            raise ValueError(f"{path}:{number}: unknown manifest fields {sorted(unknown)}")
        try:
            utterances.append(Utterance(**record))
        except TypeError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    return utterances


def manifest_frame(utterances: Iterable[Utterance]):
    """pandas DataFrame view, one row per utterance."""
    import pandas as pd

    return pd.DataFrame([asdict(u) for u in utterances], columns=list(_FIELD_NAMES))
