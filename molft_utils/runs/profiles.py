"""Run profiles: ``"full"`` (the report's budgets) and ``"quick"`` (a learner's illustration).

Every notebook has a ``profile`` parameter. ``"full"`` runs the lesson as the report does: every model trained
to convergence with early stopping. ``"quick"`` runs the same code with short, stated budgets so that a learner
sees every step in a few minutes on two CPU cores; its numbers illustrate, they decide nothing (its models stop
at their epoch ceiling, and the findings cell says *not decided (unconverged)* for them). Each notebook states its
quick budgets in the cell after its parameters; the lesson-01 recipe's quick overrides are here because lessons
02–05 reuse lesson 01's cached models and must ask for the same ones.

::

    check_profile("quick")
    finetune.recipe_configs(seed, smoke, **recipe_overrides("quick"))   # 3 epochs, patience 2, 1 MLM epoch

Results record their profile in ``config``, so the report never mixes the two (runs are grouped by configuration),
and the batch runner keeps them apart: ``python -m molft_utils.runs.batch -p profile=quick --out reports-quick``.
"""

from __future__ import annotations

__all__ = ["PROFILES", "QUICK_RECIPE", "check_profile", "recipe_overrides"]

#: The profiles a notebook accepts.
PROFILES = ("full", "quick")

#: Overrides of the lesson-01 recipe (:data:`molft_utils.runs.finetune.RECIPE`) in the quick profile: a few
#: fine-tuning epochs with a short patience, and one pass of domain adaptation.
QUICK_RECIPE: dict[str, int] = {"epochs": 3, "patience": 2, "mlm_epochs": 1}


def check_profile(profile: str) -> str:
    """``profile`` itself when it is one of :data:`PROFILES`; otherwise a :class:`ValueError` naming them."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def recipe_overrides(profile: str) -> dict[str, int]:
    """Keyword overrides of :func:`molft_utils.runs.finetune.recipe_configs` for ``profile`` (none for full)."""
    return dict(QUICK_RECIPE) if check_profile(profile) == "quick" else {}
