"""Corpora and configs for the verifiers the workbench trains itself (workbench-asr,
workbench-speaker), prepared with a profile's data settings so that smoke runs stay small."""

from __future__ import annotations

from workbench.config import for_profile

ASR_CORPORA = ("kathleen", "ljspeech", "synth")
SPEAKER_CORPORA = ("kathleen", "vctk", "synth", "fsdd", "cmu_arctic", "ljspeech")


def prepare_corpora(names: tuple[str, ...], profile: str) -> dict[str, str]:
    """Prepare each corpus (reusing finished ones) and return {corpus: prepared folder name}."""
    from workbench.data.prepare import ensure_prepared

    return {name: ensure_prepared(name, profile).name for name in names}


def trained_verifier_configs(profile: str):
    """(ASRTrainConfig, SpeakerTrainConfig) of the profile, on its prepared corpora."""
    from workbench.verifiers.train_asr import ASRTrainConfig
    from workbench.verifiers.trained_speaker import SpeakerTrainConfig

    folders = prepare_corpora(tuple(dict.fromkeys((*ASR_CORPORA, *SPEAKER_CORPORA))), profile)
    kathleen = folders["kathleen"]
    asr = for_profile(ASRTrainConfig, profile, train_sets=tuple(f"{folders[c]}:train" for c in ASR_CORPORA),
                      valid_set=f"{kathleen}:valid", eval_sets=(f"{kathleen}:test", f"{folders['vctk']}:all"))
    speaker = for_profile(SpeakerTrainConfig, profile, corpora=tuple(folders[c] for c in SPEAKER_CORPORA))
    return asr, speaker
