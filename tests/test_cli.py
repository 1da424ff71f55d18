import subprocess
import sys

import pytest

from workbench.cli import build_parser, main

SUBCOMMANDS = [["data"], ["data", "prepare"], ["data", "synth"], ["data", "list"], ["run"], ["report"],
               ["pipeline"], ["runs"], ["codec"], ["codec", "train"], ["codec", "eval"], ["codec", "tokenize"],
               ["lm"], ["lm", "train"], ["lm", "sweep"], ["search"], ["search", "ablate"], ["batch"]]


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


def test_codec_eval_writes_json_with_required_keys(workdirs, tmp_path, mirror, capsys):
    """The issue's contract: `workbench codec eval CODEC --data DIR --json OUT` on a transcripts.tsv folder."""
    import json

    from workbench.codec import CodecConfig, train_codec
    from workbench.config import for_profile

    result = train_codec(for_profile(CodecConfig, "smoke"), mirror / "vctk", progress=False)
    out = tmp_path / "eval.json"
    assert main(["codec", "eval", str(result.run_dir), "--data", str(mirror / "vctk"), "--json", str(out),
                 "--max-utterances", "2"]) == 0
    metrics = json.loads(out.read_text())
    for key in ("stoi", "pesq_wb", "pesq_nb", "mel_distance", "si_sdr", "codebook_usage", "codebook_perplexity",
                "bitrate_bps", "rtf_encode", "rtf_decode", "n_utterances"):
        assert key in metrics, key
    assert metrics["n_utterances"] == 2 and 0 <= metrics["codebook_usage"] <= 1


def test_set_override_is_validated(capsys, tmp_path):
    assert main(["lm", "train", str(tmp_path), "--profile", "smoke", "--set", "token_budgt=5"]) == 2
    assert "did you mean 'token_budget'" in capsys.readouterr().err


def test_batch_runs_one_notebook_per_grid_point_in_separate_processes(workdirs, capsys):
    assert main(["batch", "00_data", "--profile", "smoke", "--grid", "max_utterances=6,8",
                 "--executor", "local", "--max-workers", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ->") == 2
    from workbench.runs import results

    table = results(kind="notebooks")
    assert sorted(table["config.max_utterances"]) == [6, 8] and set(table["status"]) == {"finished"}


def test_batch_validates_every_point_before_starting(workdirs, capsys):
    assert main(["batch", "00_data", "--profile", "smoke", "--grid", "max_utterances=6,eight"]) == 2
    assert "'max_utterances'" in capsys.readouterr().err
    assert not (workdirs / "runs" / "notebooks").exists()


def test_scientific_notation_in_set_is_accepted_by_workbench_and_by_the_torchrun_entry(capsys, tmp_path):
    from workbench.lm.train import main as lm_train_main

    # The config is accepted; the run then stops on the empty shards folder, naming it.
    assert main(["lm", "train", str(tmp_path), "--profile", "smoke", "--set", "lr=5e-5"]) == 2
    err = capsys.readouterr().err
    assert "expected float" not in err and str(tmp_path) in err
    with pytest.raises((FileNotFoundError, ValueError)) as error:
        lm_train_main([str(tmp_path), "--profile", "smoke", "--set", "lr=5e-5"])
    assert "expected float" not in str(error.value)


@pytest.mark.parametrize("profile", ["smoke", "gpu-8b"])
def test_pipeline_dry_run_prints_every_stage_settings_without_running_anything(profile, capsys, workdirs):
    assert main(["pipeline", "--profile", profile, "--dry-run"]) == 0
    out = capsys.readouterr().out
    for stage in ("00_data", "10_codec", "20_lm_scaling", "30_search"):
        assert f": {stage} (" in out
    for row in ("codec_study (CodecStudyConfig", "lm (LMTrainConfig", "search (AblationConfig", "asr (ASRTrainConfig"):
        assert row in out
    if profile == "gpu-8b":
        assert "* preset = 'llama-3.1-8b'" in out and "* corpus = 'libritts'" in out
    assert not (workdirs / "runs").exists()  # nothing ran
