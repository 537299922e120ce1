"""The report's figures: the forest plot of paired differences and one figure shaped to each lesson's design.

Figures are :class:`matplotlib.figure.Figure` objects rendered with their own Agg canvas (:func:`_plt`), so building
the report neither switches the process's matplotlib backend nor leaves figures open in a notebook that calls it.
Each lesson's figure function takes the group's records, the output path, a title and the error unit, and returns
whether it drew ``path`` (or, for lesson 03, the list of figures it drew).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from molft_utils.methods.selection_study import learning_curve_figure, parse_method, per_seed_values
from molft_utils.runs import verdicts as vd
from molft_utils.runs.comparisons import DERIVED_05, METRIC_NAMES, natural_key, readable, split_method

__all__ = ["LESSON_FIGURES", "VERDICT_COLOURS", "bars_figure", "forest_figure", "spread_labels"]


def _plt() -> SimpleNamespace:
    """The few pyplot calls the report makes, on figures that pyplot does not manage.

    ``matplotlib.figure.Figure`` renders with its own Agg canvas on ``savefig``, so building the report neither
    switches the process's global backend nor leaves figures open in a notebook that calls it.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, **kwargs):
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)  # its own Agg canvas: a renderer to measure text with, and savefig
        return fig, fig.subplots(nrows, ncols, **kwargs)

    return SimpleNamespace(
        subplots=subplots,
        close=lambda fig: None,  # not registered with pyplot: nothing to close
        Line2D=Line2D,
        get_cmap=lambda name: matplotlib.colormaps[name],
    )


def spread_labels(fig, labels: Sequence, step_px: float = 1.0, max_moves: int = 40) -> int:
    """Move point labels (``ax.annotate`` texts) vertically until no two overlap; how many moves it took.

    Labels are taken from the lowest point up; a label that overlaps one already placed is shifted up by the
    overlap plus ``step_px`` (in display pixels, through its offset in points), at most ``max_moves`` times in all.
    Points that share an x position and a similar value (LoRA, DoRA and AdaLoRA in lesson 04) stay readable.
    """
    if len(labels) < 2:
        return 0
    renderer = fig.canvas.get_renderer()
    points_per_px = 72.0 / fig.dpi
    placed, moves = [], 0
    for text in sorted(labels, key=lambda t: t.xy[1]):
        box = text.get_window_extent(renderer)
        while moves < max_moves:
            hit = next((b for b in placed if b.overlaps(box)), None)
            if hit is None:
                break
            dy = hit.y1 - box.y0 + step_px
            x_off, y_off = text.get_position()
            text.set_position((x_off, y_off + dy * points_per_px))
            box = text.get_window_extent(renderer)
            moves += 1
        placed.append(box)
    return moves


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)


VERDICT_COLOURS = {vd.BETTER: "#2a9d4b", vd.WORSE: "#c0392b", vd.SAME: "#4c72b0"}


def versus(method: str, reference: str) -> str:
    """What differs between a method key and its reference key (``Full FT`` for a pattern reference)."""
    a, b = split_method(method), split_method(reference)
    diff = {k: v for k, v in b.items() if a.get(k) != v}
    return (
        readable("|".join(f"{k}={v}" for k, v in diff.items())) if diff and len(diff) < len(b) else readable(reference)
    )


