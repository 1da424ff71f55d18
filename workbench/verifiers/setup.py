"""Corpora and configs for the verifiers the workbench trains itself (workbench-asr,
workbench-speaker), prepared with a profile's data settings so that smoke runs stay small."""

from __future__ import annotations

from pathlib import Path

from workbench.config import for_profile

ASR_CORPORA = ("kathleen", "ljspeech", "synth")
SPEAKER_CORPORA = ("kathleen", "vctk", "synth", "fsdd", "cmu_arctic", "ljspeech")


def prepare_synth(profile: str, sentences: str | Path | None = None, data_dir: str | Path | None = None,
                  progress: bool = False):
    """Synthesise the profile's espeak-ng corpus (resumable) and prepare it as corpus "synth"."""
    import os

    from workbench.data.prepare import DataConfig, data_root, prepare_corpus
    from workbench.data.synth import SynthConfig, synth_corpus

    synth = for_profile(SynthConfig, profile if profile in SynthConfig.PROFILES else "cpu")
    if sentences is None:
        mirror = os.environ.get("WORKBENCH_DATA_MIRROR")
        if not mirror:
            raise FileNotFoundError("no sentence list given and WORKBENCH_DATA_MIRROR is not set "
                                    "(the default is <mirror>/cmu_arctic/cmuarctic.data)")
        sentences = Path(mirror) / "cmu_arctic" / "cmuarctic.data"
    raw_dir = data_root(data_dir) / "raw" / f"synth-{synth.n_speakers}x{synth.n_sentences}"
    synth_corpus(synth, raw_dir, sentences, progress=progress)
    data_config = for_profile(DataConfig, profile, corpus="synth", source=str(raw_dir),
                              n_test_speakers=max(1, synth.n_speakers // 6))
    return prepare_corpus(data_config, root=data_dir, progress=progress)


def prepare_corpora(names: tuple[str, ...], profile: str) -> dict[str, str]:
    """Prepare each corpus (reusing finished ones) and return {corpus: prepared folder name}."""
    from workbench.data.prepare import DataConfig, data_root, prepare_corpus

    prepared = {}
    for name in names:
        config = for_profile(DataConfig, profile, corpus=name)
        if not (data_root() / config.dataset_name / "manifest.jsonl").exists():
            if name == "synth":
                prepare_synth(profile)
            else:
                prepare_corpus(config, progress=False)
        prepared[name] = config.dataset_name
    return prepared


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
