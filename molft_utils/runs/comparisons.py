"""Paired comparisons of a group of runs: what a lesson's findings cell and the report share.

Grouping of result records by notebook and configuration, per-method and paired tables, each model's
convergence (recorded, or derived from its history), and :func:`lesson_comparisons` with the verdicts of
:mod:`molft_utils.runs.verdicts`. The report's figures, questions and layout live in
:mod:`molft_utils.runs.report`, which a notebook does not import, so editing them leaves lesson runs current.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from molft_utils.core.records import config_hash
from molft_utils.runs import verdicts as vd
from molft_utils.training.metrics import format_mean_std

__all__ = [
    "DERIVED_05",
    "METRIC_NAMES",
    "METRIC_ORDER",
    "REFERENCES",
    "comparison_markdown",
    "comparison_table",
    "config_line",
    "dataset_line",
    "dataset_of",
    "error_unit",
    "group_config",
    "group_records",
    "lesson_comparisons",
    "markdown_table",
    "mean_std",
    "method_table",
    "model_convergence",
    "natural_key",
    "paired_table",
    "readable",
    "reference_for",
    "split_method",
]

METRIC_ORDER = ("rmse", "mae", "r2", "pearson", "spearman", "mse")
METRIC_NAMES = {"rmse": "RMSE", "mae": "MAE", "r2": "R²", "pearson": "Pearson", "spearman": "Spearman", "mse": "MSE"}
IGNORED_CONFIG = ("seed", "out_dir")


def group_config(record: dict) -> dict:
    """The configuration that groups a record with the other seeds of its batch.

    ``config`` without ``seed`` and ``out_dir``, and without a nested ``seed`` equal to the record's own: lesson 02
    records its retrain configuration (a dict with the training seed), which would otherwise put every seed of one
    batch in a group of its own.
    """
    config = record.get("config", {})
    seed = record.get("seed", config.get("seed"))

    def drop_seed(value: object) -> object:
        if isinstance(value, dict) and "seed" in value and value["seed"] == seed:
            return {k: v for k, v in value.items() if k != "seed"}
        return value

    return {k: drop_seed(v) for k, v in config.items() if k not in IGNORED_CONFIG}


def group_records(records: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    """Group records by (notebook, hash of the configuration without seed/out_dir)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["notebook"], config_hash(group_config(rec))), []).append(rec)
    return dict(sorted(groups.items()))


def split_method(name: str) -> dict[str, str]:
    if "|" not in name and "=" not in name:
        return {"method": name}
    out = {}
    for part in name.split("|"):
        key, _, value = part.partition("=")
        out[key.strip() if value else "method"] = value.strip() if value else key.strip()
    return out


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``labels=50`` before ``labels=100``)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return "–"
    if arr.size == 1:  # no spread to show from one seed
        return f"{arr[0]:.{digits}f} (n=1)"
    return format_mean_std(float(arr.mean()), float(arr.std(ddof=1)), int(arr.size), digits)


def method_table(records: Sequence[dict]) -> pd.DataFrame:
    """Per method: seeds and mean ± std of each metric (columns in :data:`METRIC_ORDER`)."""
    methods: dict[str, list[dict]] = {}
    for rec in records:
        for method, metrics in rec.get("metrics", {}).items():
            methods.setdefault(method, []).append(metrics)
    rows = []
    for method, runs in sorted(methods.items(), key=lambda kv: natural_key(kv[0])):
        row = split_method(method)
        row["seeds"] = len(runs)
        keys = [k for k in METRIC_ORDER if any(k in r for r in runs)]
        keys += sorted({k for r in runs for k in r} - set(keys))
        for key in keys:
            row[METRIC_NAMES.get(key, key)] = mean_std([r.get(key) for r in runs])
        rows.append(row)
    return pd.DataFrame(rows)


