"""Preference pairs from search: the best and worst scored candidate of one text, as JSONL ready for
DPO-style training (chosen = best, rejected = worst, by the verifier that scored them).

Sources: `SearchResult`s in memory, or a search run directory whose ``candidates.jsonl`` the
ablation runner wrote (one line per utterance × arm, holding every candidate's codes and score).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from workbench.atomic import atomic_write_text
from workbench.search.base import SearchError, SearchResult

CANDIDATES_FILE = "candidates.jsonl"


@dataclass(frozen=True)
class PreferencePair:
    text: str  # the target text (what the LM was asked to say)
    prompt_text: str | None  # the voice prompt's transcript (None: plain TTS)
    prompt_codes: list[int] | None  # the voice prompt's codes, continued by the LM
    chosen_codes: list[int]
    rejected_codes: list[int]
    chosen_score: float
    rejected_score: float
    verifier: str
    strategy: str
    budget: int
    n_candidates: int
    utterance_id: str | None = None


def candidate_record(result: SearchResult, *, utterance_id: str | None = None, prompt_text: str | None = None,
                     prompt_codes: Sequence[int] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-able record of every candidate of `result` (what ``candidates.jsonl`` holds)."""
    return {
        "utterance_id": utterance_id, "text": result.text, "strategy": result.strategy, "budget": result.budget,
        "verifier": result.verifier, "prompt_text": prompt_text,
        "prompt_codes": [int(c) for c in prompt_codes] if prompt_codes is not None else None,
        "chosen_index": result.chosen_index,
        "candidates": [{"codes": c.codes.tolist(), "score": c.score, "ended": c.ended} for c in result.candidates],
        **(extra or {}),
    }


def preference_pair(record: dict[str, Any]) -> PreferencePair | None:
    """Best vs worst candidate of one record; None when there is no preference (fewer than two
    candidates, or best and worst score the same)."""
    candidates = record["candidates"]
    if len(candidates) < 2:
        return None
    best = max(candidates, key=lambda c: c["score"])
    worst = min(candidates, key=lambda c: c["score"])
    if not best["score"] > worst["score"]:
        return None
    return PreferencePair(text=record["text"], prompt_text=record.get("prompt_text"),
                          prompt_codes=record.get("prompt_codes"), chosen_codes=list(best["codes"]),
                          rejected_codes=list(worst["codes"]), chosen_score=float(best["score"]),
                          rejected_score=float(worst["score"]), verifier=record["verifier"],
                          strategy=record["strategy"], budget=int(record["budget"]),
                          n_candidates=len(candidates), utterance_id=record.get("utterance_id"))


def read_candidate_records(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(run_dir) / CANDIDATES_FILE
    if not path.exists():
        raise SearchError(f"{run_dir}: no {CANDIDATES_FILE}; not a search run directory (or it wrote no candidates)")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            # A run killed mid-write leaves a torn last line; anything else is corruption.
            if number == len(path.read_text().splitlines()):
                return
            raise


def export_preferences(source: SearchResult | Iterable[SearchResult] | str | Path, path: str | Path) -> int:
    """Write one JSON line per text with a preference (best vs worst candidate) to `path`;
    returns the number of pairs written. `source`: a search run directory, one `SearchResult`, or
    several (voice-prompt fields are then null: a result does not hold its prompt)."""
    if isinstance(source, (str, Path)):
        # A relaunched run may have re-run a row whose candidates were written before a crash:
        # keep the last record per (utterance, arm).
        latest: dict[tuple, dict[str, Any]] = {}
        for record in read_candidate_records(source):
            key = (record.get("utterance_id"), record.get("arm"), record["strategy"], record["budget"],
                   record["verifier"])
            latest[key] = record
        records: Iterable[dict[str, Any]] = list(latest.values())
    elif isinstance(source, SearchResult):
        records = [candidate_record(source)]
    else:
        records = [candidate_record(r) for r in source]
    pairs = [p for p in (preference_pair(r) for r in records) if p is not None]
    atomic_write_text(path, "".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    return len(pairs)


__all__ = ["CANDIDATES_FILE", "PreferencePair", "candidate_record", "export_preferences", "preference_pair",
           "read_candidate_records"]
