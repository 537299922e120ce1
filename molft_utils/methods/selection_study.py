"""Lesson 03's study design: two regimes of data selection, proxy labels, picks and learning curves.

**Regime A** (the reference study's setting): the full training split is labelled and ``n`` molecules of the
leakage-filtered external pool are added. **Regime B** (where selection can matter): a small labelled *start*
of the training split (:func:`low_data_split`); the rest of the training split are unlabelled *candidates*
whose labels are revealed only for the picks, at several labelling budgets. A strategy that needs labels before
picking (stratified sampling) or a label per candidate (influence scores) uses *proxy labels* in regime B: the
predictions of a random forest on ECFP4 counts trained on the start set (:func:`proxy_labels`).

Results are named ``regime=B|strategy=maxmin|n=200|learner=finetuned`` (:func:`method_name`), so that the
report pairs each strategy with ``strategy=random`` at the same regime, budget and learner
(``paired_reference = {"strategy": "random"}``); the arm that adds nothing is ``strategy=none|n=0``. Extra
random draws of regime A are ``strategy=random (draw k)``: compared with the first random draw they show how
large a difference pure chance makes.

:func:`learning_curve_figure` draws test RMSE against the budget for one run (points) or several seeds
(mean and a ± 1 sd band) - the same function serves the notebook and the report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from molft_utils.methods import selection
from molft_utils.methods.baselines import featurise, fit_random_forest
from molft_utils.methods.selection_profile import describe_picks
from molft_utils.training.metrics import regression_metrics

__all__ = [
    "NOT_ITERATIVE",
    "STRATEGIES",
    "describe_against",
    "describe_selection",
    "learning_curve_figure",
    "low_data_split",
    "method_name",
    "paired_deltas",
    "parse_method",
    "per_seed_values",
    "pick_all",
    "proxy_labels",
    "rf_metrics",
]

log = logging.getLogger(__name__)

#: The strategies of both regimes, in display order (``random`` is the control; ``none`` adds nothing).
STRATEGIES = ("random", "stratified", "kmeans", "maxmin", "influence")
#: Convergence record of a model that is not trained iteratively (the random forests).
NOT_ITERATIVE = {"iterative": False, "converged": True, "reason": "not iteratively trained"}


def method_name(regime: str, strategy: str, n: int, learner: str = "finetuned") -> str:
    """``regime=<regime>|strategy=<strategy>|n=<n>|learner=<learner>`` (the result record's method key)."""
    for value in (regime, strategy, learner):
        if "|" in value or "=" in value:
            raise ValueError(f"'|' and '=' are separators, not allowed in {value!r}")
    return f"regime={regime}|strategy={strategy}|n={int(n)}|learner={learner}"


def parse_method(name: str) -> dict[str, str | int]:
    """Inverse of :func:`method_name` (``n`` as an int); raises :class:`ValueError` for another layout."""
    parts = dict(p.partition("=")[::2] for p in name.split("|"))
    if set(parts) != {"regime", "strategy", "n", "learner"}:
        raise ValueError(f"not a selection-study method name: {name!r}")
    return {**parts, "n": int(parts["n"])}


def low_data_split(train: pd.DataFrame, n_start: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded labelled start of ``n_start`` rows and the remaining rows as unlabelled candidates.

    Both keep the training split's row order; neither shares a row with the other.
    """
    if not 1 <= n_start < len(train):
        raise ValueError(f"n_start must be in [1, {len(train) - 1}], got {n_start}")
    chosen = np.zeros(len(train), dtype=bool)
    chosen[np.random.default_rng(seed).choice(len(train), size=n_start, replace=False)] = True
    return train[chosen].reset_index(drop=True), train[~chosen].reset_index(drop=True)


def proxy_labels(
    labelled_smiles: Sequence[str],
    labelled_y: Sequence[float] | np.ndarray,
    candidate_smiles: Sequence[str],
    seed: int,
    n_estimators: int = 500,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Predicted labels of the candidates from a random forest on ECFP4 counts fitted on the labelled start.

    Regime B's stratified selection bins these instead of the (hidden) true labels, and its influence scores use
    them as the candidates' labels.
    """
    forest = fit_random_forest(list(labelled_smiles), labelled_y, seed, n_estimators=n_estimators,
                               n_jobs=n_jobs if n_jobs is not None else 1)  # fmt: skip
    return forest.predict(featurise(list(candidate_smiles)))


def pick_all(
    n: int,
    *,
    seed: int,
    smiles: Sequence[str],
    labels: Sequence[float] | np.ndarray,
    embeddings: np.ndarray,
    scores: Sequence[float] | np.ndarray,
    reference_smiles: Sequence[str] | None = None,
    strata: int = 3,
    n_clusters: int = 5,
    random_draws: int = 1,
) -> dict[str, np.ndarray]:
    """Every strategy's ``n`` picks (positions into the candidates) with the selectors of
    :mod:`molft_utils.methods.selection`.

    Parameters
    ----------
    n
        Budget.
    seed
        Seed of the random, stratified, k-means and MaxMin selectors. Random draw ``k`` (``k ≥ 1``) uses
        ``seed + 1000 k``.
    smiles, labels, embeddings, scores
        The candidates' SMILES, the labels stratified sampling bins (the pool's own labels, or proxy labels),
        their embeddings (k-means) and influence scores (``influence`` takes the top ``n``).
    reference_smiles
        Already-labelled molecules that seed MaxMin (``maxmin_sample(reference=...)``); ``None``: MaxMin over
        the candidates alone.
    strata, n_clusters
        Bins of stratified sampling, clusters of k-means (capped at ``n``).
    random_draws
        Number of random draws: ``"random"`` and ``"random (draw 2)"`` … ``"random (draw <random_draws>)"``.

    Returns
    -------
    dict
        Strategy name → positions, in :data:`STRATEGIES` order, extra random draws after ``random``.
    """
    if random_draws < 1:
        raise ValueError(f"random_draws must be at least 1, got {random_draws}")
    n_pool = len(smiles)
    picks = {"random": selection.select("random", n, seed=seed, n_pool=n_pool)}
    for k in range(1, random_draws):
        picks[f"random (draw {k + 1})"] = selection.select("random", n, seed=seed + 1000 * k, n_pool=n_pool)
    picks["stratified"] = selection.select("stratified", n, seed=seed, labels=np.asarray(labels), bins=strata)
    picks["kmeans"] = selection.select("kmeans", n, seed=seed, embeddings=embeddings,
                                       n_clusters=min(n_clusters, n))  # fmt: skip
    picks["maxmin"] = selection.maxmin_sample(list(smiles), n, seed=seed, reference=reference_smiles)
    picks["influence"] = selection.select("top", n, scores=np.asarray(scores))
    return picks


def describe_selection(
    picks: Mapping[str, np.ndarray], candidates: pd.DataFrame, labelled: pd.DataFrame
) -> pd.DataFrame:
    """:func:`~molft_utils.methods.selection_profile.describe_picks` of every strategy's picks (rows), with
    the candidates' labels (revealed for the picks) and ``labelled`` as the already-labelled set; a last row
    ``all candidates`` describes the whole candidate set for comparison."""
    smiles, y = list(labelled.smiles), labelled.label.to_numpy()
    rows = {
        name: describe_picks(list(candidates.smiles.iloc[idx]), candidates.label.iloc[idx].to_numpy(), smiles, y)
        for name, idx in picks.items()
    }
    rows["all candidates"] = describe_picks(list(candidates.smiles), candidates.label.to_numpy(), smiles, y)
    return pd.DataFrame(rows).T


def rf_metrics(
    train_smiles: Sequence[str],
    train_y: Sequence[float] | np.ndarray,
    test: pd.DataFrame,
    seed: int,
    n_estimators: int = 500,
    n_jobs: int | None = None,
) -> dict[str, float]:
    """Test metrics of a random forest on ECFP4 counts fitted on ``train_smiles`` / ``train_y``."""
    forest = fit_random_forest(list(train_smiles), train_y, seed, n_estimators=n_estimators,
                               n_jobs=n_jobs if n_jobs is not None else 1)  # fmt: skip
    return regression_metrics(test.label.to_numpy(), forest.predict(featurise(list(test.smiles))))


def paired_deltas(
    metrics: Mapping[str, Mapping[str, float]], reference: str = "random", metric: str = "rmse"
) -> pd.DataFrame:
    """One run's ``metric`` per method with its difference to ``reference`` at the same regime, budget and
    learner (and to ``none``, the arm that adds nothing, of the same regime and learner).

    Returns
    -------
    pandas.DataFrame
        Columns ``regime, learner, n, strategy, <metric>, Δ vs <reference>, Δ vs none``, sorted by regime,
        learner, budget and :data:`STRATEGIES` order. Names that are not :func:`method_name` keys are skipped.
    """
    rows = []
    for name, m in metrics.items():
        try:
            p = parse_method(name)
        except ValueError:
            continue
        ref = metrics.get(method_name(p["regime"], reference, p["n"], p["learner"]), {}).get(metric)
        none = metrics.get(method_name(p["regime"], "none", 0, p["learner"]), {}).get(metric)
        value = m.get(metric, float("nan"))
        rows.append({
            **p, metric: value,
            f"Δ vs {reference}": value - ref if ref is not None and p["strategy"] != "none" else float("nan"),
            "Δ vs none": value - none if none is not None and p["strategy"] != "none" else float("nan"),
        })  # fmt: skip
    order = {s: i for i, s in enumerate(("none", *STRATEGIES))}
    df = pd.DataFrame(rows, columns=["regime", "strategy", "n", "learner", metric, f"Δ vs {reference}", "Δ vs none"])
    key = df.strategy.map(lambda s: (order.get(s.split(" (")[0], len(order)), s))
    df = df.assign(_k=key).sort_values(["regime", "learner", "n", "_k"]).drop(columns="_k")
    return df[["regime", "learner", "n", "strategy", metric, f"Δ vs {reference}", "Δ vs none"]].reset_index(drop=True)


def per_seed_values(records: Sequence[Mapping], metric: str = "rmse") -> dict[str, list[float]]:
    """Method name → the ``metric`` of every record (one per seed) that has it."""
    out: dict[str, list[float]] = {}
    for rec in records:
        for name, m in rec.get("metrics", {}).items():
            if m.get(metric) is not None:
                out.setdefault(name, []).append(float(m[metric]))
    return out


def learning_curve_figure(
    values: Mapping[str, Sequence[float]],
    regime: str = "B",
    unit: str = "logD",
    start_size: int | None = None,
    title: str | None = None,
) -> Figure:
    """Test RMSE against the labelling budget, one panel per learner and one curve per strategy.

    Parameters
    ----------
    values
        Method name (:func:`method_name`) → per-seed values; names of other regimes are ignored. With one value
        per point the points are drawn (joined by thin lines); with several, the mean and a ± 1 sd band.
        ``strategy=none|n=0`` (the labelled start alone) is drawn at budget 0 and starts every curve.
    regime
        Which regime to draw.
    unit
        Error unit for the axis label.
    start_size
        Labelled start size, shown in the axis label.
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Not managed by pyplot (safe to build outside a notebook).
    """
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for name, vals in values.items():
        try:
            p = parse_method(name)
        except ValueError:
            continue
        if p["regime"] != regime or not len(vals):
            continue
        curves.setdefault(str(p["learner"]), {}).setdefault(str(p["strategy"]), {})[int(p["n"])] = list(vals)
    if not curves:
        raise ValueError(f"no regime={regime} results to draw")
    learners = sorted(curves, key=lambda s: (s != "finetuned", s))
    fig = Figure(figsize=(5.2 * len(learners), 3.9))
    axes = np.atleast_1d(fig.subplots(1, len(learners), sharey=False))
    colours = dict(zip(STRATEGIES, ("#555555", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"), strict=True))
    for ax, learner in zip(axes, learners, strict=True):
        per = curves[learner]
        start = per.pop("none", {}).get(0)
        for strategy in sorted(per, key=lambda s: (STRATEGIES.index(s) if s in STRATEGIES else 99, s)):
            pts = dict(per[strategy])
            if start is not None:
                pts.setdefault(0, start)
            ns = sorted(pts)
            mean = np.array([np.mean(pts[b]) for b in ns])
            colour = colours.get(strategy)
            fmt = "o--" if strategy == "random" else "o-"
            if max(len(pts[b]) for b in ns) > 1:
                sd = np.array([np.std(pts[b], ddof=1) if len(pts[b]) > 1 else 0.0 for b in ns])
                (line,) = ax.plot(ns, mean, fmt, ms=4, color=colour, label=strategy)
                ax.fill_between(ns, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
            else:
                ax.plot(ns, mean, fmt, ms=4, lw=0.8, color=colour, label=strategy)
        if start is not None:
            ax.plot([0], [np.mean(start)], "ks", ms=6, label="start only (none)")
        ax.set_xlabel("labelled molecules added (budget)" + (f"; start = {start_size}" if start_size else ""))
        ax.set_ylabel(f"test RMSE ({unit})")
        ax.set_title({"finetuned": "fine-tuned transformer", "rf": "ECFP4 + RF"}.get(learner, learner), fontsize=10)
        ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def describe_against(profile: pd.DataFrame, reference: str = "random", tol: float = 0.01) -> list[str]:
    """One sentence per strategy: the novelty, scaffold novelty and label spread of its picks next to the
    ``reference`` strategy's picks, in words that follow the numbers of :func:`describe_selection`.

    Differences below ``tol`` are "about the same" (one run has no interval: these words describe the picks of
    this run, not a verdict).
    """
    if reference not in profile.index:
        raise ValueError(f"no {reference!r} row in the profile")
    ref = profile.loc[reference]

    def cmp(row: pd.Series, col: str, lower: str, higher: str) -> str:
        d = float(row[col] - ref[col])
        word = "about the same as" if abs(d) < tol else lower if d < 0 else higher
        return f"{col} {row[col]:.3f} ({word} {reference}'s {ref[col]:.3f})"

    out = []
    for name, row in profile.iterrows():
        if name == reference or name == "all candidates" or str(name).startswith(f"{reference} ("):
            continue
        terciles = "/".join(f"{row[f'share {t} label tercile']:.2f}" for t in ("low", "middle", "high"))
        out.append(
            f"{name}: "
            + "; ".join([
                cmp(row, "nearest-labelled Tanimoto", "more novel than", "more familiar than"),
                cmp(row, "share new scaffolds", "fewer new scaffolds than", "more new scaffolds than"),
                cmp(row, "label std", "narrower labels than", "wider labels than"),
                f"label terciles low/middle/high {terciles}",
            ])  # fmt: skip
        )
    return out