def reference_for(method: str, reference: str | dict) -> str | None:
    """The reference method name for ``method``: ``reference`` itself, or, when ``reference`` is a dict of
    ``key=value`` parts (e.g. ``{"method": "Full FT"}``), ``method`` with those parts substituted."""
    if isinstance(reference, str):
        return reference
    parts = split_method(method)
    if not set(reference) <= set(parts):
        return None
    parts |= {k: str(v) for k, v in reference.items()}
    return "|".join(f"{k}={v}" for k, v in parts.items())


def paired_table(records: Sequence[dict], reference: str | dict, metric: str = "rmse") -> pd.DataFrame:
    """Paired difference ``method − reference`` of ``metric`` over the seeds that have both.

    ``reference`` is a method name, or a dict of ``key=value`` parts that replace the method's own parts
    (``{"method": "Full FT"}`` compares ``method=L2-SP|labels=50`` with ``method=Full FT|labels=50``).
    """
    diffs: dict[str, list[float]] = {}
    for rec in records:
        metrics = rec.get("metrics", {})
        for method, m in metrics.items():
            ref_name = reference_for(method, reference)
            if ref_name is None or ref_name == method or ref_name not in metrics:
                continue
            ref = metrics[ref_name].get(metric)
            if m.get(metric) is not None and ref is not None:
                diffs.setdefault(method, []).append(m[metric] - ref)
    label = reference if isinstance(reference, str) else ", ".join(f"{k}={v}" for k, v in reference.items())
    rows = []
    for method, values in sorted(diffs.items(), key=lambda kv: natural_key(kv[0])):
        arr = np.asarray(values)
        better = (arr < 0).sum() if metric in vd.LOWER_IS_BETTER else (arr > 0).sum()
        rows.append(
            {
                **split_method(method),
                f"Δ{METRIC_NAMES.get(metric, metric)} vs {label}": mean_std(values),
                "seeds better": f"{int(better)}/{arr.size}",
            }
        )
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``df`` (no index); missing cells are shown as ``–``."""
    cols = [str(c).replace("|", "\\|") for c in df.columns]
    cells = [
        ["–" if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v) for v in row]
        for row in df.itertuples(index=False)
    ]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(out)


def config_line(config: dict) -> str:
    shown = {k: v for k, v in config.items() if not isinstance(v, dict | list)}
    return ", ".join(f"`{k}={v}`" for k, v in sorted(shown.items()))


def dataset_of(record: dict) -> dict:
    """The data-set record of a result (``extra.task.dataset``; older results: Lipophilicity, logD)."""
    task = record.get("extra", {}).get("task", {})
    found = task.get("dataset") if isinstance(task, dict) else None
    if found is None and isinstance(task, dict):  # notebook 05 records one task per split
        found = next((t["dataset"] for t in task.values() if isinstance(t, dict) and "dataset" in t), None)
    return found or {"display_name": "MoleculeNet Lipophilicity", "label_name": "logD", "label_unit": ""}


def error_unit(dataset: dict) -> str:
    """How an error in the label is labelled on an axis: ``logD`` or ``TPSA, Å²``."""
    name, unit = dataset.get("label_name", "label"), dataset.get("label_unit", "")
    return f"{name}, {unit}" if unit else name


def dataset_line(dataset: dict) -> str:
    label = dataset.get("label_name", "label") + (f" ({dataset['label_unit']})" if dataset.get("label_unit") else "")
    where = ""
    if "path" in dataset and "md5" in dataset:
        where = f" — `{Path(dataset['path']).name}`, md5 `{dataset['md5']}`"
    return f"Dataset: **{dataset.get('display_name', dataset.get('name', '?'))}**, label {label}{where}."


#: Per lesson: references besides ``extra["paired_reference"]`` (dicts of ``key=value`` parts, see
#: :func:`paired_table`). Each lesson's question is in :data:`molft_utils.runs.report.LESSONS`.
REFERENCES: dict[str, list[dict]] = {
    "02_influence_lissa": [{"selection": "random"}],
    # every strategy and budget against the start (no molecules added), same regime and learner
    "03_data_selection": [{"strategy": "none", "n": "0"}],
    # every method against the classical learner on the same labels and split
    "05_robust_finetuning": [{"method": "ECFP4 + RF"}],
}
#: Methods of notebook 05 built from Full FT models (they inherit Full FT's convergence).
DERIVED_05 = {"WiSE-FT", "Uniform soup", "Greedy soup", "RoFt-Mol"}


def readable(name: str) -> str:
    """A display label for a method key: ``selection=harmful|k=100`` → ``harmful, k = 100``;
    ``method=L2-SP|labels=50|split=random`` → ``L2-SP, 50 labels, random split``."""
    parts = split_method(name)
    out = []
    for key, value in parts.items():
        if key in ("method", "selection", "strategy"):
            out.append(value)
        elif key == "labels":
            out.append("all labels" if value == "all" else f"{value} labels")
        elif key == "split":
            out.append(f"{value} split")
        else:
            out.append(f"{key} = {value}")
    return ", ".join(out)


def _history_for(rec: dict, method: str) -> tuple[list[dict] | None, int | None, int | None, str]:
    """(history, patience, budget, key) recorded for ``method`` in a record written before convergence was
    recorded. ``budget`` is the most evaluations the run was allowed (``None`` when the record does not say).

    Notebook 05's all-label Full FT is lesson 01's cached model: its patience and budget are the lesson-01 recipe's,
    not notebook 05's step-based settings.
    """
    from molft_utils.runs.finetune import RECIPE

    extra, cfg = rec.get("extra", {}), rec.get("config", {})
    patience = cfg.get("patience")
    if "steps" in cfg and cfg.get("eval_every"):
        budget = int(cfg["steps"]) // int(cfg["eval_every"])
    else:
        budget = cfg.get("epochs")
    hist = extra.get("histories", {})
    if method in hist and isinstance(hist[method], list):
        return hist[method], patience, budget, "valid_rmse"
    final = extra.get("final", {})
    if isinstance(final.get(method), dict) and "history" in final[method]:
        return final[method]["history"], patience, budget, "valid_rmse"
    parts = split_method(method)
    if {"method", "labels", "split"} <= set(parts):
        setting = f"labels={parts['labels']}|split={parts['split']}"
        per = hist.get(setting, {})
        if parts["labels"] == "all" and parts["method"] == "Full FT":
            patience, budget = RECIPE["patience"], RECIPE["epochs"]
        if isinstance(per, dict) and parts["method"] in per:
            return per[parts["method"]], patience, budget, "valid_rmse"
    return None, patience, budget, "valid_rmse"


def model_convergence(rec: dict, method: str) -> dict | None:
    """Convergence of ``method``'s model in one record: recorded, derived from its history, or ``None``.

    Non-neural baselines (``ECFP4 + RF``) are ``{"iterative": False}``. In notebook 05, WiSE-FT, the soups and
    RoFt-Mol are built from Full FT models and are converged only when those are (RoFt-Mol also needs its α
    fit to have stopped on its selection half).
    """
    recorded = rec.get("extra", {}).get("convergence", {}).get(method)
    if isinstance(recorded, dict) and "converged" in recorded:
        return recorded
    if method.startswith("ECFP4"):
        return {"iterative": False, "converged": True, "reason": "not iteratively trained"}
    parts = split_method(method)
    if parts.get("method") in DERIVED_05 and "labels" in parts:
        full = method.replace(f"method={parts['method']}", "method=Full FT")
        components: dict[str, dict | None] = {"Full FT": model_convergence(rec, full)}
        setting = f"labels={parts['labels']}|split={parts['split']}"
        if parts["method"] in ("Uniform soup", "Greedy soup"):
            per = rec.get("extra", {}).get("histories", {}).get(setting, {})
            for member in per:
                if member.startswith("Full FT ("):
                    components[member] = vd.convergence(per[member], rec.get("config", {}).get("patience"))
        if parts["method"] == "RoFt-Mol":
            roft = rec.get("extra", {}).get("roft_mol", {}).get(setting, {})
            # run_setting fits α with patience 3 on its selection half
            components["α fit"] = (
                vd.convergence(roft["history"], patience=3, key="select_rmse") if roft.get("history") else None
            )
        return vd.combine_convergence(components, f"built from Full FT ({parts['method']})")
    history, patience, budget, key = _history_for(rec, method)
    if not history:
        return None
    out = vd.convergence(history, patience=patience, key=key, budget=budget)
    out["derived"] = "from the recorded per-epoch history"
    return out


def _state(convs: Sequence[dict | None]) -> str:
    """One model's state over seeds: the worst of them, with the first reason."""
    labels = [vd.convergence_label(c) for c in convs]
    for bad in ("unconverged", "not recorded"):
        if bad in labels:
            c = convs[labels.index(bad)]
            why = (c or {}).get("reason", "")
            n_bad = labels.count(bad)
            return f"{bad} ({n_bad}/{len(labels)} seeds{': ' + why if why else ''})"
    return labels[0] if labels else "not recorded"


