"""What an ablation runs (`AblationConfig`, one row of the `search` settings table) and what it
returns: arms, result rows and the run's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from workbench.settings import stage_profiles

RESULTS_FILE = "results.csv"
PROCESS_STRATEGIES = ("beam", "partial_mix")
"""Strategies that use the process side of a `p>o` verifier spec."""


@dataclass(frozen=True)
class AblationConfig:
    lm_path: str = ""  # LM checkpoint folder (workbench or Llasa-style); required
    codec_path: str = ""  # "" = the codec recorded in the LM checkpoint
    corpus: str = "kathleen"  # prepared corpus: a folder name under the data root, or a path
    split: str = "test"  # held-out split the sentences and prompts come from
    n_sentences: int = 8
    max_words: int = 12  # longer held-out sentences are skipped (token cap grows with words)
    voice_cloning: bool = True  # prompt with another held-out utterance (codes + transcript)
    prompt_min_s: float = 1.0
    prompt_max_s: float = 3.0
    strategies: tuple[str, ...] = ("sample", "best_of_n", "beam", "partial_mix")
    budgets: tuple[int, ...] = (1, 2, 4, 8, 16)
    search_verifiers: tuple[str, ...] = ("resemblyzer>pocketsphinx", "resemblyzer", "pocketsphinx")
    check_verifiers: tuple[str, ...] = ("pocketsphinx=workbench-asr", "resemblyzer=workbench-speaker")
    wer_verifier: str = "pocketsphinx"
    sim_verifier: str = "resemblyzer"
    quality_verifier: str = "dnsmos"  # "" = no quality column
    temperature: float = 0.8  # published sampling (docs/reference.md §2)
    top_p: float = 1.0
    # Classifier-free guidance on the text for every arm (workbench.lm.guidance; 1 = off, > 1
    # needs an LM trained with text_dropout); its second pass per token is counted in the compute
    guidance_scale: float = 1.0
    step_tokens: int = 25  # process-verifier interval: 0.5 s at 50 Hz
    partial_s: float = 2.0
    seconds_per_word: float = 0.4  # token cap: 20 frames per word at 50 Hz ...
    margin_s: float = 1.0  # ... plus this margin
    time_limit_s: float = 0.0  # stop starting new rows after this much wall time (0 = none)
    num_threads: int | None = None
    seed: int = 0

    PROFILES: ClassVar[dict] = stage_profiles("search")  # workbench/profiles.yaml

    def __post_init__(self) -> None:
        from workbench.config import ConfigError

        if self.n_sentences < 1:
            raise ConfigError(f"n_sentences must be >= 1, got {self.n_sentences}")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise ConfigError(f"budgets must be >= 1, got {self.budgets}")
        if not self.strategies or not self.search_verifiers:
            raise ConfigError("strategies and search_verifiers must not be empty")
        for pair in self.check_verifiers:
            if pair.count("=") != 1:
                raise ConfigError(f"check_verifiers entry {pair!r} must read 'search_verifier=check_verifier'")
        if not self.prompt_max_s >= self.prompt_min_s > 0:
            raise ConfigError(f"need 0 < prompt_min_s <= prompt_max_s, got {self.prompt_min_s}, {self.prompt_max_s}")


@dataclass(frozen=True)
class Arm:
    strategy: str
    budget: int
    verifier: str  # the spec as run: "name", "a+b" or "process>outcome"

    @property
    def name(self) -> str:
        """Folder-safe arm name, e.g. ``partial_mix-b8-resemblyzer_then_pocketsphinx``."""
        spec = self.verifier.replace(">", "_then_").replace("+", "_plus_")
        return f"{self.strategy}-b{self.budget}-{spec}"

    @property
    def outcome(self) -> str:
        return self.verifier.split(">")[-1]


@dataclass
class AblationRow:
    utterance_id: str
    text: str
    prompt_id: str
    arm: str
    strategy: str
    budget: int
    verifier: str
    check_verifier: str
    score: float  # the arm's outcome verifier on the chosen clip (what search maximised)
    check_score: float  # the independent check verifier on the chosen clip
    wer: float
    check_wer: float
    sim: float
    check_sim: float
    dnsmos: float
    n_candidates: int
    frames: int
    duration_s: float
    ended: bool
    tokens_generated: int
    decodes: int
    verifier_calls: int
    lm_flops: float
    wall_s: float
    seed: int
    audio: str  # path of the chosen clip, relative to the run directory


@dataclass
class AblationResult:
    run_dir: Path
    results_csv: Path
    rows: list[AblationRow]  # every row of results.csv (resumed ones included)
    n_new_rows: int
    n_skipped_rows: int  # already in results.csv from an earlier launch
    complete: bool  # False when the time limit stopped the run early
    notes: list[str] = field(default_factory=list)  # fallbacks and other messages
    wall_s: float = 0.0
    lm_text_gain: Any = None  # workbench.lm.diagnostics.TextGain of the LM on the held-out split
