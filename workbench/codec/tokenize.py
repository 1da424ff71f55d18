"""Encode a prepared corpus into codec-token shards (the LM's input).

Deterministic: utterances keep manifest order in the shards; within each chunk they are
encoded in batches of similar length (sorted by duration, ties by position), so padding is small
and the same corpus + codec + batch size always gives the same codes.

Resumable at two levels: a finished folder whose ``tokenize.json`` matches the codec (a hash of
its weights), the corpus (ids, paths, texts, splits) and the batch size is returned as is; an
interrupted run keeps its finished chunks (``partial/chunk-NNNNN.pt``, one per shard) and
encodes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from workbench.atomic import atomic_torch_save, atomic_write_json
from workbench.checkpoints import CheckpointError, UnsafeCheckpointError, load_weights_only
from workbench.codec.data import corpus_utterances
from workbench.codec.interface import Codec
from workbench.data.manifest import Utterance
from workbench.data.token_shards import (
    INDEX_NAME, CodecInfo, ShardIndex, TokenizedUtterance, read_shard_index, write_token_shards,
)

META_NAME = "tokenize.json"
PARTIAL_DIR = "partial"


def codec_fingerprint(codec: Codec) -> str:
    """Hash of the codec's weights and rates: changes whenever its codes could change."""
    digest = hashlib.sha256(f"{codec.sample_rate}:{codec.frame_rate_hz}:{codec.codebook_size}".encode())
    model = getattr(codec, "model", None)
    if model is not None:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    else:
        digest.update(str(getattr(codec, "source", "")).encode())
    return digest.hexdigest()[:16]


def _corpus_key(utterances: list[Utterance]) -> str:
    digest = hashlib.sha256()
    for u in utterances:
        digest.update(json.dumps([u.utterance_id, u.audio_path, u.text, u.speaker, u.split]).encode())
    return digest.hexdigest()[:16]


def _encode_chunk(codec: Codec, utterances: list[Utterance], batch_size: int) -> list[TokenizedUtterance]:
    from workbench.audio import load_audio

    wavs = [load_audio(u.audio_path, sample_rate=codec.sample_rate)[0][0] for u in utterances]
    order = sorted(range(len(wavs)), key=lambda i: (wavs[i].numel(), i))
    codes_of: dict[int, torch.Tensor] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        longest = max(wavs[i].numel() for i in rows)
        batch = torch.zeros(len(rows), longest)
        for j, i in enumerate(rows):
            batch[j, : wavs[i].numel()] = wavs[i]
        codes = codec.encode(batch, codec.sample_rate)
        for j, i in enumerate(rows):
            codes_of[i] = codes[j, : codec.n_frames(wavs[i].numel())].clone()
    return [TokenizedUtterance(utterance_id=u.utterance_id, speaker=u.speaker, text=u.text, split=u.split,
                               codes=codes_of[i]) for i, u in enumerate(utterances)]


def tokenize_corpus(codec: Codec, manifest_dir: str | Path, out_dir: str | Path, batch_size: int = 16,
                    shard_size: int = 2000, codec_id: str | None = None, progress: bool = False) -> ShardIndex:
    """Encode every utterance of `manifest_dir` (manifest.jsonl or transcripts.tsv folder) and
    write token shards to `out_dir`. `codec_id` is what the shards record as the codec (default:
    the codec's source path), i.e. what `load_codec` should be given to decode them."""
    from tqdm.auto import tqdm

    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size {batch_size} and shard_size {shard_size} must be >= 1")
    out_dir = Path(out_dir)
    utterances = corpus_utterances(manifest_dir)
    if not utterances:
        raise ValueError(f"{manifest_dir}: no utterances")
    info = CodecInfo(codebook_size=int(codec.codebook_size), frame_rate_hz=float(codec.frame_rate_hz),
                     sample_rate=int(codec.sample_rate), codec=str(codec_id or getattr(codec, "source", "")))
    key = {"codec": codec_fingerprint(codec), "corpus": _corpus_key(utterances), "batch_size": batch_size,
           "shard_size": shard_size, "codec_info": info.__dict__}
    meta_path = out_dir / META_NAME
    old_key = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if old_key == key and (out_dir / INDEX_NAME).exists():
        return read_shard_index(out_dir)
    partial = out_dir / PARTIAL_DIR
    if old_key != key:
        # something changed: nothing old may be reused or look finished
        (out_dir / INDEX_NAME).unlink(missing_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        atomic_write_json(meta_path, key)
    partial.mkdir(parents=True, exist_ok=True)

    chunks = [utterances[i: i + shard_size] for i in range(0, len(utterances), shard_size)]
    encoded: list[TokenizedUtterance] = []
    for number, chunk in enumerate(tqdm(chunks, disable=not progress, desc="tokenize", unit="shard")):
        path = partial / f"chunk-{number:05d}.pt"
        if path.exists():
            try:
                blob = load_weights_only(path)
            except UnsafeCheckpointError:
                raise
            except CheckpointError:  # a damaged chunk of an earlier run: encode it again
                blob = None
            if blob is not None:
                encoded.extend(TokenizedUtterance(**item) for item in blob)
                continue
        items = _encode_chunk(codec, chunk, batch_size)
        atomic_torch_save([item.__dict__ for item in items], path)
        encoded.extend(items)
    index = write_token_shards(out_dir, encoded, info, shard_size=shard_size)
    shutil.rmtree(partial, ignore_errors=True)
    return index