def lesson_comparisons(records: Sequence[dict], metric: str = "rmse") -> list[vd.Comparison]:
    """Every paired comparison of a group of records (one notebook, one configuration, several seeds).

    References: ``extra["paired_reference"]`` and the lesson's extra references in :data:`REFERENCES`.
    """
    if not records:
        return []
    refs = [records[0].get("extra", {}).get("paired_reference")] + list(REFERENCES.get(records[0]["notebook"], []))
    out = []
    for ref in [r for r in refs if r]:
        values: dict[tuple[str, str], dict[int, float]] = {}
        ref_values: dict[tuple[str, str], dict[int, float]] = {}
        convs: dict[str, list[dict | None]] = {}
        for rec in records:
            metrics = rec.get("metrics", {})
            for method, m in metrics.items():
                ref_name = reference_for(method, ref)
                if ref_name is None or ref_name == method or ref_name not in metrics:
                    continue
                if m.get(metric) is None or metrics[ref_name].get(metric) is None:
                    continue
                values.setdefault((method, ref_name), {})[rec["seed"]] = m[metric]
                ref_values.setdefault((method, ref_name), {})[rec["seed"]] = metrics[ref_name][metric]
                for name in (method, ref_name):
                    convs.setdefault(f"{rec['seed']}|{name}", [model_convergence(rec, name)])
        for (method, ref_name), vals in sorted(values.items(), key=lambda kv: natural_key(kv[0][0])):
            states = {}
            for name in (method, ref_name):
                per_seed = [convs[f"{s}|{name}"][0] for s in vals]
                states[readable(name)] = _state(per_seed)
            out.append(vd.compare(method, ref_name, vals, ref_values[(method, ref_name)], metric, states))
    return out


def comparison_table(comps: Sequence[vd.Comparison]) -> pd.DataFrame:
    """One row per comparison: method, reference, mean Δ, 95 % CI, seeds better, verdict, convergence."""
    rows = [{"method": readable(c.method), "vs": readable(c.reference), **c.as_row()} for c in comps]
    return pd.DataFrame(rows)


def comparison_markdown(comps: Sequence[vd.Comparison]) -> str:
    """:func:`comparison_table` as markdown, with a line on the metric and direction."""
    if not comps:
        return ""
    metric = METRIC_NAMES.get(comps[0].metric, comps[0].metric)
    direction = "negative = lower, i.e. better" if comps[0].metric in vd.LOWER_IS_BETTER else "positive = better"
    return (
        f"Δ{metric} = method − reference, same seed ({direction}); 95 % CI by Student t over seeds.\n\n"
        + markdown_table(comparison_table(comps))
    )