def forest_figure(comps: Sequence[vd.Comparison], path: Path, title: str) -> bool:
    """Paired differences with their 95 % intervals, one row per comparison.

    Colour: what the interval alone says; filled marker: the verdict is decided, hollow: not decided
    (unconverged or n = 1). Rows far outside the range of the others are drawn at the edge with their mean.
    """
    comps = [c for c in comps if c.n >= 1]
    if not comps:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.26 * len(comps) + 1.6))
    bounds = np.array([[c.lo, c.hi] if np.isfinite(c.lo) else [c.mean, c.mean] for c in comps])
    span = np.abs(bounds).max(axis=1)
    limit = float(np.quantile(span, 0.85)) * 2.5 if len(comps) >= 8 else float(span.max())
    limit = max(limit, 1e-3) * 1.05
    for i, c in enumerate(comps):
        colour = VERDICT_COLOURS.get(c.interval_verdict, "#999999")
        decided = c.verdict == c.interval_verdict
        lo, hi, mean = (np.clip(v, -limit, limit) for v in (c.lo, c.hi, c.mean))
        if np.isfinite(c.lo):
            ax.plot([lo, hi], [i, i], color=colour, lw=2)
        ax.plot(mean, i, "o", ms=6, color=colour, mfc=colour if decided else "white", mew=1.5)
        if abs(c.mean) > limit:
            ax.annotate(f"off scale: mean {c.mean:+.2f}", (mean, i), xytext=(-4 if c.mean > 0 else 4, 3),
                        textcoords="offset points", ha="right" if c.mean > 0 else "left", fontsize=7)  # fmt: skip
        else:
            ax.scatter(list(c.diffs.values()), np.full(c.n, i), color="k", s=6, zorder=3, alpha=0.6)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlim(-limit, limit)
    refs = {versus(c.method, c.reference) for c in comps}
    labels = [
        readable(c.method) + ("" if len(refs) == 1 else f"  (vs {versus(c.method, c.reference)})") for c in comps
    ]
    ax.set_yticks(np.arange(len(comps)), labels, fontsize=8)
    ax.invert_yaxis()
    metric = METRIC_NAMES.get(comps[0].metric, comps[0].metric)
    ref_note = next(iter(refs)) if len(refs) == 1 else "reference"
    ax.set_xlabel(f"Δ test {metric} = method − {ref_note}\nline: 95 % CI over seeds; dots: seeds", fontsize=9)
    handles = [
        plt.Line2D([], [], color=c, marker="o", lw=2, label=f"interval: {k}") for k, c in VERDICT_COLOURS.items()
    ]
    handles += [
        plt.Line2D([], [], color="k", marker="o", lw=0, label="verdict decided"),
        plt.Line2D([], [], color="k", marker="o", mfc="white", lw=0, label="not decided (unconverged / n=1)"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_title(title, fontsize=10)
    _save(fig, path)
    return True


def bars_figure(
    records: Sequence[dict], path: Path, title: str, reference: str | None = None, unit: str = "logD"
) -> bool:
    """Test RMSE per method: mean ± std and seed dots (the reference's mean as a dashed line)."""
    methods = per_seed_values(records)
    if not methods or len(methods) > 40:
        return False
    plt = _plt()
    names = sorted(methods, key=natural_key)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.3))
    y = np.arange(len(names))
    means = [np.mean(methods[m]) for m in names]
    stds = [np.std(methods[m], ddof=1) if len(methods[m]) > 1 else 0.0 for m in names]
    # points, not bars: the axis does not start at zero, and a truncated bar would exaggerate differences
    ax.errorbar(means, y, xerr=stds, fmt="D", color="#4c72b0", ms=7, capsize=4, lw=2)
    for i, m in enumerate(names):
        ax.scatter(methods[m], np.full(len(methods[m]), i), color="k", s=10, zorder=3)
    if reference and reference in methods:
        ax.axvline(np.mean(methods[reference]), color="#c0392b", ls="--", lw=1, label=f"{readable(reference)} (mean)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(y, [readable(n) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"test RMSE ({unit}); diamond and line: mean ± std over seeds, dots: seeds", fontsize=9)
    ax.set_title(title, fontsize=10)
    _save(fig, path)
    return True


def _rmse_vs_k_figure(records: Sequence[dict], path: Path, title: str, unit: str = "logD") -> bool:
    """Notebook 02: test RMSE against k per selection (k = 0 is the shared 'none' start), mean ± std band."""
    methods = per_seed_values(records)
    curves: dict[str, dict[int, list[float]]] = {}
    base = None
    for name, vals in methods.items():
        parts = split_method(name)
        if "selection" not in parts or "k" not in parts:
            return False
        if parts["selection"] == "none":
            base = vals
            continue
        curves.setdefault(parts["selection"], {})[int(parts["k"])] = vals
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for sel, per_k in sorted(curves.items()):
        pts = ({0: base} if base else {}) | per_k
        ks = sorted(pts)
        mean = np.array([np.mean(pts[k]) for k in ks])
        sd = np.array([np.std(pts[k], ddof=1) if len(pts[k]) > 1 else 0.0 for k in ks])
        (line,) = ax.plot(ks, mean, "o-", label=sel)
        ax.fill_between(ks, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
    ax.set_xticks(sorted({0, *(k for c in curves.values() for k in c)}))
    ax.set_xlabel("k pool molecules added (k = 0: none)")
    ax.set_ylabel(f"test RMSE ({unit})")
    ax.legend(title="selection", fontsize=8)
    ax.set_title(title + "; band: mean ± std over seeds", fontsize=10)
    _save(fig, path)
    return True


def _learning_curve_figure(records: Sequence[dict], path: Path, title: str, unit: str = "logD") -> list[Path]:
    """Notebook 03: regime A (a fixed budget added to the training split) as points per strategy and learner;
    regime B (a small labelled start and growing budgets) as learning curves, a panel per learner.

    Records written before the two regimes (method names without ``regime=``) get the older single figure.
    """
    methods = per_seed_values(records)
    parsed = {}
    for name in methods:
        try:
            parsed[name] = parse_method(name)
        except ValueError:
            continue
    if not parsed:
        return [path] if _legacy_selection_figure(records, path, title, unit) else []
    written = []
    regime_a = {n: v for n, v in methods.items() if n in parsed and parsed[n]["regime"] == "A"}
    if regime_a:
        ref = next((n for n in regime_a if parsed[n]["strategy"] == "random" and parsed[n]["learner"] == "finetuned"),
                   None)  # fmt: skip
        path_a = path.with_name(path.stem + "_A" + path.suffix)
        only_a = [{"metrics": {n: m for n, m in r.get("metrics", {}).items() if n in regime_a}} for r in records]
        if bars_figure(only_a, path_a, title + " — regime A", reference=ref, unit=unit):
            written.append(path_a)
    if any(p["regime"] == "B" for p in parsed.values()):
        start = records[0].get("config", {}).get("n_start")
        fig = learning_curve_figure(methods, regime="B", unit=unit, start_size=start, title=title + " — regime B")
        _save(fig, path)
        written.append(path)
    return written


def _legacy_selection_figure(records: Sequence[dict], path: Path, title: str, unit: str = "logD") -> bool:
    """Records of the single-regime lesson 03: a learning curve over ``n`` when several budgets exist."""
    methods = per_seed_values(records)
    budgets = {split_method(m).get("n") for m in methods if split_method(m).get("n") not in (None, "0")}
    if len(budgets) <= 1:
        ref = next((m for m in methods if split_method(m).get("strategy") == "random"), None)
        return bars_figure(records, path, title, reference=ref, unit=unit)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    curves: dict[str, dict[int, list[float]]] = {}
    for name, vals in methods.items():
        parts = split_method(name)
        curves.setdefault(parts.get("strategy", name), {})[int(parts.get("n", 0))] = vals
    for strat, pts in sorted(curves.items()):
        ns = sorted(pts)
        mean = np.array([np.mean(pts[n]) for n in ns])
        sd = np.array([np.std(pts[n], ddof=1) if len(pts[n]) > 1 else 0.0 for n in ns])
        (line,) = ax.plot(ns, mean, "o-", label=strat)
        ax.fill_between(ns, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("pool molecules added (n)")
    ax.set_ylabel(f"test RMSE ({unit})")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    _save(fig, path)
    return True


def _pareto_figure(records: Sequence[dict], path: Path, title: str, unit: str = "logD") -> bool:
    """Notebook 04: test RMSE against trainable parameters per method, with the Pareto front."""
    methods = per_seed_values(records)
    params: dict[str, float] = {}
    for rec in records:
        for name, v in rec.get("extra", {}).get("diagnostics", {}).items():
            if name.endswith(": trainable parameters"):
                params[name.split(":")[0]] = float(v)
    for m in methods:
        if m not in params and m.startswith("full"):
            params[m] = params.get("full", float("nan"))
    pts = [(params[m], float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, m)
           for m, v in methods.items() if np.isfinite(params.get(m, float("nan")))]  # fmt: skip
    if len(pts) < 2:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    labels = []
    for x, y, sd, m in pts:
        if "recipe" in m:  # the lesson-01 recipe's full fine-tune: a reference, not a method of the lesson
            style, label = {"fmt": "s", "color": "#888888", "ms": 6}, "full, lesson-01 recipe"
        elif m.startswith("lora r"):  # the LoRA rank × placement study: smaller, lighter, labelled by rank
            style, label = {"fmt": "o", "color": "#9ecae1", "ms": 4}, m.removeprefix("lora ")
        else:
            style, label = {"fmt": "o", "color": "#4c72b0", "ms": 6}, m
        ax.errorbar(x, y, yerr=sd, capsize=3, **style)
        labels.append(ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4),
                                  fontsize=7 if m.startswith("lora r") else 8))  # fmt: skip
    front, best = [], float("inf")
    for x, y, _, _m in sorted(p for p in pts if "recipe" not in p[3]):
        if y < best:
            front.append((x, y))
            best = y
    if len(front) > 1:
        ax.step(*zip(*front, strict=True), where="post", color="#c0392b", lw=1, ls="--", label="Pareto front")
    for name, ls in (("ECFP4 + RF", "-."), ("training mean", ":")):  # the classical and the trivial baseline
        if name in methods:
            ax.axhline(float(np.mean(methods[name])), color="0.45", ls=ls, lw=1, label=f"{name} (mean)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (head included, log scale)")
    ax.set_ylabel(f"test RMSE ({unit}); mean ± std over seeds")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()  # final axes geometry first: the label boxes are measured in display pixels
    spread_labels(fig, labels)
    _save(fig, path)
    return True


def _budget_order(value: str) -> float:
    return float("inf") if value == "all" else float(value)


def _rmse_vs_labels_figure(records: Sequence[dict], path: Path, title: str, unit: str = "logD") -> bool:
    """Notebook 05: test RMSE against label budget (50 → 100 → 500 → all) per method, a panel per split."""
    methods = per_seed_values(records)
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, vals in methods.items():
        parts = split_method(name)
        if not {"method", "labels", "split"} <= set(parts):
            return False
        table.setdefault(parts["split"], {}).setdefault(parts["method"], {})[parts["labels"]] = vals
    if not table:
        return False
    budgets = sorted({b for s in table.values() for m in s.values() for b in m}, key=_budget_order)
    plt = _plt()
    fig, axes = plt.subplots(1, len(table), figsize=(5.2 * len(table), 4.6), sharey=True, squeeze=False)
    # the axis ends at the upper Tukey fence of all mean RMSEs, so that no one broken method squeezes the others
    means = np.array([np.mean(v) for s in table.values() for d in s.values() for v in d.values()])
    q1, q3 = np.percentile(means, [25, 75])
    top = float(min(means.max(), q3 + 1.5 * (q3 - q1))) + 0.05
    off_scale = set()
    all_methods = sorted({m for s in table.values() for m in s})
    cmap = plt.get_cmap("tab20")
    colours = {m: cmap(i % 20) for i, m in enumerate(all_methods)}
    for ax, (split, per_method) in zip(axes[0], sorted(table.items()), strict=True):
        for method, per_budget in sorted(per_method.items()):
            xs = [budgets.index(b) for b in budgets if b in per_budget]
            ys = [float(np.mean(per_budget[b])) for b in budgets if b in per_budget]
            if max(ys) > top:
                off_scale.add(method)
            if method == "ECFP4 + RF":  # the classical baseline, drawn as one
                style = {"ls": "-.", "lw": 1.5, "color": "0.45", "marker": "s"}
            else:
                ls = "-" if method == "Full FT" else "--" if method in DERIVED_05 else ":"
                style = {"ls": ls, "lw": 2 if method == "Full FT" else 1, "color": colours[method], "marker": "o"}
            ax.plot(xs, ys, label=method, **style)
        ax.set_xticks(range(len(budgets)), [f"{b}" for b in budgets])
        ax.set_xlabel("training labels")
        ax.set_title(f"{split} split", fontsize=10)
        ax.set_ylim(top=top)
    axes[0][0].set_ylabel(f"test RMSE ({unit}), mean over seeds")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right", title="method")
    note = f" ({', '.join(sorted(off_scale))} above the axis)" if off_scale else ""
    fig.suptitle(title + note, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


LESSON_FIGURES = {
    "02_influence_lissa": ("test RMSE against k", _rmse_vs_k_figure),
    "03_data_selection": ("test RMSE per strategy", _learning_curve_figure),
    "04_peft": ("test RMSE against trainable parameters", _pareto_figure),
    "05_robust_finetuning": ("test RMSE against label budget", _rmse_vs_labels_figure),
}
