"""Codec ablation plumbing: every variant is the baseline plus its own lever, at equal steps."""

from __future__ import annotations

import pytest

from workbench.codec.config import CodecConfig
from workbench.codec.study import (ABLATION_VARIANTS, CodecStudyConfig, codec_config_for, variant_overrides,
                                   variant_study)
from workbench.config import for_profile


def _differences(a: CodecConfig, b: CodecConfig) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(CodecConfig) if getattr(a, f.name) != getattr(b, f.name)}


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_each_variant_is_the_baseline_plus_its_own_lever_at_equal_steps(profile):
    study = for_profile(CodecStudyConfig, profile, ablation_steps=500)
    configs = {v: codec_config_for(variant_study(study, v), profile) for v in ABLATION_VARIANTS}
    assert {c.max_steps for c in configs.values()} == {500}
    baseline = configs["baseline"]
    assert not baseline.use_gan and baseline.ctc_weight == 0 and baseline.complex_stft_loss_weight == 0
    assert _differences(baseline, configs["+ctc"]) == {"ctc_weight", "ctc_batch_size", "ctc_max_s"}
    assert _differences(baseline, configs["+phase"]) == {"complex_stft_loss_weight"}
    assert _differences(baseline, configs["+ctc +phase"]) == (
        _differences(baseline, configs["+ctc"]) | _differences(baseline, configs["+phase"]))
    assert "use_gan" in _differences(baseline, configs["+gan late"])
    assert configs["+gan late"].disc_warmup_steps == 400  # the discriminators for the last 20 %


def test_ablation_variants_keep_the_study_overrides_below_their_own():
    study = for_profile(CodecStudyConfig, "smoke", train_overrides={"seed": 7, "ctc_weight": 0.5},
                        ablation_steps=4)
    config = codec_config_for(variant_study(study, "+ctc"), "smoke")
    assert config.seed == 7 and config.ctc_weight == 1.0 and config.max_steps == 4


def test_unknown_variant_or_steps_fail_with_the_bad_value():
    with pytest.raises(ValueError, match=r"'\+cTc'"):
        variant_overrides("+cTc", 10)
    with pytest.raises(ValueError, match="steps 0"):
        variant_overrides("baseline", 0)


def test_the_asr_teacher_variant_sets_the_study_teacher_and_every_other_variant_clears_it():
    study = for_profile(CodecStudyConfig, "smoke", semantic_teacher="some/teacher", ablation_steps=3)
    teacher = variant_study(study, "+asr teacher")
    assert teacher.semantic_teacher == "asr" and "semantic_teacher" not in teacher.train_overrides
    for variant in set(ABLATION_VARIANTS) - {"+asr teacher"}:
        assert variant_study(study, variant).semantic_teacher == ""
    # the teacher's path enters the codec config (and so its run id); without one nothing does
    assert codec_config_for(teacher, "smoke", "/x/model.pt").semantic_model_path == "/x/model.pt"
    assert codec_config_for(teacher, "smoke").semantic_model_path is None


def test_an_untrained_asr_teacher_leaves_its_variant_missing_instead_of_training(tmp_path, monkeypatch):
    from workbench.codec.study import ablation_table, teacher_path

    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    study = for_profile(CodecStudyConfig, "smoke", ablation_variants=("+asr teacher",), ablation_steps=3)
    assert teacher_path(variant_study(study, "+asr teacher"), "smoke", train=False) is None
    table, missing = ablation_table(study, "smoke", tmp_path / "data", train=False)
    assert missing == ["+asr teacher"] and table.empty
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("model.pt"))


def test_the_notebooks_codec_leads_the_ablation_and_absorbs_the_variant_trained_in_the_same_run(tmp_path):
    import json
    from types import SimpleNamespace

    import pandas as pd

    from workbench.codec.study import ABLATION_COLUMNS, TrainedCodec, with_pipeline_row

    run = tmp_path / "codec-run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"steps": 2500, "train_wall_s": 1000.0}))
    held_out = SimpleNamespace(stoi=0.73, pesq_wb=1.1, wer_resynth=0.75)
    trained = TrainedCodec(path=str(run / "codec.pt"), run_dir=run, codec_config=None)
    columns = ABLATION_COLUMNS + ["run"]
    variants = pd.DataFrame.from_dict({"baseline": {"stoi": 0.80, "run": str(tmp_path / "other")},
                                       "+asr teacher": {"stoi": 0.73, "run": str(run)}}, orient="index", columns=columns)
    table = with_pipeline_row(variants, "this notebook's codec", trained, held_out, SimpleNamespace(stoi=0.68), 0.59)
    assert list(table.index) == ["this notebook's codec (= +asr teacher)", "baseline"]
    first = table.iloc[0]
    assert (first["stoi"], first["unseen_stoi"], first["code_information_nats"], first["steps"]) == (0.73, 0.68, 0.59, 2500)
    assert first["s_per_step"] == 0.4
    alone = with_pipeline_row(variants.iloc[:0], "this notebook's codec", trained, held_out, SimpleNamespace(stoi=0.68), None)
    assert list(alone.index) == ["this notebook's codec"]
