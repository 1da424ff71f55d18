"""The held-out sentences an ablation speaks, their voice-cloning prompts, and whether the LM
reads the text of that split at all (its text-conditioning gain)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.codec.interface import Codec
from workbench.lm.model import LoadedLM
from workbench.search.ablation.config import AblationConfig


@dataclass(frozen=True)
class HeldOut:
    utterance_id: str
    text: str
    audio_path: Path
    prompt_id: str  # "" without voice cloning
    prompt_text: str
    prompt_audio: Path | None


def corpus_dir(corpus: str) -> Path:
    from workbench.data.prepare import data_root

    path = Path(corpus)
    if (path / "manifest.jsonl").exists() or path.suffix == ".jsonl":
        return path
    return data_root() / corpus


def split_utterances(config: AblationConfig) -> tuple[Path, Path, list[Any]]:
    """(corpus folder or manifest, folder audio paths are relative to, the utterances of
    `config.split` sorted by id: the same on every launch)."""
    from workbench.data.manifest import read_manifest

    folder = corpus_dir(config.corpus)
    root = folder.parent if folder.suffix == ".jsonl" else folder
    utterances = sorted((u for u in read_manifest(folder) if u.split == config.split),
                        key=lambda u: u.utterance_id)
    if not utterances:
        raise FileNotFoundError(f"{folder}: no utterances in split {config.split!r}")
    return folder, root, utterances


def held_out_items(config: AblationConfig) -> list[HeldOut]:
    """`n_sentences` held-out sentences (at most `max_words` words, sorted by id: the same on every
    launch) and, with voice cloning, a different held-out utterance of the same speaker as each
    one's prompt (the shortest-first pool of utterances between prompt_min_s and prompt_max_s)."""
    folder, root, utterances = split_utterances(config)
    prompt_pool = [u for u in utterances if config.prompt_min_s <= u.duration_s <= config.prompt_max_s]
    # A quarter of the pool is reserved for prompts so that no sentence is also someone's prompt.
    reserved = prompt_pool[: max(1, len(prompt_pool) // 4)] if config.voice_cloning else []
    reserved_ids = {u.utterance_id for u in reserved}
    targets = [u for u in utterances if len(u.text.split()) <= config.max_words and u.utterance_id not in reserved_ids]
    targets = targets[: config.n_sentences]
    if len(targets) < config.n_sentences:
        raise ValueError(f"{folder}: only {len(targets)} held-out sentences of at most {config.max_words} words "
                         f"(asked for {config.n_sentences})")
    items = []
    for i, u in enumerate(targets):
        prompt = None
        if config.voice_cloning:
            same_speaker = ([p for p in reserved if p.speaker == u.speaker]
                            or [p for p in prompt_pool if p.speaker == u.speaker and p.utterance_id != u.utterance_id])
            if not same_speaker:
                raise ValueError(f"no prompt utterance of {config.prompt_min_s}-{config.prompt_max_s} s for "
                                 f"speaker {u.speaker!r} in split {config.split!r}")
            prompt = same_speaker[i % len(same_speaker)]
        items.append(HeldOut(utterance_id=u.utterance_id, text=u.text, audio_path=u.resolve(root),
                             prompt_id=prompt.utterance_id if prompt else "", prompt_text=prompt.text if prompt else "",
                             prompt_audio=prompt.resolve(root) if prompt else None))
    return items


TEXT_GAIN_FLOOR_NATS = 0.05
"""Below this text-conditioning gain the LM is reported as not reading its text."""


def lm_text_gain(lm: LoadedLM, codec: Codec, config: AblationConfig, max_utterances: int = 16):
    """`workbench.lm.diagnostics.text_conditioning_gain` of the LM on up to `max_utterances`
    utterances of the held-out split, encoded with the search codec: whether WER search has
    anything to select from."""
    from workbench.audio import load_audio
    from workbench.data.token_shards import TokenizedUtterance
    from workbench.lm.diagnostics import TextGain, lm_text_gain as gain_in_own_layout

    _, root, utterances = split_utterances(config)
    encoded = []
    for u in utterances[:max_utterances]:
        wav, _ = load_audio(u.resolve(root), int(codec.sample_rate))
        encoded.append(TokenizedUtterance(u.utterance_id, u.speaker, u.text, u.split,
                                          codec.encode(wav[:1], int(codec.sample_rate))[0]))
    # An interleaved LM is measured on the clips whose re-encoding matches its alignment file
    # frame for frame (all splits of its tokens are aligned).
    try:
        return gain_in_own_layout(lm, encoded)
    except ValueError as error:
        # An interleaved LM re-measured with another codec: its alignments no longer match the
        # clips' frames. The search runs all the same; the gain is reported as not measured.
        print(f"[search] LM text gain not measured: {error}", flush=True)
        return TextGain(loss_right=float("nan"), loss_wrong=float("nan"), fraction_better=float("nan"), n_utterances=0)
