"""Which arms an ablation runs, and the verifiers each arm's spec names."""

from __future__ import annotations

from typing import Any

from workbench.search.ablation.config import PROCESS_STRATEGIES, AblationConfig, Arm


def plan_arms(config: AblationConfig) -> list[Arm]:
    """The arms in run order (see the module docstring for the rules)."""
    from workbench.search import get

    arms: list[Arm] = []
    for strategy in config.strategies:
        get(strategy)  # fail now on a typo, not after an hour of other arms
        budgets = [1] if strategy == "sample" else [b for b in config.budgets if b > 1]
        for budget in budgets:
            for spec in config.search_verifiers:
                spec = spec if strategy in PROCESS_STRATEGIES else spec.split(">")[-1]
                arm = Arm(strategy, budget, spec)
                if arm not in arms:
                    arms.append(arm)
    return arms


def build_verifier(spec: str) -> Any:
    from workbench import verifiers

    parts = spec.split("+")
    if len(parts) > 1:
        return verifiers.weighted({p: 1.0 for p in parts})
    return verifiers.get(spec)


def search_verifiers_for(spec: str, cache: dict[str, Any]) -> Any:
    """`SearchVerifiers` for a spec, verifier objects shared across arms (their caches too)."""
    from workbench.search import SearchVerifiers

    def one(name: str) -> Any:
        if name not in cache:
            cache[name] = build_verifier(name)
        return cache[name]

    names = spec.split(">")
    if len(names) > 2:
        raise ValueError(f"verifier spec {spec!r}: at most one '>' (process>outcome)")
    return SearchVerifiers(outcome=one(names[-1]), process=one(names[0]) if len(names) == 2 else None)


def _probe(verifier: Any, sample_rate: int) -> None:
    """Score one short noise clip so that a missing trained model fails here, not mid-run."""
    import torch

    generator = torch.Generator().manual_seed(0)
    clip = 0.05 * torch.randn(sample_rate, generator=generator)
    kwargs = {"codes": [torch.zeros(50, dtype=torch.long)]} if getattr(verifier, "accepts_codes", False) else {}
    verifier.evaluate([clip], sample_rate, texts=["hello"], prompts=clip, **kwargs)


def load_check_verifier(name: str, sample_rate: int, notes: list[str]) -> Any | None:
    """The check verifier, or None with a note saying why (not registered, no trained model)."""
    try:
        verifier = build_verifier(name)
        _probe(verifier, sample_rate)
    except Exception as error:  # noqa: BLE001 - any failure means "not available": reported, not hidden
        notes.append(f"check verifier {name!r} is not available ({type(error).__name__}: {error}); "
                     "its columns are left empty (train that verifier or pass another check verifier)")
        return None
    return verifier
