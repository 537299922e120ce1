"""Verdicts from numbers: paired differences over seeds, their 95 % interval and a convergence gate.

A comparison sets a method against a reference trained on the same seed and split. Per seed we take the
difference ``method − reference`` of one metric; over the seeds we report the mean, a 95 % confidence
interval by Student's t (``mean ± t(0.975, n−1) · sd / √n``), how many seeds favour the method, and a verdict:

* ``better`` / ``worse``: the whole interval lies on the favourable / unfavourable side of zero (for an
  RMSE-like metric lower is better, for an R²-like metric higher is better);
* ``not distinguishable``: the interval contains zero;
* ``not decided (unconverged)``: some model in the comparison did not converge, or its convergence was not
  recorded (which one, and why, is listed beside the verdict) — a difference between unfinished runs says more
  about the budget than about the methods;
* ``not decided (n=1)``: fewer than two seeds, so there is no interval.

Convergence of one training run (:func:`convergence`, from :mod:`molft_utils.training.convergence`): it
*converged* when validation stopped improving for
``patience`` evaluations at the end (the early-stopping rule of :func:`molft_utils.training.train.fit`), or when the
best validation RMSE of the last ``window`` evaluations improved on the best before them by less than
:data:`CONVERGENCE_THRESHOLD` (relative). A run shorter than ``window + 1`` evaluations that did not stop early
is *not converged*: it is too short to show a plateau.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from molft_utils.training.convergence import (
    CONVERGENCE_THRESHOLD,
    CONVERGENCE_WINDOW,
    combine_convergence,
    convergence,
    convergence_label,
    fit_convergence,
)

__all__ = [
    "CONVERGENCE_THRESHOLD",
    "CONVERGENCE_WINDOW",
    "LOWER_IS_BETTER",
    "Comparison",
    "combine_convergence",
    "compare",
    "convergence",
    "convergence_label",
    "fit_convergence",
    "interval",
    "theory_checks",
    "verdict",
]

log = logging.getLogger(__name__)

#: Metrics for which a lower value is better; every other metric (R², Pearson, Spearman) is higher-is-better.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse"})

BETTER, WORSE, SAME = "better", "worse", "not distinguishable"
UNCONVERGED, SINGLE = "not decided (unconverged)", "not decided (n=1)"


def interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two-sided Student-t interval of ``diffs`` (NaN bounds for fewer than two values)."""
    arr = np.asarray(diffs, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, mean - half, mean + half


def verdict(lo: float, hi: float, n: int, lower_is_better: bool, decided: bool = True) -> str:
    """The verdict word for an interval ``[lo, hi]`` of ``method − reference`` over ``n`` seeds."""
    if not decided:
        return UNCONVERGED
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return SINGLE
    if hi < 0:
        return BETTER if lower_is_better else WORSE
    if lo > 0:
        return WORSE if lower_is_better else BETTER
    return SAME


@dataclass
class Comparison:
    """One paired comparison ``method − reference`` of ``metric`` over seeds.

    ``verdict`` is the verdict with the convergence gate; ``interval_verdict`` what the interval alone says
    (shown beside it, so that a reader sees what a converged rerun would have to confirm).
    """

    method: str
    reference: str
    metric: str
    diffs: dict[int, float]
    mean: float
    lo: float
    hi: float
    n_better: int
    verdict: str
    undecided_because: list[str] = field(default_factory=list)
    interval_verdict: str = ""

    @property
    def n(self) -> int:
        return len(self.diffs)

    def as_row(self, digits: int = 3) -> dict[str, str]:
        """Table cells: mean Δ, 95 % CI, seeds better, verdict, convergence note."""
        ci = "–" if not np.isfinite(self.lo) else f"[{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"
        return {
            "mean Δ": f"{self.mean:+.{digits}f}",
            "95 % CI": ci,
            "seeds better": f"{self.n_better}/{self.n}",
            "verdict": self.verdict,
            "interval alone": self.interval_verdict,
            "convergence": "; ".join(self.undecided_because) or "all converged",
        }


def compare(
    method: str,
    reference: str,
    values: Mapping[int, float],
    reference_values: Mapping[int, float],
    metric: str = "rmse",
    convergence_states: Mapping[str, str] | None = None,
) -> Comparison:
    """Paired comparison over the seeds present in both ``values`` and ``reference_values``.

    Parameters
    ----------
    method, reference
        Names (for the table).
    values, reference_values
        Seed → metric value.
    metric
        Metric name; :data:`LOWER_IS_BETTER` decides the direction.
    convergence_states
        Model name → :func:`convergence_label` (or a longer note starting with it) for every model in the
        comparison, all seeds considered (a model is ``unconverged`` when any seed's run was). Anything
        other than ``converged`` / ``not iterative`` makes the verdict *not decided (unconverged)*.
    """
    seeds = sorted(set(values) & set(reference_values))
    diffs = {s: float(values[s]) - float(reference_values[s]) for s in seeds}
    mean, lo, hi = interval(list(diffs.values()))
    lower = metric in LOWER_IS_BETTER
    n_better = sum((d < 0) if lower else (d > 0) for d in diffs.values())
    undecided = [
        f"{name}: {state}"
        for name, state in (convergence_states or {}).items()
        if not (state.startswith("converged") or state.startswith("not iterative"))
    ]
    word = verdict(lo, hi, len(diffs), lower, decided=not undecided)
    alone = verdict(lo, hi, len(diffs), lower)
    return Comparison(method, reference, metric, diffs, mean, lo, hi, int(n_better), word, undecided, alone)


def _direction(values: Sequence[float], zero: float = 0.0) -> tuple[str, str]:
    """(``mean ± std (n)`` or the single value, and ``above`` / ``below`` / ``not distinguishable from``)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return "–", "not measured against"
    mean, lo, hi = interval(arr - zero)
    shown = f"{arr[0]:+.3f} (n=1)" if arr.size == 1 else f"{arr.mean():+.3f} ± {arr.std(ddof=1):.3f} (n={arr.size})"
    if arr.size < 2:
        return shown, "above" if mean > 0 else "below" if mean < 0 else "equal to"
    word = "above" if lo > 0 else "below" if hi < 0 else "not distinguishable from"
    return shown, word


def _diag(records: Sequence[Mapping], key: str) -> list[float]:
    out = []
    for rec in records:
        v = rec.get("extra", {}).get("diagnostics", {}).get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append(float(v))
    return out


def theory_checks(lesson: str, records: Sequence[Mapping]) -> list[str]:
    """Markdown bullets: what the lesson's Theory predicts for a recorded diagnostic, and what the runs show.

    The direction words come from the 95 % t interval over the records (one record: the sign only).
    """
    lines: list[str] = []
    if lesson.startswith("02"):
        shown, word = _direction(_diag(records, "duplicates spearman(|label diff|, score)"))
        lines.append(
            f"- Spearman(|pool label − Lipophilicity label|, influence score) on pool–train duplicates: {shown}, "
            f"**{word} 0**. Theory: the sign is not fixed (the score is linear in the residual; the disagreement sets "
            "its magnitude)."
        )
        mag = _diag(records, "duplicates spearman(|label diff|, |score|)")
        if mag:
            shown, word = _direction(mag)
            lines.append(f"- Spearman(|label difference|, |influence score|) on the duplicates: {shown}, **{word} 0**. "
                         "Theory's expectation: above 0.")
        for ranker in ("validation influence", "self-influence", "loss"):
            auc = _diag(records, f"noise AUC {ranker} (candidates)")
            if auc:
                shown, word = _direction(auc, zero=0.5)
                lines.append(f"- Planted noise: ROC AUC of {ranker} for finding the corrupted labels: "
                             f"{shown}, **{word} 0.5** (chance).")
        r = _diag(records, "exact check pearson r")
        if r:
            shown, word = _direction(r, zero=0.9)
            lines.append(f"- Exact check (output layer): Pearson r of predicted vs actual change of validation loss "
                         f"{shown}, **{word} 0.9**. Expectation: above (a quadratic problem).")
    if lesson.startswith("03"):
        shown, word = _direction(_diag(records, "Spearman influence vs |model error| on pool"))
        lines.append(
            f"- Spearman(influence score, |prediction − pool label|): {shown}, **{word} 0**. "
            "Expectation: no fixed sign (the score is linear in the residual: the error sets its magnitude, "
            "the direction of the validation gradient its sign)."
        )
        base = _diag(records, "nearest-train Tanimoto random")
        # MaxMin picks the candidate farthest from everything chosen so far, training split included: its
        # nearest-train similarity is below random by construction. k-means picks the molecule nearest each
        # pool-cluster centre: representative of the *pool*, which says nothing fixed about the training split.
        for strategy, expected in (("kmeans", "no fixed direction (representative of the pool, not of the "
                                    "training split)"), ("maxmin", "below (farthest-first, by construction)")):
            vals = _diag(records, f"nearest-train Tanimoto {strategy}")
            if len(vals) == len(base) and vals:
                shown, word = _direction([a - b for a, b in zip(vals, base, strict=True)])
                lines.append(
                    f"- Nearest-train Tanimoto of the {strategy} picks − random picks: {shown}, **{word} 0**. "
                    f"Expectation: {expected}."
                )
    if lesson.startswith("04"):
        full = _diag(records, "full: seconds/epoch")
        methods = sorted(
            {k.split(":")[0] for r in records for k in r.get("extra", {}).get("diagnostics", {}) if
             k.endswith(": seconds/epoch")} - {"full"}
        )  # fmt: skip
        for m in methods:
            vals = _diag(records, f"{m}: seconds/epoch")
            if len(vals) == len(full) and vals:
                shown, word = _direction([v / f for v, f in zip(vals, full, strict=True)], zero=1.0)
                shown = shown.replace("+", "")
                lines.append(
                    f"- Seconds per epoch of {m} ÷ full fine-tuning: {shown}, **{word} 1**. Expectation: not far "
                    "below 1 (the frozen encoder still runs forward and backward; only weight gradients and the "
                    "optimiser step shrink, and adapters add work of their own)."
                )
    if lesson.startswith("05"):
        alphas = [
            float(v)
            for r in records
            for k, v in r.get("extra", {}).get("diagnostics", {}).items()
            if k.startswith("WiSE-FT alpha|") and "labels=all" not in k and isinstance(v, int | float)
        ]
        if alphas:
            ones = sum(a == 1.0 for a in alphas)
            lines.append(
                f"- WiSE-FT chose α = 1 (the fine-tuned model itself) in {ones} of {len(alphas)} few-label settings "
                "× seeds. Expectation: α below 1 with few labels (an over-fitted fine-tuned model)."
            )
        floors = [
            float(v)
            for r in records
            for k, v in r.get("extra", {}).get("diagnostics", {}).items()
            if k.startswith("R2 floor: ") and isinstance(v, int | float)
        ]
        if floors:
            n_pos = sum(v > 0 for v in floors)
            lines.append(
                f"- Sanity floor (test R² at the smallest label budget it checks): above 0 for {n_pos} of "
                f"{len(floors)} methods × seeds (lowest {min(floors):+.3f}). Expectation: above 0 for every method "
                "(better than predicting the training mean)."
            )
        gaps = [
            float(v)
            for r in records
            for k, v in r.get("extra", {}).get("diagnostics", {}).items()
            if k.startswith("uniform soup − worst ingredient test RMSE|") and isinstance(v, int | float)
        ]
        if gaps:
            shown, word = _direction(gaps)
            lines.append(
                f"- Uniform soup − its worst ingredient (test RMSE), over settings × seeds: {shown}, **{word} 0**. "
                "Expectation: below 0 when the ingredients share a basin (one linear-probe start), above when they "
                "do not."
            )
        kept = [
            int(v)
            for r in records
            for k, v in r.get("extra", {}).get("diagnostics", {}).items()
            if k.startswith("greedy soup ingredients kept|") and isinstance(v, int | float)
        ]
        if kept:
            ones = sum(k == 1 for k in kept)
            lines.append(
                f"- Greedy soup kept a single ingredient in {ones} of {len(kept)} settings × seeds (then it is that "
                "model, not a soup). Expectation: more than one when averaging helps on validation."
            )
    return lines
