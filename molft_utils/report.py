"""Aggregate every run's ``result.json`` into ``summary.md`` and figures.

::

    python -m molft_utils.report reports        # writes reports/summary.md and reports/figures/

No number in the summary is typed by hand: every value is read from a result record written by a
notebook run. Runs are grouped by notebook and configuration (everything in the record's ``config``
except ``seed`` and ``out_dir``); within a group each method's metrics are shown as mean ± sample
standard deviation over seeds, with the seed count.

Conventions a notebook can use in its record (see :func:`molft_utils.runs.write_result`):

* ``metrics``: ``{method: {metric: value}}`` on the test set. A method name made of
  ``"|"``-separated ``key=value`` parts (``"method=L2-SP|labels=50|split=random"``) is split into
  columns.
* ``extra["paired_reference"]``: a method name; the report adds the paired difference of every other
  method's RMSE against it (same seed), mean ± std.
* ``extra["diagnostics"]``: ``{name: number}``, aggregated into a second table (e.g. solver errors,
  throughput, seconds).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import format_mean_std
from .runs import config_hash, load_results

__all__ = ["build_report", "diagnostics_table", "group_records", "markdown_table", "method_table", "paired_table"]

log = logging.getLogger(__name__)

METRIC_ORDER = ("rmse", "mae", "r2", "pearson", "spearman", "mse")
METRIC_NAMES = {"rmse": "RMSE", "mae": "MAE", "r2": "R²", "pearson": "Pearson", "spearman": "Spearman", "mse": "MSE"}
IGNORED_CONFIG = ("seed", "out_dir")


def _group_config(record: dict) -> dict:
    return {k: v for k, v in record.get("config", {}).items() if k not in IGNORED_CONFIG}


def group_records(records: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    """Group records by (notebook, hash of the configuration without seed/out_dir)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["notebook"], config_hash(_group_config(rec))), []).append(rec)
    return dict(sorted(groups.items()))


def _split_method(name: str) -> dict[str, str]:
    if "|" not in name and "=" not in name:
        return {"method": name}
    out = {}
    for part in name.split("|"):
        key, _, value = part.partition("=")
        out[key.strip() if value else "method"] = value.strip() if value else key.strip()
    return out


def _natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``labels=50`` before ``labels=100``)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _mean_std(values: Sequence[float], digits: int = 3) -> str:
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
    for method, runs in sorted(methods.items(), key=lambda kv: _natural_key(kv[0])):
        row = _split_method(method)
        row["seeds"] = len(runs)
        keys = [k for k in METRIC_ORDER if any(k in r for r in runs)]
        keys += sorted({k for r in runs for k in r} - set(keys))
        for key in keys:
            row[METRIC_NAMES.get(key, key)] = _mean_std([r.get(key) for r in runs])
        rows.append(row)
    return pd.DataFrame(rows)


def _reference_for(method: str, reference: str | dict) -> str | None:
    """The reference method name for ``method``: ``reference`` itself, or, when ``reference`` is a dict of
    ``key=value`` parts (e.g. ``{"method": "Full FT"}``), ``method`` with those parts substituted."""
    if isinstance(reference, str):
        return reference
    parts = _split_method(method)
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
            ref_name = _reference_for(method, reference)
            if ref_name is None or ref_name == method or ref_name not in metrics:
                continue
            ref = metrics[ref_name].get(metric)
            if m.get(metric) is not None and ref is not None:
                diffs.setdefault(method, []).append(m[metric] - ref)
    label = reference if isinstance(reference, str) else ", ".join(f"{k}={v}" for k, v in reference.items())
    rows = []
    for method, values in sorted(diffs.items(), key=lambda kv: _natural_key(kv[0])):
        arr = np.asarray(values)
        better = (arr < 0).sum() if metric in ("rmse", "mae", "mse") else (arr > 0).sum()
        rows.append(
            {
                **_split_method(method),
                f"Δ{METRIC_NAMES.get(metric, metric)} vs {label}": _mean_std(values),
                "seeds better": f"{int(better)}/{arr.size}",
            }
        )
    return pd.DataFrame(rows)


