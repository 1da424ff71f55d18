"""Metric and check verifiers scored on each arm's chosen clip, cached by clip content."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from workbench.search.ablation.config import AblationConfig
from workbench.search.ablation.plan import build_verifier, load_check_verifier


class ChosenClipMetrics:
    """Metric and check verifiers on chosen clips, cached by clip content (the sample arms of
    different verifier specs choose the same clip)."""

    def __init__(self, config: AblationConfig, sample_rate: int, notes: list[str], search_cache: dict[str, Any]):
        self.sample_rate = sample_rate
        self.cache: dict[tuple[str, str], float] = {}
        check_map = dict(pair.split("=") for pair in config.check_verifiers)
        self.check_names = check_map
        self.verifiers: dict[str, Any | None] = {}
        for name in {config.wer_verifier, config.sim_verifier, config.quality_verifier} - {""}:
            self.verifiers[name] = search_cache.get(name) or build_verifier(name)
        for name in set(check_map.values()):
            self.verifiers[name] = load_check_verifier(name, sample_rate, notes)

    def model_files(self) -> dict[str, str]:
        """The trained model file behind each check verifier that has one (which run it read)."""
        return {name: str(v.model_path) for name, v in self.verifiers.items()
                if v is not None and getattr(v, "model_path", None) is not None}

    def value(self, name: str, wav: Any, codes: Any, text: str, reference: Any, raw: bool) -> float:
        """`raw` metric (WER, cosine, MOS) or score of verifier `name` on `wav`; NaN when the
        verifier is unavailable or the clip is empty."""
        verifier = self.verifiers.get(name)
        if verifier is None or wav is None or wav.numel() == 0:
            return math.nan
        key = (name, hashlib.sha1(wav.numpy().tobytes()).hexdigest() + text)
        if key not in self.cache:
            kwargs = {"codes": [codes]} if getattr(verifier, "accepts_codes", False) else {}
            result = verifier.evaluate([wav], self.sample_rate, texts=[text], prompts=reference, **kwargs)[0]
            value = result.raw.ovrl if hasattr(result.raw, "ovrl") else result.raw
            self.cache[key] = float(value)
            self.cache[(name + "#score", key[1])] = float(result.score)
        return self.cache[key] if raw else self.cache[(name + "#score", key[1])]
