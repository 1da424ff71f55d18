"""Checkpoints run no code when loaded, carry checksums, and a resume skips a damaged one
(issue 11, cases 1 and 9)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from workbench.checkpoints import (
    CheckpointError, UnsafeCheckpointError, load_newest_verified, load_weights_only, previous_path,
    save_checkpoint_file, verify_file,
)

REPO = Path(__file__).resolve().parents[1]


class _Planted:
    """Unpickling this would run `touch <marker>` (harmless, but proves code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant(path: Path, marker: Path, wrap=lambda planted: {"model": planted, "config": {}}) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(_Planted(marker)), path)
    return path


def _loaders(tmp_path: Path):
    """Every place a user can point the workbench at a torch file, with the file it reads."""
    from workbench.codec.interface import load_codec
    from workbench.data.token_shards import read_token_shards
    from workbench.checkmodels.asr_model import load_model as load_asr
    from workbench.checkmodels.speaker_model import load_model as load_speaker

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "index.json").write_text('{"codec": {"codec": "x", "sample_rate": 16000, "frame_rate_hz": 50.0, '
                                       '"codebook_size": 8}, "shards": ["shard-00000.pt"], "n_utterances": 1, '
                                       '"n_frames": 1}')
    return {
        "codec run dir": (lambda: load_codec(tmp_path / "codec_run"), tmp_path / "codec_run" / "codec.pt"),
        "codec file": (lambda: load_codec(tmp_path / "other.pt"), tmp_path / "other.pt"),
        "asr model": (lambda: load_asr(tmp_path / "asr" / "model.pt"), tmp_path / "asr" / "model.pt"),
        "speaker model": (lambda: load_speaker(tmp_path / "spk" / "model.pt"), tmp_path / "spk" / "model.pt"),
        "token shard": (lambda: read_token_shards(shards), shards / "shard-00000.pt"),
    }


@pytest.mark.parametrize("where", ["codec run dir", "codec file", "asr model", "speaker model", "token shard"])
def test_a_planted_pickle_is_refused_and_its_code_never_runs(tmp_path, where):
    marker = tmp_path / "MARKER"
    load, path = _loaders(tmp_path)[where]
    _plant(path, marker)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(path)) + ".*refused to load"):
        load()
    assert not marker.exists()


def test_codec_eval_on_a_planted_codec_prints_one_line_and_runs_nothing(tmp_path, capsys):
    from workbench.cli import main

    marker = tmp_path / "MARKER"
    codec = _plant(tmp_path / "evil" / "codec.pt", marker)
    assert main(["codec", "eval", str(codec.parent), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused to load" in err and str(codec) in err
    assert not marker.exists()


def test_trainer_resume_refuses_a_planted_checkpoint(tmp_path):
    marker = tmp_path / "MARKER"
    path = _plant(tmp_path / "checkpoint.pt", marker, wrap=lambda p: {"step": 3, "rng": p})
    with pytest.raises(UnsafeCheckpointError):
        load_newest_verified([path, previous_path(path)])
    assert not marker.exists()


def test_no_module_loads_torch_files_with_pickle_enabled():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "workbench").rglob("*.py")
                 if "weights_only=False" in p.read_text() or re.search(r"torch\.load\((?![^)]*weights_only=True)",
                                                                        p.read_text())]
    assert offenders == []


def test_trainer_state_with_rng_and_optimizer_round_trips_weights_only(tmp_path):
    import random

    import numpy as np

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state(), "step": 7}
    path = save_checkpoint_file(state, tmp_path / "state.pt")
    loaded = load_weights_only(path)
    assert loaded["step"] == 7 and loaded["python"] == state["python"]
    assert np.array_equal(loaded["numpy"][1], state["numpy"][1]) and torch.equal(loaded["torch"], state["torch"])
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_checkpoint_fails_its_checksum_and_the_previous_one_is_used(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint_file({"step": 1, "w": torch.ones(100)}, path, keep_previous=True)
    save_checkpoint_file({"step": 2, "w": torch.ones(100)}, path, keep_previous=True)
    assert load_weights_only(previous_path(path))["step"] == 1
    _truncate(path)
    assert "checksum differs" in verify_file(path)
    loaded = load_newest_verified([path, previous_path(path)])
    assert loaded.state["step"] == 1 and loaded.path == previous_path(path)
    assert [s.path for s in loaded.skipped] == [path] and "checksum" in loaded.skipped[0].reason
    # the next save does not rotate the damaged file over the good previous one
    save_checkpoint_file({"step": 3, "w": torch.ones(100)}, path, keep_previous=True)
    assert load_weights_only(previous_path(path))["step"] == 1
    assert load_weights_only(path)["step"] == 3


def test_no_intact_checkpoint_is_an_error_naming_every_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint_file({"step": 1}, path)
    _truncate(path)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*checksum"):
        load_newest_verified([path, previous_path(path)])
    assert load_newest_verified([tmp_path / "none.pt"]) is None
