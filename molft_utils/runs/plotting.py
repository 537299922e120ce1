"""Figures shared by the notebooks (matplotlib + seaborn), each returning a ``Figure``.

The notebooks caption and save them with :meth:`molft_utils.runs.notebook.NotebookContext.figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

__all__ = ["learning_curves", "mlm_curve", "parity_plots", "token_length_histogram", "PALETTE"]

PALETTE = sns.color_palette("colorblind")


def learning_curves(
    histories: Mapping[str, Sequence[dict]], best_epochs: Mapping[str, int] | None = None, unit: str = "logD"
) -> Figure:
    """Training loss (scaled units) and validation RMSE (label units, ``unit`` on the axis) per epoch."""
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, rows) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in rows]
        color = PALETTE[i % len(PALETTE)]
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], "-o", ms=3, color=color, label=name)
        ax_val.plot(epochs, [r["valid_rmse"] for r in rows], "-o", ms=3, color=color, label=name)
        if best_epochs and name in best_epochs:
            best = best_epochs[name]
            ax_val.scatter([best], [rows[best - 1]["valid_rmse"]], s=90, facecolor="none", edgecolor=color, lw=1.5)
    ax_loss.set(xlabel="epoch", ylabel="training loss (MSE, scaled target)", yscale="log")
    ax_val.set(xlabel="epoch", ylabel=f"validation RMSE ({unit})")
    ax_val.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def parity_plots(
    y_true: Sequence[float],
    predictions: Mapping[str, Sequence[float]],
    metrics: Mapping[str, dict],
    label: str = "logD",
) -> Figure:
    """Predicted vs measured ``label`` on the test set, one panel per method, with RMSE and R² in the title."""
    n = len(predictions)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.3), sharex=True, sharey=True, squeeze=False)
    y_true = np.asarray(y_true, dtype=float)
    lo = min(y_true.min(), *(np.min(p) for p in predictions.values())) - 0.2
    hi = max(y_true.max(), *(np.max(p) for p in predictions.values())) + 0.2
    for i, (ax, (name, pred)) in enumerate(zip(axes[0], predictions.items(), strict=True)):
        ax.scatter(y_true, pred, s=8, alpha=0.5, color=PALETTE[i % len(PALETTE)])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        m = metrics[name]
        ax.set_title(f"{name}\nRMSE {m['rmse']:.3f}, R² {m['r2']:.3f}", fontsize=9)
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=f"measured {label}")
    axes[0][0].set_ylabel(f"predicted {label}")
    fig.tight_layout()
    return fig


def mlm_curve(rows: Sequence[dict], title: str = "") -> Figure:
    """Training and held-out MLM loss against optimiser steps."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = [r["step"] for r in rows]
    train = [r.get("train_loss") for r in rows]
    ax.plot(steps[1:], train[1:], "-o", ms=3, label="training loss (running mean)")
    if any("valid_loss" in r for r in rows):
        ax.plot(steps, [r.get("valid_loss") for r in rows], "-s", ms=3, label="held-out loss (validation SMILES)")
    ax.set(xlabel="optimiser step", ylabel="MLM cross-entropy (masked tokens)", title=title)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def token_length_histogram(lengths: Mapping[str, Sequence[int]]) -> Figure:
    """Distribution of tokenised SMILES lengths (including ``<bos>``/``<eos>``) per data part."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for i, (name, values) in enumerate(lengths.items()):
        sns.histplot(np.asarray(values), ax=ax, label=name, color=PALETTE[i % len(PALETTE)], element="step", fill=False)
    ax.set(xlabel="tokens per molecule", ylabel="molecules")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def pareto_figure(rows: Sequence[dict[str, Any]], x: str = "n_trainable_backbone", y: str = "test_rmse",
                  size: str = "seconds_per_epoch", title: str = "", unit: str = "logD") -> Any:
    """Test RMSE (``unit`` on the axis) against trainable parameters (log scale), marker area ∝ ``size``.

    The Pareto front (no other method has both fewer trainable parameters and a lower RMSE) is
    drawn as a step line. ``rows`` are dicts with ``method`` and the three keys.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    sizes = [float(r[size]) for r in rows]
    scale = 400.0 / max(max(sizes), 1e-9)
    for i, r in enumerate(rows):
        ax.scatter(max(r[x], 1), r[y], s=max(scale * float(r[size]), 15.0), alpha=0.6, color=f"C{i % 10}",
                   edgecolor="k", label=f"{r['method']} ({float(r[size]):.1f} s/epoch)")
        ax.annotate(r["method"], (max(r[x], 1), r[y]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    front = sorted(rows, key=lambda r: (r[x], r[y]))
    best, pts = float("inf"), []
    for r in front:
        if r[y] < best:
            best = r[y]
            pts.append((max(r[x], 1), r[y]))
    if len(pts) > 1:
        ax.step(*zip(*pts, strict=True), where="post", color="grey", lw=1, ls="--", label="Pareto front")
    ax.set(xscale="log", xlabel=f"trainable parameters ({x.replace('_', ' ')}, log scale)",
           ylabel=f"test RMSE ({unit})", title=title)
    ax.legend(frameon=False, fontsize=7, loc="best")
    fig.tight_layout()
    return fig
