"""The equal-budget view of recorded training runs: what each method had reached after the budget another
method (full fine-tuning) needed to converge.

A run trained with early stopping records one row per epoch (validation RMSE, training seconds and, when the
notebook asks for it, the test RMSE of that epoch's weights). Stopping the *same* run after a budget of epochs
(= optimiser steps, since every method uses the same data and batch size) or of training seconds and restoring
its best validation epoch so far gives the equal-budget result, with no further training. The learning-rate
schedule of that run was planned for its own ceiling, so this is "this run, cut at the budget", not a run
re-planned for the budget; the notebook says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["budget_views", "epochs_within", "equal_budget"]


def epochs_within(seconds_per_epoch: float, budget_seconds: float) -> int:
    """Whole epochs of ``seconds_per_epoch`` that fit in ``budget_seconds`` (at least 1).

    Raises
    ------
    ValueError
        When either number is not finite and positive.
    """
    for name, v in (("seconds_per_epoch", seconds_per_epoch), ("budget_seconds", budget_seconds)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite positive number, got {v!r}")
    return max(1, int(budget_seconds // seconds_per_epoch))


def equal_budget(history: Sequence[Mapping], budget_epochs: int, key: str = "valid_rmse") -> dict:
    """The best-validation epoch of ``history`` among its first ``budget_epochs`` epochs.

    Parameters
    ----------
    history
        Per-epoch rows of :func:`~molft_utils.training.train.fit` in order, each with ``key``.
    budget_epochs
        Epochs (≥ 1) the budget allows; a run that stopped earlier is judged on all its epochs.
    key
        The selection quantity (lower is better); never the test metric.

    Returns
    -------
    dict
        ``budget_epochs``, ``epochs_used`` (``min(budget, len(history))``), ``epoch`` (1-based, the restored
        epoch), ``valid_rmse`` (its ``key`` value), ``test_rmse`` (that row's ``test_rmse``, or ``None`` when the
        run did not record it) and ``within_run`` (``False`` when the run had stopped before the budget, so the
        result is its converged one).
    """
    if budget_epochs < 1:
        raise ValueError(f"budget_epochs must be >= 1, got {budget_epochs}")
    if not history:
        raise ValueError("empty history: nothing to cut at a budget")
    rows = list(history)[:budget_epochs]
    missing = [i + 1 for i, r in enumerate(rows) if key not in r]
    if missing:
        raise ValueError(f"history rows {missing[:3]} have no {key!r}")
    best = min(range(len(rows)), key=lambda i: float(rows[i][key]))
    row = rows[best]
    test = row.get("test_rmse")
    return {
        "budget_epochs": int(budget_epochs),
        "epochs_used": len(rows),
        "epoch": best + 1,
        "valid_rmse": float(row[key]),
        "test_rmse": None if test is None else float(test),
        "within_run": len(history) >= budget_epochs,
    }


def budget_views(
    histories: Mapping[str, Sequence[Mapping]],
    seconds_per_epoch: Mapping[str, float],
    reference: str = "full",
    key: str = "valid_rmse",
) -> dict:
    """Every run cut at the budget ``reference`` needed to reach its best validation epoch.

    Two budgets, both fixed by the reference run: its **optimiser steps** (= its best epoch, since every method
    sees the same data in the same batches) and its **training time** (best epoch × its seconds per epoch). A
    method gets ``epochs_within(its seconds per epoch, that time)`` epochs of the time budget, so a method that is
    slower per epoch gets fewer. Each run is then judged at its best validation epoch within its budget
    (:func:`equal_budget`); the reference itself gives its converged result in both views.

    Parameters
    ----------
    histories
        Method → per-epoch rows of its run (each with ``key``; ``test_rmse`` when monitored).
    seconds_per_epoch
        Method → seconds per training epoch, measured in the same conditions for all (e.g. the medians of
        :func:`~molft_utils.methods.peft_methods.costs.interleaved_costs`), not the contended in-run times.
    reference
        The method whose run fixes the budget.
    key
        Selection quantity (lower is better).

    Returns
    -------
    dict
        ``reference``, ``budget_epochs`` (the reference's best epoch), ``budget_seconds`` and, per method,
        ``{"steps": equal_budget(...), "time": equal_budget(...)}``.
    """
    if reference not in histories:
        raise KeyError(f"reference {reference!r} has no history")
    ref = list(histories[reference])
    if not ref:
        raise ValueError(f"reference {reference!r} has an empty history")
    ref_best = min(range(len(ref)), key=lambda i: float(ref[i][key])) + 1
    missing = [m for m in histories if m not in seconds_per_epoch]
    if missing:
        raise KeyError(f"no seconds per epoch for {missing}")
    budget_seconds = ref_best * float(seconds_per_epoch[reference])
    per_method = {}
    for method, history in histories.items():
        # (1 + 1e-9): a method exactly as fast as the reference gets the reference's epochs despite rounding
        epochs = ref_best if method == reference else epochs_within(
            float(seconds_per_epoch[method]), budget_seconds * (1 + 1e-9)
        )
        per_method[method] = {
            "steps": equal_budget(history, ref_best, key),
            "time": equal_budget(history, epochs, key),
        }
    return {
        "reference": reference,
        "budget_epochs": ref_best,
        "budget_seconds": budget_seconds,
        "methods": per_method,
    }
