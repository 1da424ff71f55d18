"""One way to get a profile's prepared corpus, whichever way it is made: the espeak-ng corpus
"synth" is synthesised and then prepared (`workbench.data.synth`), every other corpus is prepared
from its source (`workbench.data.prepare`). Kept apart from both so that neither imports the other
back."""

from __future__ import annotations

from pathlib import Path

from workbench.config import for_profile
from workbench.data.prepare import DataConfig, data_root, prepare_corpus
from workbench.data.synth import prepare_synth


def ensure_prepared(corpus: str, profile: str) -> Path:
    """Folder of `corpus` prepared with the profile's data settings, prepared now if it is missing
    (the espeak-ng corpus "synth" is synthesised first). A prepared folder is reused as it is."""
    config = for_profile(DataConfig, profile, corpus=corpus)
    folder = data_root() / config.dataset_name
    if not (folder / "manifest.jsonl").exists():
        if corpus == "synth":
            prepare_synth(profile)
        else:
            prepare_corpus(config, progress=False)
    return folder
