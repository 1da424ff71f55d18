"""Scaling-law studies: FLOP accounting, sweeps and fits.

`workbench.scaling.fits` holds the fitting library (Chinchilla Approach 2 and 3, power laws, the
held-out predictive check) and `workbench.scaling.plots` the matching figures. Names are re-exported
lazily so that importing the package stays cheap (no numpy/scipy/matplotlib until used).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Allocation": "fits",
    "Band": "fits",
    "BootstrapSummary": "fits",
    "ChinchillaFit": "fits",
    "Frontier": "fits",
    "HoldoutCheck": "fits",
    "HoldoutPrediction": "fits",
    "IsoFlopFit": "fits",
    "PowerLawFit": "fits",
    "compute_frontier": "fits",
    "fit_chinchilla": "fits",
    "fit_isoflop": "fits",
    "fit_power_law": "fits",
    "holdout_check": "fits",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.scaling' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
