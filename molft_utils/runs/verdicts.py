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

Convergence of one training run (:func:`convergence`): it *converged* when validation stopped improving for
``patience`` evaluations at the end (the early-stopping rule of :func:`molft_utils.train.fit`), or when the
best validation RMSE of the last ``window`` evaluations improved on the best before them by less than
:data:`CONVERGENCE_THRESHOLD` (relative). A run shorter than ``window + 1`` evaluations that did not stop early
is *not converged*: it is too short to show a plateau.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

__all__ = [
    "CONVERGENCE_THRESHOLD",
    "CONVERGENCE_WINDOW",
    "LOWER_IS_BETTER",
    "Comparison",
    "combine_convergence",
    "compare",
    "convergence",
    "convergence_label",
    "findings_for",
    "fit_convergence",
    "interval",
    "theory_checks",
    "verdict",
]

log = logging.getLogger(__name__)

#: Relative last-window gain below which a run that did not stop early counts as converged.
CONVERGENCE_THRESHOLD = 0.01
#: Evaluations in the last window of :func:`convergence`.
CONVERGENCE_WINDOW = 5
#: Metrics for which a lower value is better; every other metric (R², Pearson, Spearman) is higher-is-better.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse"})

BETTER, WORSE, SAME = "better", "worse", "not distinguishable"
UNCONVERGED, SINGLE = "not decided (unconverged)", "not decided (n=1)"


def convergence(
    history: Sequence[Mapping],
    patience: int | None = None,
    window: int = CONVERGENCE_WINDOW,
    threshold: float = CONVERGENCE_THRESHOLD,
    key: str = "valid_rmse",
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
    stopped = patience is not None and n > 0 and n - best >= patience
    gain = float("nan")
    if n > window:
        before, last = min(values[:-window]), min(values[-window:])
        gain = (before - last) / before if before else float("nan")
    if n == 0:
        converged, reason = False, "no validation history"
    elif stopped:
        converged, reason = True, f"stopped early: no improvement in the last {patience} of {n} evaluations"
    elif np.isfinite(gain) and gain < threshold:
        converged, reason = True, f"last-{window} gain {gain:.1%} < {threshold:.0%}"
    elif np.isfinite(gain):
        converged, reason = False, f"still improving: last-{window} gain {gain:.1%} ≥ {threshold:.0%}"
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
    """:func:`convergence` of a :class:`~molft_utils.train.FitResult` (its history and configured patience)."""
    config = getattr(fit_result, "config", {}) or {}
    return convergence(getattr(fit_result, "history", []), patience=config.get("patience"))


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
            f"**{word} 0**. Theory's expectation: below 0 (a disagreeing label scored harmful)."
        )
    if lesson.startswith("03"):
        shown, word = _direction(_diag(records, "Spearman influence vs |model error| on pool"))
        lines.append(
            f"- Spearman(influence score, |prediction − pool label|): {shown}, **{word} 0**. Expectation: below 0 "
            "(molecules the model disagrees with scored harmful)."
        )
        base = _diag(records, "nearest-train Tanimoto random")
        for strategy, expected in (("kmeans", "above (centroid-nearest: representative)"),
                                   ("maxmin", "below (farthest-first: outliers)")):  # fmt: skip
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
                    f"- Seconds per epoch of {m} ÷ full fine-tuning: {shown}, **{word} 1**. Expectation: about 1 "
                    "(frozen encoder still runs forward and backward)."
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
    return lines


def _lesson_dir(reports_dir: Path, lesson: str) -> Path | None:
    for cand in sorted(reports_dir.glob(f"{lesson}*")):
        if cand.is_dir():
            return cand
    return None


def findings_for(lesson: str, result: Mapping | str | Path | None = None, reports_dir: str | Path | None = None) -> str:
    """The findings a notebook's Discussion opens with, as markdown, displayed when run in Jupyter.

    Parameters
    ----------
    lesson
        Notebook stem, e.g. ``"01_finetune_and_mlm"`` (a prefix such as ``"01"`` works for ``reports_dir``).
    result
        This run's result record (a dict as written by :func:`molft_utils.runs.write_result`, or the path of
        its ``result.json``); ``None`` skips the single-run part.
    reports_dir
        Directory of the batch results (default: the repository's ``reports/``); when it holds results for
        ``lesson``, the verdicts across seeds are added.

    Returns
    -------
    str
        Markdown text (also shown with ``IPython.display`` when available).
    """
    from . import report  # local import: report imports this module

    parts: list[str] = []
    if result is not None:
        rec = json.loads(Path(result).read_text()) if isinstance(result, str | Path) else dict(result)
        rec.setdefault("seed", rec.get("config", {}).get("seed", 0))
        rec.setdefault("notebook", lesson)
        comps = report.lesson_comparisons([rec])
        parts.append(f"**This run** (seed {rec['seed']}; one seed, so no interval):")
        parts.append(report.comparison_markdown(comps) if comps else "no paired comparison recorded.")
        checks = theory_checks(lesson, [rec])
        if checks:
            parts += ["", "Theory against this run:", *checks]
    if reports_dir is None:
        from .runs import REPO_ROOT

        reports_dir = REPO_ROOT / "reports"
    reports_dir = Path(reports_dir)
    lesson_dir = _lesson_dir(reports_dir, lesson) if reports_dir.is_dir() else None
    if lesson_dir is not None:
        from .runs import load_results

        recs = [r for r in load_results(lesson_dir) if "metrics" in r and "notebook" in r]
        groups = report.group_records(recs)
        if groups:
            # the largest group (most seeds) is the batch configuration
            recs = max(groups.values(), key=len)
            comps = report.lesson_comparisons(recs)
            seeds = sorted({r["seed"] for r in recs})
            parts.append(f"\n**Across seeds** ({len(seeds)} seeds {seeds}, results in `{lesson_dir}`):")
            parts.append(report.comparison_markdown(comps) if comps else "no paired comparison recorded.")
            checks = theory_checks(lesson, recs)
            if checks:
                parts += ["", "Theory against these runs (direction from the 95 % t interval over seeds):", *checks]
    else:
        parts.append(f"\nNo aggregate results for {lesson} under `{reports_dir}` yet.")
    text = "\n".join(parts)
    try:  # pragma: no cover - display only
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
    except ImportError:  # pragma: no cover
        pass
    return text
