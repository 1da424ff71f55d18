"""Supervised semantic objective for codec training: a CTC head on the quantised latents.

X-codec2 makes its codes carry the words by distilling a w2v-BERT teacher, which cannot be
loaded offline here. CosyVoice's road is open instead: our corpora have transcripts, so a small
head reads the quantised latents (the decoder's input, i.e. what the codes say) and is trained
with CTC against the transcript's characters. Its gradient reaches the encoder and the FSQ
projection through the quantiser's straight-through rounding, so frames that differ in what was
said are pushed into different codes.

The head is training-only: it lives outside `CodecModel`, is saved in ``checkpoint.pt`` (for
resume) but not in ``codec.pt``, and codes and decoder keep their interface.

Characters, not phonemes: the normalised transcript (`workbench.verifiers.text.normalize_text`)
over the trained ASR's alphabet (blank, space, apostrophe, a-z); at 50 frames/s read speech has
~15 characters/s, well inside CTC's one-frame-per-label limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def character_vocab() -> tuple[str, ...]:
    """CTC labels: blank first (id 0), then space, apostrophe and a-z."""
    from workbench.checkmodels.asr_model import ALPHABET

    return ALPHABET


def transcript_ids(text: str) -> list[int]:
    """Label ids of a transcript (normalised: lower case, numbers spelled, punctuation dropped)."""
    from workbench.verifiers.text import normalize_text
    from workbench.checkmodels.asr_model import encode_text

    return encode_text(normalize_text(text), character_vocab())


def ctc_min_frames(ids: list[int]) -> int:
    """Fewest frames CTC needs for `ids`: one per label plus a blank between equal neighbours."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


class CTCHead(nn.Module):
    """Quantised latents (B, T, latent_dim) -> log-probabilities (B, T, vocab).

    Two convolutions (kernel 5: ~9 frames, 180 ms at 50 Hz, about a syllable) and a linear
    layer: enough context to spell a phone from its neighbours, too little to model language,
    so that the information must be in the codes rather than in the head."""

    def __init__(self, latent_dim: int, hidden_dim: int, vocab_size: int, kernel_size: int = 5):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CTCHead kernel_size {kernel_size}: must be odd and >= 1")
        padding = kernel_size // 2
        self.convs = nn.Sequential(
            nn.Conv1d(latent_dim, hidden_dim, kernel_size, padding=padding), nn.GELU(),
            nn.Conv1d(hidden_dim, hidden_dim, kernel_size, padding=padding), nn.GELU(),
        )
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = self.convs(latents.transpose(1, 2)).transpose(1, 2)
        return self.out(hidden).log_softmax(dim=-1)


@dataclass
class TranscribedBatch:
    audio: torch.Tensor  # (B, 1, L) zero-padded to a whole number of hops
    frame_lengths: torch.Tensor  # (B,) long: codec frames that hold each utterance
    targets: torch.Tensor  # (sum of target_lengths,) long label ids, concatenated
    target_lengths: torch.Tensor  # (B,) long


def ctc_loss(log_probs: torch.Tensor, batch: TranscribedBatch) -> torch.Tensor:
    """Mean over utterances of the CTC negative log-likelihood per label (blank = 0)."""
    device = log_probs.device  # labels go where the head ran
    return F.ctc_loss(log_probs.transpose(0, 1), batch.targets.to(device), batch.frame_lengths.to(device),
                      batch.target_lengths.to(device), blank=0, reduction="mean", zero_infinity=False)


class TranscribedSampler:
    """Batches of whole utterances with their transcripts' label ids, drawn with its own seeded
    generator (so that the data position is checkpointed, as `CropSampler`'s is).

    Only utterances of at most `max_samples` samples whose transcript fits CTC's frame limit are
    used (whole utterances, because a random crop would cut the transcript at an unknown point)."""

    def __init__(self, wavs: list[torch.Tensor], texts: list[str], hop_length: int, max_samples: int,
                 batch_size: int, seed: int):
        self.hop_length = hop_length
        self.batch_size = batch_size
        self.items: list[tuple[torch.Tensor, list[int]]] = []
        for wav, text in zip(wavs, texts):
            ids = transcript_ids(text)
            n_frames = -(-wav.numel() // hop_length)
            if ids and wav.numel() <= max_samples and ctc_min_frames(ids) <= n_frames:
                self.items.append((wav, ids))
        if not self.items:
            raise ValueError(f"TranscribedSampler: none of {len(wavs)} utterances has a transcript and "
                             f"at most {max_samples} samples")
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def next_batch(self) -> TranscribedBatch:
        picks = torch.randint(len(self.items), (self.batch_size,), generator=self.generator).tolist()
        chosen = [self.items[i] for i in picks]
        longest = max(wav.numel() for wav, _ in chosen)
        length = -(-longest // self.hop_length) * self.hop_length
        audio = torch.zeros(len(chosen), 1, length)
        for row, (wav, _) in enumerate(chosen):
            audio[row, 0, : wav.numel()] = wav
        self.batches_drawn += 1
        return TranscribedBatch(
            audio=audio,
            frame_lengths=torch.tensor([-(-wav.numel() // self.hop_length) for wav, _ in chosen]),
            targets=torch.tensor([i for _, ids in chosen for i in ids]),
            target_lengths=torch.tensor([len(ids) for _, ids in chosen]),
        )

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])
