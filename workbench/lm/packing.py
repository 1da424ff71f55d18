"""Packed training batches: several utterances per row, up to `max_seq_len` tokens.

Utterances are short (Kathleen about 200 tokens, LibriTTS-like corpora a few hundred), so a batch
padded per row spends most of a GPU step on padding and launch overhead (measured on an H200 with
the 1B shape: MFU 0.04-0.07 padded at the shipped batch size). A packed row concatenates whole
utterances; each keeps its own attention span and positions:

- ``position_ids`` restart at 0 at every utterance. transformers (>= 4.54) reads the restarts
  and, with ``attention_mask=None`` and no cache, builds a block-diagonal causal mask for SDPA and
  eager attention; a flash-attention implementation instead takes the varlen path, which needs the
  whole micro-batch flattened into one row (`model_inputs` does that).
- The loss mask is the utterances' own: labels are copied as they are, and each utterance's first
  label is set to IGNORE_INDEX, because after the model's one-step shift it would otherwise become
  the target of the previous utterance's last token (unpacked, position 0 is never a target, and
  a TTS sequence's first label is IGNORE_INDEX anyway).
- Trailing padding forms its own block (positions from 0, no labels): it attends only to itself.
- ``Batch.seq_lens`` lists every utterance, so FLOP accounting (`workbench.lm.flops`) counts real
  tokens and each utterance's own attention span, not the row's.

Row assignment: every epoch is shuffled with (seed, epoch), cut into groups, and each group is
packed first-fit-decreasing; rows are shuffled again and dealt out `batch_size` rows per
micro-batch. The order depends only on (seed, epoch, max_seq_len), so resume is exact as for
`BatchStream`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from workbench.lm.data import Batch, BatchStream
from workbench.lm.layout import IGNORE_INDEX, TokenSequence

PACK_GROUP = 2048  # utterances packed together; bounds the packing work and keeps rows shuffled


def pack_first_fit(indices: Sequence[int], lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Rows of `indices` whose lengths sum to at most `capacity` each, first-fit decreasing
    (longest first, each into the first row with room); ties keep the given order."""
    order = sorted(indices, key=lambda i: -lengths[i])
    room = np.empty(len(order), dtype=np.int64)
    rows: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"sequence {i} has {n} tokens, more than a packed row's {capacity}")
        fits = np.flatnonzero(room[: len(rows)] >= n)
        if fits.size:
            r = int(fits[0])
            rows[r].append(i)
            room[r] -= n
        else:
            room[len(rows)] = capacity - n
            rows.append([i])
    return rows


def packed_epoch_batches(lengths: Sequence[int], batch_size: int, max_seq_len: int, seed: int,
                         epoch: int, group: int = PACK_GROUP) -> list[list[list[int]]]:
    """One epoch of micro-batches, each `batch_size` rows of utterance indices (see the module
    docstring); the last partial micro-batch is kept."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    rows: list[list[int]] = []
    for start in range(0, len(order), group):
        rows.extend(pack_first_fit(order[start:start + group], lengths, max_seq_len))
    rng.shuffle(rows)
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def collate_packed(rows: Sequence[Sequence[TokenSequence]], pad_token_id: int, width: int = 0) -> Batch:
    """One row per entry of `rows` (each a list of sequences laid end to end), right-padded to the
    longest row, or to `width` when given (one shape for every batch: what a compiled model
    wants); no attention mask (the position restarts carry it)."""
    if not rows or not all(rows):
        raise ValueError("collate_packed needs at least one row, and no empty row")
    longest = max(sum(len(s) for s in row) for row in rows)
    if width and longest > width:
        raise ValueError(f"a packed row of {longest} tokens does not fit width {width}")
    width = width or longest
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    seq_lens: list[int] = []
    for r, row in enumerate(rows):
        at = 0
        for seq in row:
            n = len(seq)
            input_ids[r, at:at + n] = torch.tensor(seq.input_ids)
            if seq.labels is not None:
                labels[r, at:at + n] = torch.tensor(seq.labels)
            labels[r, at] = IGNORE_INDEX  # never a target unpacked; packed it would follow the last utterance
            position_ids[r, at:at + n] = torch.arange(n)
            seq_lens.append(n)
            at += n
        position_ids[r, at:] = torch.arange(width - at)  # padding: a block of its own
    return Batch(input_ids=input_ids, attention_mask=None, labels=labels, seq_lens=seq_lens,
                 position_ids=position_ids)


def uses_varlen_kernel(model: Any) -> bool:
    """Whether the model's attention is a flash-attention kernel, whose packed (varlen) path in
    transformers needs one flattened row per micro-batch."""
    for wrapper in ("module", "_orig_mod"):  # DDP / FSDP and torch.compile wrappers
        model = getattr(model, wrapper, model)
    config = getattr(model, "config", None)
    return "flash" in str(getattr(config, "_attn_implementation", "") or "")


def prefer_varlen_attention(model: Any, device: Any) -> str:
    """On a GPU with the `flash_attn` package installed, switch the model to transformers'
    "flash_attention_2" (packed rows then run the varlen kernel, which skips the masked blocks a
    dense block-diagonal mask computes); elsewhere leave it. Returns the implementation in use."""
    import importlib.util

    config = model.config
    if getattr(device, "type", str(device)) == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        try:
            model.set_attn_implementation("flash_attention_2")
        except (ImportError, ValueError) as error:  # an installed but unusable flash_attn: keep SDPA
            import warnings

            warnings.warn(f"flash_attention_2 unavailable ({error}); packed rows use SDPA with a mask")
    return str(getattr(config, "_attn_implementation", "") or "sdpa")


def model_inputs(batch: Batch, model: Any) -> tuple[dict[str, Any], torch.Tensor]:
    """(keyword arguments for the model's forward, labels in the same shape as its logits)."""
    if not batch.is_packed:
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, batch.labels
    input_ids, position_ids, labels = batch.input_ids, batch.position_ids, batch.labels
    if uses_varlen_kernel(model):
        # Rows end with padding or an utterance end; the next row starts an utterance whose
        # first label is ignored, so flattening changes no target.
        input_ids, position_ids, labels = (t.reshape(1, -1) for t in (input_ids, position_ids, labels))
    # use_cache=False: transformers looks for packed positions only when there is no cache.
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": None,
            "use_cache": False}, labels


