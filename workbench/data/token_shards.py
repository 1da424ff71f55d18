"""Codec-token shards: what codec tokenisation writes and the LM reads.

A shard folder holds ``index.json`` (codec description, shard list, counts) and ``shard-NNNNN.pt``
files. Each shard stores the codes of many utterances concatenated in one int32 tensor with
offsets, plus aligned lists of utterance ids, speakers, texts and splits: compact, and loads in
one read without pickling Python objects per utterance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from workbench.atomic import atomic_torch_save, atomic_write_json
from workbench.checkpoints import CheckpointError, UnsafeCheckpointError, load_weights_only

INDEX_NAME = "index.json"


@dataclass(frozen=True)
class CodecInfo:
    """What the LM needs to know about the codec that made the tokens."""

    codebook_size: int
    frame_rate_hz: float
    sample_rate: int
    codec: str = ""  # path or id that `workbench.codec.load_codec` accepts


@dataclass
class TokenizedUtterance:
    utterance_id: str
    speaker: str
    text: str
    split: str
    codes: torch.Tensor  # (frames,) int, values in [0, codebook_size)

    @property
    def n_frames(self) -> int:
        return int(self.codes.numel())


@dataclass
class ShardIndex:
    codec: CodecInfo
    shards: list[str] = field(default_factory=list)
    n_utterances: int = 0
    n_frames: int = 0


def _pack(utterances: list[TokenizedUtterance]) -> dict:
    lengths = torch.tensor([u.n_frames for u in utterances], dtype=torch.int64)
    offsets = torch.zeros(len(utterances) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    codes = torch.cat([u.codes.to(torch.int32).flatten() for u in utterances]) if utterances else torch.zeros(0, dtype=torch.int32)
    return {
        "codes": codes,
        "offsets": offsets,
        "utterance_id": [u.utterance_id for u in utterances],
        "speaker": [u.speaker for u in utterances],
        "text": [u.text for u in utterances],
        "split": [u.split for u in utterances],
    }


def _unpack(blob: dict) -> Iterator[TokenizedUtterance]:
    offsets = blob["offsets"]
    for i, utterance_id in enumerate(blob["utterance_id"]):
        yield TokenizedUtterance(
            utterance_id=utterance_id,
            speaker=blob["speaker"][i],
            text=blob["text"][i],
            split=blob["split"][i],
            codes=blob["codes"][offsets[i]: offsets[i + 1]].to(torch.int64),
        )


def write_token_shards(out_dir: str | Path, utterances: Iterable[TokenizedUtterance],
                       codec: CodecInfo, shard_size: int = 2000) -> ShardIndex:
    """Write utterances into shards of at most `shard_size`; the index is written last, so a
    folder without index.json is an unfinished write."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = ShardIndex(codec=codec)
    batch: list[TokenizedUtterance] = []

    def flush() -> None:
        name = f"shard-{len(index.shards):05d}.pt"
        atomic_torch_save(_pack(batch), out_dir / name)
        index.shards.append(name)
        index.n_utterances += len(batch)
        index.n_frames += sum(u.n_frames for u in batch)
        batch.clear()

    for utterance in utterances:
        if utterance.codes.numel() and int(utterance.codes.max()) >= codec.codebook_size:
            raise ValueError(
                f"{utterance.utterance_id}: code {int(utterance.codes.max())} >= codebook_size {codec.codebook_size}"
            )
        batch.append(utterance)
        if len(batch) >= shard_size:
            flush()
    if batch or not index.shards:
        flush()
    atomic_write_json(out_dir / INDEX_NAME, asdict(index))
    return index


def read_shard_index(shard_dir: str | Path) -> ShardIndex:
    path = Path(shard_dir) / INDEX_NAME
    if not path.exists():
        raise FileNotFoundError(f"{shard_dir}: no {INDEX_NAME}; not a token-shard folder or an unfinished write")
    try:
        raw = json.loads(path.read_text())
        return ShardIndex(codec=CodecInfo(**raw["codec"]), shards=list(raw["shards"]),
                          n_utterances=int(raw["n_utterances"]), n_frames=int(raw["n_frames"]))
    except json.JSONDecodeError as error:
        problem = f"not valid JSON ({error})"
    except KeyError as error:
        problem = f"no {error.args[0]!r} entry"
    except (TypeError, ValueError) as error:
        problem = f"a malformed entry ({error})"
    raise ValueError(f"{path}: not a token-shard index: {problem}; tokenize the corpus again "
                     "(`workbench codec tokenize CODEC --data DIR --out NEW_DIR`)")


def read_token_shards(shard_dir: str | Path, split: str | None = None) -> tuple[CodecInfo, list[TokenizedUtterance]]:
    """All utterances of a shard folder (optionally one split), in written order."""
    index = read_shard_index(shard_dir)
    utterances = []
    for name in index.shards:
        path = Path(shard_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: token shard listed in {INDEX_NAME} is missing; tokenize the corpus "
                                    "again (`workbench codec tokenize`)")
        try:
            blob = load_weights_only(path)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as error:
            raise ValueError(f"{path}: token shard is truncated or corrupt ({str(error).split('(', 1)[-1]}; "
                             "tokenize the corpus again (`workbench codec tokenize`) into a new folder") from None
        utterances.extend(u for u in _unpack(blob) if split is None or u.split == split)
    return index.codec, utterances
