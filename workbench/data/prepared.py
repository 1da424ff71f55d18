"""One way to get a profile's prepared corpus, whichever way it is made: the espeak-ng corpus
"synth" is synthesised and then prepared (`workbench.data.synth`), every other corpus is prepared
from its source (`workbench.data.prepare`). Kept apart from both so that neither imports the other
back."""

from __future__ import annotations

from pathlib import Path

from workbench.config import for_profile
from workbench.data.prepare import DataConfig, data_root, prepare_corpus
from workbench.data.synth import prepare_synth, prepare_synth_pretrain


def ensure_prepared(corpus: str, profile: str) -> Path:
    """Folder of `corpus` prepared with the profile's data settings, prepared now if it is missing
    (the espeak-ng corpora "synth" and "synth_pretrain" are synthesised first). A prepared folder
    is reused as it is."""
    # the pretraining corpus is sized by its own config (PretrainSynthConfig.total_sentences), not max_utterances
    config = for_profile(DataConfig, profile, corpus=corpus, **({"max_utterances": 0} if corpus == "synth_pretrain" else {}))
    folder = data_root() / config.dataset_name
    if not (folder / "manifest.jsonl").exists():
        if corpus == "synth":
            prepare_synth(profile)
        elif corpus == "synth_pretrain":
            prepare_synth_pretrain(profile)
        else:
            prepare_corpus(config, progress=False)
    return folder
