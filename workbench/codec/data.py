"""Audio for codec training and evaluation: utterance lists from a prepared corpus
(``manifest.jsonl``) or a ``transcripts.tsv`` folder (read by `workbench.data`'s one reader), and
a seeded random-crop sampler."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.data.manifest import MANIFEST_NAME, Utterance, read_manifest
from workbench.data.prepare import DataConfig, unprepared_utterances
from workbench.data.readers import TRANSCRIPTS_FILE


@dataclass
class CorpusAudio:
    """Utterances of one split, decoded at one sample rate, kept in memory as 1-D tensors."""

    utterances: list[Utterance]
    wavs: list[torch.Tensor]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return sum(w.numel() for w in self.wavs) / self.sample_rate


def corpus_utterances(data_dir: str | Path, split: str | None = None,
                      data_config: DataConfig | None = None) -> list[Utterance]:
    """Utterances of a corpus folder, optionally one split.

    A ``manifest.jsonl`` is used as is. A ``transcripts.tsv`` folder is read as `workbench data
    prepare` reads it (`workbench.data.prepare.unprepared_utterances`: the same reader, utterances
    and splits under `data_config`, default the cpu profile's), so held-out sets agree either way.
    Audio paths are made absolute."""
    data_dir = Path(data_dir).resolve()
    if (data_dir / MANIFEST_NAME).exists():
        utterances = read_manifest(data_dir)
    elif (data_dir / TRANSCRIPTS_FILE).exists():
        utterances = unprepared_utterances(data_dir, data_config, layout="transcripts")
    else:
        raise FileNotFoundError(f"{data_dir}: neither {MANIFEST_NAME} nor {TRANSCRIPTS_FILE}")
    utterances = [dataclasses.replace(u, audio_path=str(u.resolve(data_dir))) for u in utterances]
    if split is not None:
        utterances = [u for u in utterances if u.split == split]
    return utterances


def load_corpus_audio(utterances: list[Utterance], sample_rate: int, max_s: float | None = None) -> CorpusAudio:
    """Decode `utterances` at `sample_rate` (mono), each cut to `max_s` seconds when given."""
    from workbench.audio import load_audio

    wavs = []
    for utterance in utterances:
        wav, _ = load_audio(utterance.audio_path, sample_rate=sample_rate)
        wav = wav[0]
        if max_s is not None:
            wav = wav[: int(max_s * sample_rate)]
        wavs.append(wav.contiguous())
    return CorpusAudio(utterances=list(utterances), wavs=wavs, sample_rate=sample_rate)


class CropSampler:
    """Batches of random fixed-length crops, drawn with its own generator so that the data
    position is part of the checkpoint (`state_dict`) and a resumed run sees the same batches.

    An utterance is chosen with probability proportional to its length (every second of audio
    equally likely), then a crop inside it; shorter utterances are zero-padded at the end."""

    def __init__(self, wavs: list[torch.Tensor], segment_samples: int, batch_size: int, seed: int):
        if not wavs:
            raise ValueError("CropSampler: no training audio")
        self.wavs = wavs
        self.segment_samples = segment_samples
        self.batch_size = batch_size
        self.lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def next_batch(self) -> torch.Tensor:
        """(batch_size, 1, segment_samples) float32."""
        picks = torch.multinomial(self.lengths, self.batch_size, replacement=True, generator=self.generator)
        fractions = torch.rand(self.batch_size, generator=self.generator, dtype=torch.float64)
        batch = torch.zeros(self.batch_size, 1, self.segment_samples)
        for row, (index, fraction) in enumerate(zip(picks.tolist(), fractions.tolist())):
            wav = self.wavs[index]
            room = max(wav.numel() - self.segment_samples, 0)
            start = int(fraction * (room + 1))
            crop = wav[start: start + self.segment_samples]
            batch[row, 0, : crop.numel()] = crop
        self.batches_drawn += 1
        return batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])