def diagnostics_table(records: Sequence[dict]) -> pd.DataFrame:
    """Mean ± std of every ``extra["diagnostics"]`` number."""
    values: dict[str, list[float]] = {}
    for rec in records:
        for name, v in rec.get("extra", {}).get("diagnostics", {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                values.setdefault(name, []).append(float(v))
    return pd.DataFrame([{"quantity": k, "mean ± std (n)": _mean_std(v, 4)} for k, v in values.items()])


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


def _config_line(config: dict) -> str:
    shown = {k: v for k, v in config.items() if not isinstance(v, dict | list)}
    return ", ".join(f"`{k}={v}`" for k, v in sorted(shown.items()))


def _dataset_of(record: dict) -> dict:
    """The data-set record of a result (``extra.task.dataset``; older results: Lipophilicity, logD)."""
    task = record.get("extra", {}).get("task", {})
    found = task.get("dataset") if isinstance(task, dict) else None
    if found is None and isinstance(task, dict):  # notebook 05 records one task per split
        found = next((t["dataset"] for t in task.values() if isinstance(t, dict) and "dataset" in t), None)
    return found or {"display_name": "MoleculeNet Lipophilicity", "label_name": "logD", "label_unit": ""}


def _error_unit(dataset: dict) -> str:
    name, unit = dataset.get("label_name", "label"), dataset.get("label_unit", "")
    return f"{name}, {unit}" if unit else f"{name} units"


def _dataset_line(dataset: dict) -> str:
    label = dataset.get("label_name", "label") + (f" ({dataset['label_unit']})" if dataset.get("label_unit") else "")
    where = ""
    if "path" in dataset and "md5" in dataset:
        where = f" — `{Path(dataset['path']).name}`, md5 `{dataset['md5']}`"
    return f"Dataset: **{dataset.get('display_name', dataset.get('name', '?'))}**, label {label}{where}."


def _rmse_figure(
    table: pd.DataFrame, records: Sequence[dict], path: Path, title: str, unit: str = "logD units"
) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods: dict[str, list[float]] = {}
    for rec in records:
        for method, metrics in rec.get("metrics", {}).items():
            if metrics.get("rmse") is not None:
                methods.setdefault(method, []).append(metrics["rmse"])
    if not methods or len(methods) > 40:
        return False
    names = list(methods)
    means = [np.mean(methods[m]) for m in names]
    stds = [np.std(methods[m], ddof=1) if len(methods[m]) > 1 else 0.0 for m in names]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.barh(y, means, xerr=stds, color="#4c72b0", alpha=0.85, capsize=3)
    for i, m in enumerate(names):
        ax.scatter(methods[m], np.full(len(methods[m]), i), color="k", s=10, zorder=3)
    ax.set_yticks(y, [n.replace("|", " | ") for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(f"test RMSE ({unit}); bars: mean ± std over seeds, dots: seeds")
    ax.set_title(title, fontsize=10)
    lo = min(min(v) for v in methods.values())
    ax.set_xlim(left=max(0.0, lo - 0.15))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write ``summary.md`` (and ``figures/``) for every result below ``root``.

    Parameters
    ----------
    root
        Directory searched recursively for ``result.json``.
    out
        Output markdown file; default ``root/summary.md``.

    Returns
    -------
    Path
        The written summary.
    """
    root = Path(root)
    out = Path(out) if out else root / "summary.md"
    records = [r for r in load_results(root) if "notebook" in r and "metrics" in r]
    commits = sorted({str(r.get("environment", {}).get("git_commit") or "unknown")[:10] for r in records})
    lines = [
        "# molft report",
        "",
        f"Generated by `python -m molft_utils.report {root.name}` on "
        f"{_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from {len(records)} result file(s) "
        f"(code at git commit(s) {', '.join(commits) or '–'}). Every number below is read from a `result.json` "
        "written by an executed notebook; nothing is typed by hand. Values are mean ± sample std over seeds, "
        "with the number of seeds in parentheses; test-set metrics unless stated otherwise.",
        "",
    ]
    batch_log = root / "batch_log.json"
    if batch_log.is_file():
        import json

        blog = json.loads(batch_log.read_text())
        counts = pd.Series([r["status"] for r in blog["runs"]]).value_counts().to_dict()
        lines += [
            f"Last batch: {len(blog['runs'])} run(s) {counts}, wall time {blog['wall_seconds'] / 60:.1f} min "
            "(skipped runs were reused from earlier batches).",
            "",
        ]
    fig_dir = out.parent / "figures"
    for (notebook, ghash), recs in group_records(records).items():
        seeds = sorted({r["seed"] for r in recs})
        dataset = _dataset_of(recs[0])
        lines += [f"## {notebook} · {dataset.get('display_name', dataset.get('name', '?'))}", ""]
        lines += [_dataset_line(dataset), ""]
        lines += [f"Configuration: {_config_line(_group_config(recs[0]))}", f"Seeds: {seeds}.", ""]
        table = method_table(recs)
        lines += [markdown_table(table), ""]
        ref = recs[0].get("extra", {}).get("paired_reference")
        if ref:
            pt = paired_table(recs, ref)
            if not pt.empty:
                shown = ref if isinstance(ref, str) else ", ".join(f"{k}={v}" for k, v in ref.items())
                lines += [f"Paired differences against `{shown}` (same seed; negative = lower RMSE):", ""]
                lines += [markdown_table(pt), ""]
        diag = diagnostics_table(recs)
        if not diag.empty:
            lines += ["Diagnostics:", "", markdown_table(diag), ""]
        fig_path = fig_dir / f"{notebook}_{ghash}_rmse.png"
        title = f"{notebook}, {dataset.get('display_name', '?')} ({len(seeds)} seed(s))"
        if _rmse_figure(table, recs, fig_path, title, _error_unit(dataset)):
            lines += [f"![{notebook} test RMSE]({fig_path.relative_to(out.parent)})", ""]
        runs = ", ".join(
            f"[seed={r['seed']}]({Path(r['path']).parent.relative_to(out.parent)}/)"
            for r in sorted(recs, key=lambda r: r["seed"])
        )
        lines += [f"Executed notebooks: {runs}", ""]
    out.write_text("\n".join(lines))
    log.info("wrote %s (%d records)", out, len(records))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, nargs="?", default=Path("reports"))
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_report(a.root, a.out)


if __name__ == "__main__":
    main()
