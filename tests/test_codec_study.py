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
