"""benchmarks/gpu_check.py in its tiny CPU mode: every part runs end to end on the package of this
checkout and reports finite figures, so the GPU check cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_mode_reports_every_figure_and_writes_json(tmp_path, capsys):
    gpu_check = _load()
    report = gpu_check.main(["--tiny", "--out", str(tmp_path / "check.json")])
    names = [row["name"] for row in report.rows]
    assert names == ["LM step tokens/s, cpu-0.1m packed", "LM MFU, cpu-0.1m packed",
                     "LM step tokens/s, cpu-0.1m packed+compile", "LM MFU, cpu-0.1m packed+compile",
                     "codec smoke steps/s, batch 2 x 0.4 s", "codec smoke peak host (process peak) memory",
                     "best-of-8 tokens/s, cpu-0.1m lean loop"]
    for row in report.rows:
        assert math.isfinite(row["value"]) and row["value"] > 0, row
    for row in report.rows:
        if row["baseline"]:
            assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
    mfu = [row["value"] for row in report.rows if row["name"].startswith("LM MFU")]
    assert all(0 < m < 1 for m in mfu)
    assert any("identical samples for seed 0: yes" in note for note in report.notes)
    saved = json.loads((tmp_path / "check.json").read_text())
    assert saved["mode"] == "tiny" and len(saved["rows"]) == len(report.rows)
    assert "LM step tokens/s" in capsys.readouterr().out


def test_gpu_mode_refuses_a_machine_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="no CUDA device"):
        _load().main([])
