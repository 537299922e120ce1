"""Convergence of a training run, from its validation history (the gate the verdicts use).

A run *converged* when validation stopped improving for ``patience`` evaluations at the end (the early-stopping
rule of :func:`molft_utils.training.train.fit`), or when the best validation RMSE of the last ``window``
evaluations improved on the best before them by less than :data:`CONVERGENCE_THRESHOLD` (relative). A run
shorter than ``window + 1`` evaluations that did not stop early is *not converged*: it is too short to show a
plateau. (Moved here from ``runs.verdicts`` so that the methods can record it without importing the report layer.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "CONVERGENCE_THRESHOLD",
    "CONVERGENCE_WINDOW",
    "combine_convergence",
    "convergence",
    "convergence_label",
    "fit_convergence",
]

#: Relative last-window gain below which a run that did not stop early counts as converged.
CONVERGENCE_THRESHOLD = 0.01
#: Evaluations in the last window of :func:`convergence`.
CONVERGENCE_WINDOW = 5

def convergence(
    history: Sequence[Mapping],
    patience: int | None = None,
    window: int = CONVERGENCE_WINDOW,
    threshold: float = CONVERGENCE_THRESHOLD,
    key: str = "valid_rmse",
    budget: int | None = None,
) -> dict[str, float | int | bool | str | None]:
    """How settled a training run was when it ended, from its validation history.

    Parameters
    ----------
    history
        One row per validation (epoch or evaluation step), in order, each holding ``key`` (lower is better).
    patience
        Early-stopping patience in evaluations; ``None`` when unknown (then ``stopped_early`` is ``False``).
    window, threshold
        The last-window rule: converged if the relative gain of the last ``window`` evaluations is below
        ``threshold``.
    key
        The validation quantity in each row.
    budget
        The most evaluations the run was allowed; a run that used all of them did not stop early, whatever its
        last ``patience`` evaluations did (the last-window rule decides then). ``None`` when unknown.

    Returns
    -------
    dict
        ``epochs_run`` (evaluations), ``best_epoch`` (1-based; 0 for an empty history), ``patience``,
        ``stopped_early`` (the last ``patience`` evaluations did not improve on the best), ``last_window_gain``
        (``(best before − best in window) / best before``; NaN when the history has ≤ ``window`` rows),
        ``window``, ``threshold``, ``converged`` and ``reason`` (one line).
    """
    values = [float(r[key]) for r in history if r.get(key) is not None and np.isfinite(r[key])]
    n = len(values)
    best = int(np.argmin(values)) + 1 if values else 0
    stopped = patience is not None and n > 0 and n - best >= patience and (budget is None or n < budget)
    gain = float("nan")
    if n > window:
        before, last = min(values[:-window]), min(values[-window:])
        gain = (before - last) / before if before else float("nan")
    if n == 0:
        converged, reason = False, "no validation history"
    elif stopped:
        converged, reason = True, f"stopped early: no improvement in the last {patience} of {n} evaluations"
    elif np.isfinite(gain) and gain < threshold:
        converged, reason = True, f"gain over the last {window} evaluations {gain:.1%} < {threshold:.0%}"
    elif np.isfinite(gain):
        converged = False
        reason = f"still improving: gain over the last {window} evaluations {gain:.1%} ≥ {threshold:.0%}"
    else:
        converged, reason = False, f"{n} evaluations, best at {best}: too short to show a plateau"
    return {
        "epochs_run": n,
        "best_epoch": best,
        "patience": patience,
        "stopped_early": bool(stopped),
        "last_window_gain": gain,
        "window": window,
        "threshold": threshold,
        "converged": bool(converged),
        "reason": reason,
    }


def fit_convergence(fit_result: object) -> dict:
    """:func:`convergence` of a :class:`~molft_utils.train.FitResult` (its history, configured patience, and its
    configured epochs as the budget: a run that used them all did not stop early)."""
    config = getattr(fit_result, "config", {}) or {}
    return convergence(
        getattr(fit_result, "history", []), patience=config.get("patience"), budget=config.get("epochs")
    )


def combine_convergence(parts: Mapping[str, Mapping | None], note: str = "") -> dict:
    """Convergence of a model built from other trained models (a soup, WiSE-FT, RoFt-Mol on Full FT).

    It is converged only when every part is; ``None`` parts (not recorded) make it unknown
    (``converged`` is ``None``).
    """
    flags = [None if p is None else p.get("converged") for p in parts.values()]
    if any(f is False for f in flags):
        conv: bool | None = False
    elif any(f is None for f in flags):
        conv = None
    else:
        conv = True
    bad = [k for k, f in zip(parts, flags, strict=True) if f is not True]
    reason = (note + "; " if note else "") + (
        "all parts converged" if conv else "not converged or not recorded: " + ", ".join(bad)
    )
    return {"converged": conv, "reason": reason, "parts": {k: dict(v) if v else None for k, v in parts.items()}}


def convergence_label(conv: Mapping | None) -> str:
    """``converged`` / ``unconverged`` / ``not recorded`` / ``not iterative`` for one model's record."""
    if conv is None or conv.get("converged", "missing") is None:
        return "not recorded"
    if conv.get("iterative") is False:
        return "not iterative"
    return "converged" if conv.get("converged") else "unconverged"