@dataclass
class PackedBatchStream(BatchStream):
    """`BatchStream` whose micro-batches are `batch_size` packed rows of up to `max_seq_len`
    tokens. Same resume contract (`state_dict` also records `max_seq_len`)."""

    max_seq_len: int = 2048
    fixed_width: bool = False  # pad every row to max_seq_len (static shapes for torch.compile)

    def _plan_epoch(self) -> list:
        batches = packed_epoch_batches(self.dataset.lengths, self.batch_size, self.max_seq_len, self.seed, self.epoch)
        if len(batches) < self.world_size:
            raise ValueError(f"{len(self.dataset)} training sequences pack into {len(batches)} "
                             f"micro-batches of {self.batch_size} rows: fewer than {self.world_size} processes")
        return batches

    def _collate(self, entry: Any) -> Batch:
        """One planned micro-batch (rows of sequence indices) as packed tensors."""
        return collate_packed([[self.dataset.sequences[i] for i in row] for row in entry], self.pad_token_id,
                              width=self.max_seq_len if self.fixed_width else 0)

    def mean_batch_tokens(self) -> float:
        """Real tokens per micro-batch in the first epoch's packing (for the schedule's length)."""
        batches = packed_epoch_batches(self.dataset.lengths, self.batch_size, self.max_seq_len, self.seed, 0)
        return self.dataset.n_tokens / len(batches)

    def state_dict(self) -> dict[str, int]:
        return {**super().state_dict(), "max_seq_len": self.max_seq_len}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("max_seq_len") != self.max_seq_len:
            raise ValueError(f"data position saved with packed rows of {state.get('max_seq_len')} tokens "
                             f"(None: unpacked), resuming with {self.max_seq_len}: the batch order would differ")
        super().load_state_dict(state)


def per_sequence_losses(logits: torch.Tensor, labels: torch.Tensor,
                        row_lengths: Sequence[Sequence[int]]) -> list[float]:
    """Mean next-token loss (nats per target) of each utterance of a packed batch, in row order;
    `row_lengths[r]` lists the lengths of the utterances laid end to end in row r."""
    import torch.nn.functional as F

    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    losses: list[float] = []
    for r, lengths in enumerate(row_lengths):
        at = 0
        for n in lengths:
            count = int((targets[r, at:at + n] != IGNORE_INDEX).sum())
            losses.append(float(nll[r, at:at + n].sum()) / max(1, count))
            at += n
    return losses


__all__ = ["pack_first_fit", "packed_epoch_batches", "collate_packed", "uses_varlen_kernel", "model_inputs",
           "prefer_varlen_attention",
           "PackedBatchStream", "per_sequence_losses", "PACK_GROUP"]
