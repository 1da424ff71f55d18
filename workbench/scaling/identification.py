"""Which fitted scaling-law parameters a sweep actually identifies, said in words.

The fits in `workbench.scaling.fits` are unconstrained in log space (as Hoffmann et al. 2022 fit
Approach 3), so a sweep can return any exponent: alpha <= 0 (larger models fitted worse), a
runaway exponent with a huge coefficient (the term is flat over the sampled range: loss does not
depend on that variable here), or an exponent whose bootstrap interval straddles one of those
bounds. Such a value is a legitimate *finding* about the sweep, not an error, but nothing derived
from it (compute-optimal curve, N*, D*, predicted optimal loss) means anything. This module
decides what is identified and why not; the study tables, plots and slider show its flags and
withhold what depends on an unidentified exponent.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import ArrayLike

from workbench.scaling.fits import ChinchillaFit, PowerLawFit

# Exponents above this are treated as "the term vanished over the sampled range". Published
# LM/TTS fits sit in 0.05-0.8, and Hoffmann et al.'s initialisation grid spans 0-2; a fitted 3+
# is the optimiser trading an enormous coefficient for a term that is flat across the runs.
MAX_PLAUSIBLE_EXPONENT = 3.0
# E below this fraction of the smallest observed loss counts as "at its bound 0".
E_AT_ZERO_FRACTION = 1e-3
# A term smaller than this share of the loss at every run is invisible to the fit.
NEGLIGIBLE_TERM_FRACTION = 1e-3

_GROWS_WITH = {"alpha": "N (larger models fitted worse)", "beta": "D (more tokens fitted worse)"}


@dataclasses.dataclass(frozen=True)
class ParameterCheck:
    """One fitted parameter: its value, bootstrap interval (if any), and whether it is identified.
    `flag` says in words what is wrong ("" when identified)."""

    law: str
    name: str
    value: float
    interval: tuple[float, float] | None
    identified: bool
    flag: str


@dataclasses.dataclass(frozen=True)
class FitCheck:
    """Every checked parameter of one fit, and whether the quantities derived from its exponents
    (compute-optimal allocation and loss for Chinchilla; the frontier curve for a power law) may
    be shown. `withheld_reason` is the sentence to show in their place."""

    law: str
    parameters: tuple[ParameterCheck, ...]
    derived_identified: bool
    withheld_reason: str

    @property
    def flags(self) -> list[str]:
        return [f"{p.law} {p.name}: {p.flag}" for p in self.parameters if p.flag]

    def parameter(self, name: str) -> ParameterCheck:
        return next(p for p in self.parameters if p.name == name)


def check_exponent(law: str, name: str, value: float, interval: tuple[float, float] | None,
                   grows_with: str) -> ParameterCheck:
    """Identified when finite, in (0, MAX_PLAUSIBLE_EXPONENT], and (with a bootstrap) when the
    interval stays inside those bounds too."""
    flag = ""
    if not math.isfinite(value):
        flag = f"not identified: the fit returned {value!r}"
    elif value <= 0:
        flag = f"non-physical: {name} = {value:.3g} <= 0, loss grows with {grows_with}"
    elif value > MAX_PLAUSIBLE_EXPONENT:
        flag = (f"not identified: {name} = {value:.3g} is past {MAX_PLAUSIBLE_EXPONENT:g}, the term "
                f"is flat over the sampled runs (loss does not depend on {grows_with.split()[0]} here)")
    elif interval is not None:
        low, high = interval
        if not (math.isfinite(low) and math.isfinite(high)):
            flag = f"not identified: bootstrap interval [{low:.3g}, {high:.3g}] is not finite"
        elif low <= 0:
            flag = f"not identified: bootstrap interval [{low:.3g}, {high:.3g}] includes 0"
        elif high > MAX_PLAUSIBLE_EXPONENT:
            flag = (f"not identified: bootstrap interval [{low:.3g}, {high:.3g}] reaches past "
                    f"{MAX_PLAUSIBLE_EXPONENT:g} (the term vanishes in some resamples)")
    return ParameterCheck(law=law, name=name, value=float(value), interval=interval,
                          identified=not flag, flag=flag)


def _check_floor(law: str, value: float, interval: tuple[float, float] | None,
                 min_loss: float | None) -> ParameterCheck:
    flag = ""
    if not math.isfinite(value):
        flag = f"not identified: the fit returned {value!r}"
    elif min_loss is not None and value < E_AT_ZERO_FRACTION * min_loss:
        flag = (f"at its bound: E = {value:.3g} ~ 0, the irreducible loss is not identified "
                f"(the other terms absorb it)")
    return ParameterCheck(law=law, name="E", value=float(value), interval=interval,
                          identified=not flag, flag=flag)


def _interval(fit: ChinchillaFit | PowerLawFit, name: str) -> tuple[float, float] | None:
    if fit.bootstrap is None:
        return None
    low, high = fit.bootstrap.intervals[name]
    return float(low), float(high)


def _negligible_term(check: ParameterCheck, coefficient: float, values: np.ndarray,
                     loss: np.ndarray, variable: str) -> ParameterCheck:
    """A term c x^-exponent below NEGLIGIBLE_TERM_FRACTION of the loss at every run carries no
    information about its exponent, whatever value the optimiser left it at."""
    if not check.identified:
        return check
    with np.errstate(over="ignore", under="ignore"):
        share = np.exp(np.log(coefficient) - check.value * np.log(values)) / loss
    if np.all(share < NEGLIGIBLE_TERM_FRACTION):
        flag = (f"not identified: the {variable} term is below {NEGLIGIBLE_TERM_FRACTION:.1%} of the "
                f"loss at every run (loss does not depend on {variable} here)")
        return dataclasses.replace(check, identified=False, flag=flag)
    return check


def check_chinchilla(fit: ChinchillaFit, n_params: ArrayLike | None = None,
                     n_tokens: ArrayLike | None = None, loss: ArrayLike | None = None) -> FitCheck:
    """Flags for E, alpha and beta of L(N, D) = E + A N^-alpha + B D^-beta. With the runs the
    fit came from, a term that is negligible at every run is flagged too. The allocation (N*, D*,
    optimal loss) needs both exponents identified; E only sets the predicted loss level, so an E
    at zero is flagged but withholds nothing."""
    law = "Chinchilla L(N, D)"
    alpha, beta = (check_exponent(law, name, getattr(fit, name), _interval(fit, name), _GROWS_WITH[name])
                   for name in ("alpha", "beta"))
    min_loss = None
    if n_params is not None and n_tokens is not None and loss is not None:
        y = np.asarray(loss, dtype=float)
        min_loss = float(y.min())
        alpha = _negligible_term(alpha, fit.A, np.asarray(n_params, dtype=float), y, "N")
        beta = _negligible_term(beta, fit.B, np.asarray(n_tokens, dtype=float), y, "D")
    exponents = (alpha, beta)
    floor = _check_floor(law, fit.E, _interval(fit, "E"), min_loss)
    bad = [p for p in exponents if not p.identified]
    reason = ("" if not bad else "compute-optimal allocation withheld: "
              + "; ".join(f"{p.name} {p.flag}" for p in bad))
    return FitCheck(law=law, parameters=(floor, *exponents), derived_identified=not bad,
                    withheld_reason=reason)


def check_power_law(fit: PowerLawFit, min_loss: float | None = None) -> FitCheck:
    """Flags for E and alpha of the frontier law L(C) = E + A C^-alpha."""
    law = "frontier L(C)"
    exponent = check_exponent(law, "alpha", fit.alpha, _interval(fit, "alpha"), "compute")
    floor = _check_floor(law, fit.E, _interval(fit, "E"), min_loss)
    reason = "" if exponent.identified else f"frontier law not identified: alpha {exponent.flag}"
    return FitCheck(law=law, parameters=(floor, exponent), derived_identified=exponent.identified,
                    withheld_reason=reason)
