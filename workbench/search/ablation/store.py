"""The ablation's files: `results.csv` (one `AblationRow` per sentence x arm, appended and
fsynced, a torn last line dropped on reading) and `candidates.jsonl`."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from workbench.search.ablation.config import AblationRow


def row_key(utterance_id: str, arm: str) -> tuple[str, str]:
    return (utterance_id, arm)


def read_rows(path: Path) -> list[AblationRow]:
    """Rows of a results.csv (a torn last line from a crash is dropped)."""
    if not path.exists():
        return []
    types = {f.name: f.type for f in dataclasses.fields(AblationRow)}
    rows = []
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            if any(record.get(name) in (None, "") and types[name] not in ("str",) for name in types):
                continue  # incomplete (torn) line
            values: dict[str, Any] = {}
            for name, kind in types.items():
                raw = record[name]
                values[name] = (int(raw) if kind == "int" else float(raw) if kind == "float"
                                else raw == "True" if kind == "bool" else raw)
            rows.append(AblationRow(**values))
    return rows


def append_row(path: Path, row: AblationRow) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in dataclasses.fields(AblationRow)])
        if new:
            writer.writeheader()
        writer.writerow(dataclasses.asdict(row))
        handle.flush()
        os.fsync(handle.fileno())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
