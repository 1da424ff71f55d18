"""Corpora and configs for the check models the workbench trains itself (workbench-asr,
workbench-speaker), prepared with a profile's data settings so that smoke runs stay small."""

from __future__ import annotations

from workbench.config import for_profile

ASR_CORPORA = ("kathleen", "ljspeech", "synth")
SPEAKER_CORPORA = ("kathleen", "vctk", "synth", "fsdd", "cmu_arctic", "ljspeech")


def prepare_corpora(names: tuple[str, ...], profile: str) -> dict[str, str]:
    """Prepare each corpus (reusing finished ones) and return {corpus: prepared folder name}."""
    from workbench.data.prepared import ensure_prepared

    return {name: ensure_prepared(name, profile).name for name in names}


def trained_verifier_configs(profile: str, codec: str | None = None):
    """(ASRTrainConfig, SpeakerTrainConfig) of the profile, on its prepared corpora. With `codec`
    (anything `load_codec` accepts), the ASR also trains on Kathleen's training clips resynthesised
    through it and is scored on the codec's resynthesis of the test set as well."""
    from workbench.checkmodels.asr_train import CODEC_SUFFIX, ASRTrainConfig
    from workbench.checkmodels.speaker_train import SpeakerTrainConfig

    folders = prepare_corpora(tuple(dict.fromkeys((*ASR_CORPORA, *SPEAKER_CORPORA))), profile)
    kathleen = folders["kathleen"]
    eval_sets = (f"{kathleen}:test", f"{folders['vctk']}:all")
    codec_fields = {}
    if codec:
        codec_fields = dict(codec=str(codec), codec_sets=(f"{kathleen}:train",))
        eval_sets += (f"{kathleen}:test{CODEC_SUFFIX}",)
    asr = for_profile(ASRTrainConfig, profile, train_sets=tuple(f"{folders[c]}:train" for c in ASR_CORPORA),
                      valid_set=f"{kathleen}:valid", eval_sets=eval_sets, **codec_fields)
    speaker = for_profile(SpeakerTrainConfig, profile, corpora=tuple(folders[c] for c in SPEAKER_CORPORA))
    return asr, speaker
