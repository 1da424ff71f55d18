"""Token shards -> TTS training sequences -> padded batches, in a resumable deterministic order.

Batches are right-padded to their longest sequence. To keep padding low without biasing the order,
each epoch is shuffled, cut into groups of `group_size` batches, sorted by length inside a group,
split into batches, and the batches shuffled again (the "length-grouped" sampler of many LM
trainers). The order depends only on (seed, epoch), so a resumed run that restores
`BatchStream.state_dict()` sees exactly the batches an uninterrupted run would have seen.

Data parallel: every epoch's batch list is cut to a multiple of `world_size` and rank r takes
global batch `cursor·world_size + r`. One process with gradient accumulation g therefore sees the
same micro-batches per optimizer step as g processes without accumulation.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch

from workbench.data.token_shards import TokenizedUtterance
from workbench.lm.layout import IGNORE_INDEX, TokenLayout, TokenSequence, build_tts_sequence


@dataclass
class EncodedDataset:
    """TTS sequences ready for batching, and what was dropped or cut on the way."""

    sequences: list[TokenSequence]
    n_dropped: int = 0  # longer than max_seq_len with too_long="drop"
    n_truncated: int = 0  # cut to max_seq_len with too_long="truncate"
    n_unaligned: int = 0  # interleaved layout: utterances without an alignment (skipped)

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.sequences]

    @property
    def n_tokens(self) -> int:
        return sum(self.lengths)

    def __len__(self) -> int:
        return len(self.sequences)


def encode_utterances(utterances: Sequence[TokenizedUtterance], tokenizer: Any, layout: TokenLayout,
                      max_seq_len: int = 2048,
                      too_long: Literal["drop", "truncate"] = "drop",
                      alignments: Mapping[str, Any] | None = None) -> EncodedDataset:
    """Build one TTS sequence per utterance (docs/reference.md §2), capped at `max_seq_len` tokens.

    "drop" skips a too-long utterance (the paper's choice: 2048 tokens is about 40 s); "truncate"
    keeps its first `max_seq_len` tokens, which loses the end token, so the model never learns to
    stop on those: prefer "drop" unless most data is long.

    With `alignments` (utterance id -> `workbench.align.forced.UnitAlignment`) the sequences use the
    interleaved layout (`workbench.lm.interleaved`); utterances without one are skipped and counted.
    """
    from workbench.lm.interleaved import build_interleaved_sequence
    from workbench.lm.phonemes import frontend_texts

    if too_long not in ("drop", "truncate"):
        raise ValueError(f"too_long={too_long!r}: expected 'drop' or 'truncate'")
    sequences: list[TokenSequence] = []
    dropped = truncated = unaligned = 0
    texts = frontend_texts(tokenizer, [u.text for u in utterances])  # IPA for a phoneme tokenizer
    for utterance, text in zip(utterances, texts):
        if alignments is not None:
            alignment = alignments.get(utterance.utterance_id)
            if alignment is None or sum(alignment.frames) != utterance.n_frames:
                unaligned += 1
                continue
            seq = build_interleaved_sequence(tokenizer, layout, alignment.units, alignment.frames, utterance.codes)
        else:
            seq = build_tts_sequence(tokenizer, layout, text, utterance.codes)
        if len(seq) > max_seq_len:
            if too_long == "drop":
                dropped += 1
                continue
            seq = TokenSequence(seq.input_ids[:max_seq_len], seq.labels[:max_seq_len])
            truncated += 1
        sequences.append(seq)
    return EncodedDataset(sequences=sequences, n_dropped=dropped, n_truncated=truncated, n_unaligned=unaligned)


def split_utterances(utterances: Sequence[TokenizedUtterance], *, train_split: str = "train",
                     valid_split: str = "valid", valid_fraction: float = 0.05,
                     ) -> tuple[list[TokenizedUtterance], list[TokenizedUtterance]]:
    """(train, valid). Uses the shards' own split labels when a `valid_split` exists; otherwise
    holds out `valid_fraction` by a hash of the utterance id (stable across runs and machines,
    unlike a seeded shuffle that changes when utterances are added)."""
    valid = [u for u in utterances if u.split == valid_split]
    if valid:
        train = [u for u in utterances if u.split == train_split] or [
            u for u in utterances if u.split != valid_split]
        return train, valid
    threshold = int(valid_fraction * 2**32)
    valid = [u for u in utterances if zlib.crc32(u.utterance_id.encode()) < threshold]
    held = {u.utterance_id for u in valid}
    return [u for u in utterances if u.utterance_id not in held], valid


@dataclass
class Batch:
    input_ids: torch.Tensor  # (batch, time) long, right-padded
    attention_mask: torch.Tensor | None  # (batch, time) long, 1 = real token; None when packed
    labels: torch.Tensor  # (batch, time) long, IGNORE_INDEX on masked and padded positions
    seq_lens: list[int]  # one per utterance (a packed row holds several)
    # Packed rows (`workbench.lm.packing`): positions restart at 0 for every utterance, which is
    # what keeps attention inside each utterance. None for one utterance per row.
    position_ids: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens: what the token budget counts."""
        return sum(self.seq_lens)

    @property
    def n_loss_tokens(self) -> int:
        """Targets that carry loss after the model's one-step shift."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def to(self, device: Any) -> "Batch":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(self.input_ids.to(device, non_blocking=True), move(self.attention_mask),
                     self.labels.to(device, non_blocking=True), self.seq_lens, move(self.position_ids))

    @property
    def is_packed(self) -> bool:
        return self.position_ids is not None


def collate(sequences: Sequence[TokenSequence], pad_token_id: int) -> Batch:
    """Right-pad to the longest sequence. The pad id never matters for the loss (masked), only for
    being a valid embedding index."""
    if not sequences:
        raise ValueError("collate needs at least one sequence")
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        input_ids[row, :n] = torch.tensor(seq.input_ids)
        if seq.labels is not None:
            labels[row, :n] = torch.tensor(seq.labels)
        mask[row, :n] = 1
    return Batch(input_ids=input_ids, attention_mask=mask, labels=labels,
                 seq_lens=[len(s) for s in sequences])


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  group_size: int = 32) -> list[list[int]]:
    """Index batches for one epoch (see module docstring); the last partial batch is kept."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    span = batch_size * max(1, group_size)
    for start in range(0, len(order), span):
        group = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


@dataclass
class BatchStream:
    """Endless, resumable stream of this rank's batches over epochs."""

    dataset: EncodedDataset
    batch_size: int
    pad_token_id: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    group_size: int = 32
    epoch: int = 0
    cursor: int = 0  # global micro-batch groups already consumed in this epoch
    _batches: list[list[int]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.dataset) < self.world_size:
            raise ValueError(f"{len(self.dataset)} training sequences for {self.world_size} processes")

    def _plan_epoch(self) -> list:
        """This epoch's micro-batches for every rank, in order (a subclass packs them differently)."""
        return epoch_batches(self.dataset.lengths, self.batch_size, self.seed, self.epoch, self.group_size)

    def _collate(self, entry: Any) -> Batch:
        """One planned micro-batch (a list of sequence indices) as tensors."""
        return collate([self.dataset.sequences[i] for i in entry], self.pad_token_id)

    def _epoch_batches(self) -> list:
        if self._batches is None:
            batches = self._plan_epoch()
            # Every rank must take the same number of steps, or collectives deadlock.
            self._batches = batches[: len(batches) - len(batches) % self.world_size]
        return self._batches

    def __next__(self) -> Batch:
        batches = self._epoch_batches()
        if (self.cursor + 1) * self.world_size > len(batches):
            self.epoch, self.cursor, self._batches = self.epoch + 1, 0, None
            batches = self._epoch_batches()
        entry = batches[self.cursor * self.world_size + self.rank]
        self.cursor += 1
        return self._collate(entry)

    def __iter__(self) -> "BatchStream":
        return self

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed,
                "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "max_seq_len" in state and not hasattr(self, "max_seq_len"):
            raise ValueError(f"data position saved with packed rows of {state['max_seq_len']} tokens, "
                             "resuming unpacked: the batch order would differ")
        for key in ("seed", "world_size", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"data position saved with {key}={state[key]}, resuming with "
                                 f"{getattr(self, key)}: the batch order would differ")
        self.epoch, self.cursor, self._batches = int(state["epoch"]), int(state["cursor"]), None


def eval_batches(dataset: EncodedDataset, batch_size: int, pad_token_id: int, max_batches: int,
                 rank: int = 0, world_size: int = 1) -> list[Batch]:
    """This rank's share of a fixed validation set: the first `max_batches` batches in stored order
    (all when 0), dealt round-robin to the ranks. Every evaluation of a run, every run of a sweep
    and any number of processes score the same sequences."""
    batches = [list(range(i, min(i + batch_size, len(dataset))))
               for i in range(0, len(dataset), batch_size)]
    if max_batches > 0:
        batches = batches[:max_batches]
    return [collate([dataset.sequences[i] for i in b], pad_token_id) for b in batches[rank::world_size]]


__all__ = [
    "EncodedDataset", "Batch", "BatchStream", "encode_utterances", "split_utterances", "collate",
    "epoch_batches", "eval_batches",
]
