"""Figures of notebook 04: the cost Pareto panels (accuracy against parameters, time and memory) and the LoRA
rank study."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["cost_pareto_figure", "pareto_front", "rank_figure"]

#: x axes of :func:`cost_pareto_figure`: row key → (axis label, log scale).
COST_AXES = {
    "n_trainable_backbone": ("trainable encoder parameters (log)", True),
    "seconds_per_epoch": ("seconds per training epoch", False),
    "peak_mib": ("peak training memory (MiB)", False),
}


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points that no other point beats on both coordinates (lower is better on both).

    A point is dominated when another has ``x ≤`` and ``y ≤`` with at least one strict; ties are kept once (the
    first). Non-finite points are never on the front. The indices are ordered by increasing ``x``.
    """
    if len(xs) != len(ys):
        raise ValueError("xs and ys must have the same length")
    pts = [(float(x), float(y), i) for i, (x, y) in enumerate(zip(xs, ys, strict=True))
           if np.isfinite(x) and np.isfinite(y)]  # fmt: skip
    front, best = [], float("inf")
    for _x, y, i in sorted(pts):
        if y < best:
            front.append(i)
            best = y
    return front


def _panel(ax: Any, rows: Sequence[Mapping], x: str, y: str, log: bool, label: str, unit: str) -> None:
    xs = [max(float(r[x]), 1.0) if log else float(r[x]) for r in rows]
    ys = [float(r[y]) for r in rows]
    err = [float(r.get(f"{y}_sd", 0.0) or 0.0) for r in rows]
    for i, r in enumerate(rows):
        ax.errorbar(xs[i], ys[i], yerr=err[i] or None, fmt="o", color=f"C{i % 10}", capsize=3)
        ax.annotate(str(r["method"]), (xs[i], ys[i]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto_front(xs, ys)
    if len(front) > 1:
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="grey", lw=1, ls="--",
                label="Pareto front")  # fmt: skip
        ax.legend(frameon=False, fontsize=7)
    ax.set(xlabel=label, ylabel=f"test RMSE ({unit})")
    if log:
        ax.set_xscale("log")


def cost_pareto_figure(rows: Sequence[Mapping[str, Any]], y: str = "test_rmse", unit: str = "logD",
                       title: str = "") -> Any:  # fmt: skip
    """Test RMSE against each cost of :data:`COST_AXES` (one panel each), with the Pareto front of every panel.

    ``rows``: dicts with ``method``, ``y``, optionally ``{y}_sd`` (an error bar) and the keys of
    :data:`COST_AXES`; a panel whose key is missing or not finite for every row is left out.
    """
    import matplotlib.pyplot as plt

    axes_keys = [k for k in COST_AXES if any(np.isfinite(float(r.get(k, np.nan))) for r in rows)]
    if not axes_keys:
        raise ValueError("no cost column with a finite value")
    fig, axes = plt.subplots(1, len(axes_keys), figsize=(4.3 * len(axes_keys), 3.8), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], axes_keys, strict=True):
        label, log = COST_AXES[key]
        usable = [r for r in rows if np.isfinite(float(r.get(key, np.nan)))]
        _panel(ax, usable, key, y, log, label, unit)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def rank_figure(rows: Sequence[Mapping[str, Any]], unit: str = "logD", title: str = "") -> Any:
    """The LoRA rank study: test RMSE against trainable encoder parameters, one line per placement, ranks
    annotated, the Pareto front over all points dashed.

    ``rows``: dicts with ``r``, ``placement``, ``n_trainable_backbone`` and ``test_rmse``.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    placements = list(dict.fromkeys(str(r["placement"]) for r in rows))
    for i, placement in enumerate(placements):
        pts = sorted((float(r["n_trainable_backbone"]), float(r["test_rmse"]), int(r["r"])) for r in rows
                     if str(r["placement"]) == placement)  # fmt: skip
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=f"C{i}", label=placement)
        for x, yv, r in pts:
            ax.annotate(f"r={r}", (x, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
    xs = [float(r["n_trainable_backbone"]) for r in rows]
    ys = [float(r["test_rmse"]) for r in rows]
    front = pareto_front(xs, ys)
    if len(front) > 1:
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="grey", lw=1, ls="--",
                label="Pareto front")  # fmt: skip
    ax.set(xscale="log", xlabel="trainable encoder parameters (log scale)", ylabel=f"test RMSE ({unit})",
           title=title)  # fmt: skip
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
