"""Deterministic train/valid/test splits that do not move when utterances are added or removed.

Each utterance (and each speaker) is placed by a hash of its id, not by its position in a list,
so a corpus prepared twice, or with a few files more, keeps every old utterance in its split.
With several speakers, whole speakers are held out for test (unseen-speaker evaluation); the
remaining speakers also give held-out utterances to valid and test.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from workbench.data.manifest import Utterance


def unit_hash(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) for `key` (same on every machine and Python version)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_speakers(speakers: Iterable[str], n_test_speakers: int, seed: int = 0) -> list[str]:
    """The `n_test_speakers` speakers with the smallest hash; never all of them."""
    unique = sorted(set(speakers))
    n = min(n_test_speakers, max(len(unique) - 1, 0))
    return sorted(unique, key=lambda s: unit_hash(s, f"speaker{seed}"))[:n]


def assign_splits(utterances: Sequence[Utterance], valid_fraction: float, test_fraction: float,
                  n_test_speakers: int = 0, seed: int = 0) -> list[Utterance]:
    """Copies of `utterances` with `split` set. Speakers in `held_out_speakers` go to test whole."""
    import dataclasses

    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid_fraction={valid_fraction}, test_fraction={test_fraction}: each in [0, 1), sum < 1")
    test_speakers = set(held_out_speakers((u.speaker for u in utterances), n_test_speakers, seed))
    out = []
    for u in utterances:
        if u.speaker in test_speakers:
            split = "test"
        else:
            h = unit_hash(f"{u.speaker}/{u.utterance_id}", f"utt{seed}")
            split = "test" if h < test_fraction else "valid" if h < test_fraction + valid_fraction else "train"
        out.append(dataclasses.replace(u, split=split))
    return out


def split_counts(utterances: Iterable[Utterance]) -> dict[str, int]:
    counts = {"train": 0, "valid": 0, "test": 0}
    for u in utterances:
        counts[u.split] = counts.get(u.split, 0) + 1
    return counts
