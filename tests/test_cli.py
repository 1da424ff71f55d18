import subprocess
import sys

import pytest

from workbench.cli import build_parser, main

SUBCOMMANDS = [["data"], ["data", "prepare"], ["data", "synth"], ["data", "list"], ["run"], ["report"],
               ["pipeline"], ["runs"]]


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("data", "run", "report", "pipeline", "runs"):
        assert name in out.stdout


@pytest.mark.parametrize("words", SUBCOMMANDS)
def test_each_subcommand_has_help(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_prepare_prints_split_counts(workdirs, capsys):
    assert main(["data", "prepare", "--corpus", "vctk"]) == 0
    out = capsys.readouterr().out
    assert "40 of 40 utterances kept" in out and "train 30" in out and "test 10" in out


def test_bad_parameter_fails_before_kernel_with_suggestion(workdirs, capsys):
    assert main(["run", "00_data", "--profile", "smoke", "-p", "max_utterance", "3"]) == 2
    err = capsys.readouterr().err
    assert "'max_utterance'" in err and "did you mean 'max_utterances'" in err
    assert not (workdirs / "runs").exists()  # nothing started


def test_missing_corpus_is_a_clear_error(workdirs, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_DATA_MIRROR", str(tmp_path / "nowhere"))
    assert main(["data", "prepare", "--corpus", "libritts"]) == 2
    assert "Looked in" in capsys.readouterr().err
