"""How much do a codec's codes say about the characters they carry? A held-out estimate in nats.

Why: an LM can only read text off speech codes to the extent that the codes depend on what is said.
Given forced alignments (`workbench.align.forced`), this measures, per codec frame, the cross-entropy
of held-out codes under the training split's code frequencies, H(code), and under the frequencies
given the character the frame belongs to, H(code | character); the difference is the information
one character's identity gives about each of its frames (add-half smoothing, so an unseen pair costs
finite nats). It bounds what a model that reads only the current character can gain per frame; a
model that also uses context can gain more, but a codec whose codes carry little of the text makes
any LM's text-conditioning gain small. Comparing two codecs on the same corpus is the point.

    python -m workbench.align.information data/tokens/kathleen-XXXX
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator


@dataclass(frozen=True)
class CodeInformation:
    entropy_nats: float  # held-out H(code) under the training code frequencies
    conditional_entropy_nats: float  # held-out H(code | character)
    n_frames: int  # held-out frames measured

    @property
    def information_nats(self) -> float:
        return self.entropy_nats - self.conditional_entropy_nats


def _pairs(utterances: Iterable, alignments: dict) -> Iterator[tuple[str, int]]:
    for u in utterances:
        alignment = alignments.get(u.utterance_id)
        if alignment is None or sum(alignment.frames) != u.n_frames:
            continue
        codes, start = u.codes.tolist(), 0
        for unit, n in zip(alignment.units, alignment.frames):
            for code in codes[start:start + n]:
                yield unit, int(code)
            start += n


def code_information(train: Iterable, held_out: Iterable, alignments: dict, codebook_size: int) -> CodeInformation:
    joint = collections.Counter(_pairs(train, alignments))
    if not joint:
        raise ValueError("no aligned training frames")
    per_unit: collections.Counter = collections.Counter()
    per_code: collections.Counter = collections.Counter()
    for (unit, code), n in joint.items():
        per_unit[unit] += n
        per_code[code] += n
    total = sum(per_code.values())
    pairs = list(_pairs(held_out, alignments))
    if not pairs:
        raise ValueError("no aligned held-out frames")
    h = -sum(math.log((per_code[c] + 0.5) / (total + 0.5 * codebook_size)) for _, c in pairs) / len(pairs)
    h_given = -sum(math.log((joint[(u, c)] + 0.5) / (per_unit[u] + 0.5 * codebook_size)) for u, c in pairs) / len(pairs)
    return CodeInformation(entropy_nats=h, conditional_entropy_nats=h_given, n_frames=len(pairs))


def token_dir_information(tokens_dir: str | Path, alignments_path: str | Path | None = None) -> CodeInformation:
    """`code_information` of a token-shard folder: the training split against the valid split
    (the test split when there is no valid one), with the folder's ``alignments.json``."""
    from workbench.align.forced import ALIGNMENT_FILE, load_alignments
    from workbench.data.token_shards import read_token_shards

    info, utterances = read_token_shards(tokens_dir)
    alignments = load_alignments(alignments_path or Path(tokens_dir) / ALIGNMENT_FILE)
    train = [u for u in utterances if u.split == "train"]
    held_out = [u for u in utterances if u.split == "valid"] or [u for u in utterances if u.split == "test"]
    return code_information(train, held_out, alignments, info.codebook_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workbench.align.information", description=__doc__.split("\n\n")[0])
    parser.add_argument("tokens_dir")
    parser.add_argument("--alignments", default=None, help="default: <tokens_dir>/alignments.json")
    args = parser.parse_args(argv)
    try:
        result = token_dir_information(args.tokens_dir, args.alignments)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps({**asdict(result), "information_nats": result.information_nats}, indent=2))


if __name__ == "__main__":
    main()


__all__ = ["CodeInformation", "code_information", "token_dir_information", "main"]
