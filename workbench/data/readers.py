"""Readers for the corpus layouts users bring; each yields raw `Utterance`s (no audio decoding).

Layouts:
- ``transcripts``: ``transcripts.tsv`` with ``path  speaker  utterance_id  text`` (the mirror's).
- ``ljspeech``: ``metadata.csv`` with ``id|text|normalized_text`` and ``wavs/<id>.wav``.
- ``libritts``: ``<speaker>/<chapter>/<id>.wav`` with ``<id>.normalized.txt`` (or ``.original.txt``).
- ``librispeech``: ``<speaker>/<chapter>/<id>.flac`` with ``<speaker>-<chapter>.trans.txt``.
- ``manifest``: a generic TSV (header row naming the columns) or JSONL file.

Raw utterances may carry an empty text or a missing file: checking is `prepare`'s job, so that
every problem is reported in one place instead of crashing the reader.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Iterator

from workbench.data.manifest import Utterance

Reader = Callable[[Path], Iterator[Utterance]]
READERS: dict[str, Reader] = {}
TRANSCRIPTS_FILE = "transcripts.tsv"  # the mirror's layout, and what `workbench.data.synth` writes

# Column names accepted in generic manifests, mapped to Utterance fields.
_COLUMN_ALIASES = {
    "audio_path": "audio_path", "path": "audio_path", "audio": "audio_path", "file": "audio_path",
    "wav": "audio_path", "text": "text", "transcript": "text", "sentence": "text",
    "speaker": "speaker", "speaker_id": "speaker", "utterance_id": "utterance_id", "id": "utterance_id",
    "split": "split",
}


def text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; a byte that is not UTF-8 raises naming the file, line and
    column (instead of Python's message, which names neither)."""
    path = Path(path)
    lines = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}:{number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                             "save the file as UTF-8") from None
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def register_reader(name: str) -> Callable[[Reader], Reader]:
    def add(reader: Reader) -> Reader:
        READERS[name] = reader
        return reader

    return add


@register_reader("transcripts")
def read_transcripts_tsv(root: Path) -> Iterator[Utterance]:
    """Rows of ``transcripts.tsv``. Where the id column does not hold ids (most values repeat, as in
    FSDD, whose column holds the spoken digit), every utterance takes its file's path, minus the
    extension, as its id instead. A few repeated ids are kept as they are: `prepare` reports them."""
    path = Path(root) / TRANSCRIPTS_FILE
    rows = []
    for number, row in enumerate(csv.reader(text_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 3:
            raise ValueError(f"{path}:{number}: expected 'path<TAB>speaker<TAB>utterance_id<TAB>text', got {row!r}")
        rows.append(row)
    ids = [row[2] for row in rows]
    unique = 2 * len(set(ids)) > len(ids)
    for row in rows:
        audio, speaker = row[0], row[1]
        utterance_id = row[2] if unique else str(Path(audio).with_suffix("")).replace("/", "_")
        text = row[3] if len(row) > 3 else ""
        yield Utterance(utterance_id=utterance_id, audio_path=str(Path(root) / audio),
                        text=text.strip(), speaker=speaker or "unknown")


@register_reader("ljspeech")
def read_ljspeech(root: Path) -> Iterator[Utterance]:
    path = Path(root) / "metadata.csv"
    for number, row in enumerate(csv.reader(text_lines(path), delimiter="|", quoting=csv.QUOTE_NONE), 1):
        if not row:
            continue
        if len(row) < 2:
            raise ValueError(f"{path}:{number}: expected 'id|text[|normalized_text]', got {row!r}")
        # The normalised column spells out numbers and abbreviations, which is what TTS wants.
        text = row[2] if len(row) > 2 and row[2].strip() else row[1]
        yield Utterance(utterance_id=row[0], audio_path=str(Path(root) / "wavs" / f"{row[0]}.wav"),
                        text=text.strip(), speaker="LJ")


@register_reader("libritts")
def read_libritts(root: Path) -> Iterator[Utterance]:
    for wav in sorted(Path(root).rglob("*.wav")):
        text_path = wav.with_suffix(".normalized.txt")
        if not text_path.exists():
            text_path = wav.with_suffix(".original.txt")
        text = "\n".join(text_lines(text_path)).strip() if text_path.exists() else ""
        speaker = wav.stem.split("_")[0]
        yield Utterance(utterance_id=wav.stem, audio_path=str(wav), text=text, speaker=speaker)


@register_reader("librispeech")
def read_librispeech(root: Path) -> Iterator[Utterance]:
    for trans in sorted(Path(root).rglob("*.trans.txt")):
        for line in text_lines(trans):
            if not line.strip():
                continue
            utterance_id, _, text = line.partition(" ")
            speaker = utterance_id.split("-")[0]
            yield Utterance(utterance_id=utterance_id, audio_path=str(trans.parent / f"{utterance_id}.flac"),
                            text=text.strip(), speaker=speaker)


def read_manifest_file(path: Path) -> Iterator[Utterance]:
    """Generic TSV (with a header row) or JSONL manifest; relative audio paths are taken from the
    manifest's folder."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = (json.loads(line) for line in text_lines(path) if line.strip())
    elif path.suffix in (".tsv", ".csv"):
        delimiter = "\t" if path.suffix == ".tsv" else ","
        rows = csv.DictReader(text_lines(path), delimiter=delimiter)
    else:
        raise ValueError(f"{path}: a manifest must be .tsv, .csv (with a header row) or .jsonl")
    for number, row in enumerate(rows, 1):
        record = {}
        for key, value in row.items():
            field = _COLUMN_ALIASES.get(str(key).strip().lower())
            if field:
                record[field] = value
        if "audio_path" not in record:
            raise ValueError(f"{path}:{number}: no audio path column; accepted names: "
                             f"{sorted(k for k, v in _COLUMN_ALIASES.items() if v == 'audio_path')}")
        audio = Path(record["audio_path"])
        record["audio_path"] = str(audio if audio.is_absolute() else path.parent / audio)
        record.setdefault("utterance_id", audio.stem)
        record.setdefault("speaker", "unknown")
        record["text"] = str(record.get("text") or "").strip()
        yield Utterance(**{k: str(v) for k, v in record.items()})


def detect_layout(root: Path) -> str:
    """Name of the layout found in `root`, or a ValueError listing what was looked for."""
    root = Path(root)
    if root.is_file():
        return "manifest"
    if (root / TRANSCRIPTS_FILE).exists():
        return "transcripts"
    if (root / "metadata.csv").exists() and (root / "wavs").is_dir():
        return "ljspeech"
    if next(root.rglob("*.trans.txt"), None) is not None:
        return "librispeech"
    if next(root.rglob("*.normalized.txt"), None) is not None or next(root.rglob("*.original.txt"), None) is not None:
        return "libritts"
    for name in ("manifest.jsonl", "manifest.tsv"):
        if (root / name).exists():
            return "manifest"
    raise ValueError(
        f"{root}: no known corpus layout (looked for transcripts.tsv, metadata.csv + wavs/, "
        "LibriSpeech *.trans.txt, LibriTTS *.normalized.txt, manifest.jsonl/.tsv)"
    )


def read_corpus(root: Path, layout: str | None = None) -> Iterator[Utterance]:
    """Utterances of `root` (a folder or a manifest file) in the given or detected layout."""
    root = Path(root)
    layout = layout or detect_layout(root)
    if layout == "manifest":
        if root.is_dir():
            root = next(p for p in (root / "manifest.jsonl", root / "manifest.tsv") if p.exists())
        return read_manifest_file(root)
    if layout not in READERS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(READERS) + ['manifest']}")
    return READERS[layout](root)
