"""Aggregate every run's ``result.json`` into ``summary.md`` and figures.

::

    python -m molft_utils.runs.report reports        # writes reports/summary.md and reports/figures/

No number in the summary is typed by hand: every value is read from a result record written by a
notebook run. Runs are grouped by notebook and configuration (everything in the record's ``config``
except ``seed`` and ``out_dir``); within a group each method's metrics are shown as mean ± sample
standard deviation over seeds, with the seed count.

Conventions a notebook can use in its record (see :func:`molft_utils.core.records.write_result`):

* ``metrics``: ``{method: {metric: value}}`` on the test set. A method name made of
  ``"|"``-separated ``key=value`` parts (``"method=L2-SP|labels=50|split=random"``) is split into
  columns.
* ``extra["paired_reference"]``: a method name (or a dict of ``key=value`` parts); the report adds the paired
  difference of every other method's RMSE against it (same seed): mean Δ, 95 % t interval over seeds, seeds
  better and a verdict from :mod:`molft_utils.runs.verdicts`.
* ``extra["convergence"]``: ``{method: {...}}`` as returned by :func:`molft_utils.runs.verdicts.convergence`
  (``converged``, ``best_epoch``, ``epochs_run``, ``patience``, ...). Records written before convergence was
  recorded are judged from their per-epoch ``histories`` (the report says so); without either the model's
  convergence is "not recorded" and its comparisons are not decided.
* ``extra["diagnostics"]``: ``{name: number}``, aggregated into a second table (e.g. solver errors,
  throughput, seconds).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from molft_utils.core.records import load_results
from molft_utils.runs import verdicts as vd
from molft_utils.runs.comparisons import (
    METRIC_NAMES,
    comparison_markdown,
    comparison_table,
    config_line,
    dataset_line,
    dataset_of,
    error_unit,
    group_config,
    group_records,
    lesson_comparisons,
    markdown_table,
    mean_std,
    method_table,
    model_convergence,
    paired_table,
    readable,
)
from molft_utils.runs.identity import recorded_state
from molft_utils.runs.report_figures import LESSON_FIGURES, bars_figure, forest_figure, versus

__all__ = [
    "LESSONS",
    "build_report",
    "comparison_markdown",
    "comparison_table",
    "diagnostics_table",
    "format_quantity",
    "group_records",
    "lesson_comparisons",
    "markdown_table",
    "method_table",
    "model_convergence",
    "paired_table",
    "readable",
]

log = logging.getLogger(__name__)


def format_quantity(values: Sequence[float], significant: int = 4) -> str:
    """Mean ± sample std of one diagnostic with as many digits as its size needs.

    Diagnostics range from solver residuals (1e-7) through learning rates (3e-5) to parameter counts
    (3,437,313), so a fixed number of decimals prints ``0.0000`` for the first two and ``3437313.0000`` for
    the last. Here a value that all seeds share is shown as it is (a whole number with thousands separators,
    others with up to ``significant`` digits); values that differ show ``significant`` digits of the larger of
    |mean| and std, in scientific notation below 1e-3 or from 1e6 on.

    Parameters
    ----------
    values
        One value per seed; non-finite values are ignored.
    significant
        Significant digits of the larger of |mean| and std.

    Returns
    -------
    str
        ``"0.2795 ± 0.0544 (n=2)"``, ``"1,000 ± 0 (n=3)"``, ``"3e-05 (n=1)"`` or ``"–"`` without values.
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return "–"
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    size = max(abs(mean), std or 0.0)
    if np.all(arr == arr[0]):  # one value on every seed: a count, a flag, a chosen rate

        def fmt(x: float) -> str:
            return f"{x:,.0f}" if x == round(x) and abs(x) < 1e9 else f"{x:.{significant}g}"

    elif size != 0 and (size < 1e-3 or size >= 1e6):

        def fmt(x: float) -> str:
            return f"{x:.{significant - 2}e}"
    else:
        decimals = max(0, significant - 1 - math.floor(math.log10(size))) if size else significant

        def fmt(x: float) -> str:
            return f"{x:,.{decimals}f}"

    spread = f" ± {fmt(std)}" if std is not None else ""
    return f"{fmt(mean)}{spread} (n={arr.size})"


def diagnostics_table(records: Sequence[dict]) -> pd.DataFrame:
    """Mean ± std of every ``extra["diagnostics"]`` number over ``records``, formatted by :func:`format_quantity`."""
    values: dict[str, list[float]] = {}
    for rec in records:
        for name, v in rec.get("extra", {}).get("diagnostics", {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                values.setdefault(name, []).append(float(v))
    return pd.DataFrame([{"quantity": k, "mean ± std (n)": format_quantity(v)} for k, v in values.items()])


#: Per lesson: the question its comparisons answer (one line, shown in *Findings*). The comparisons themselves
#: (references included) are :mod:`molft_utils.runs.comparisons`'s, shared with the notebooks' findings cells.
LESSONS: dict[str, dict] = {
    "01_finetune_and_mlm": {
        "question": "Does pretraining (MLM + descriptor regression vs MLM only), and domain adaptation on top of it "
        "(MLM or descriptor regression), make the small chemical LM predict {label} better, how much do its frozen "
        "features hold (linear probe), and does it beat random forests on ECFP4 and on RDKit descriptors?",
    },
    "02_influence_lissa": {
        "question": "Does adding the k pool molecules that influence functions rank most helpful (harmful) lower "
        "(raise) test RMSE, against adding none and against adding k random ones?",
    },
    "03_data_selection": {
        "question": "Does a selection strategy pick molecules that lower test RMSE more than random picks of the "
        "same budget — added to the full training split (regime A), or labelled on top of a small start (regime B, "
        "several budgets) — for the fine-tuned model and for a random forest trained on the same picks?",
    },
    "04_peft": {
        "question": "With each method trained to convergence at a learning rate chosen on validation, how close do "
        "parameter-efficient methods come to full fine-tuning — at convergence, at equal steps and at equal "
        "training time — and how do LoRA's rank and placement change that?",
    },
    "05_robust_finetuning": {
        "question": "With few labels (and with all of them), do robust fine-tuning methods beat plain full "
        "fine-tuning and a random forest on ECFP4, on random and scaffold splits?",
    },
}


def run_states(records: Sequence[dict], notebooks: Path) -> dict[str, str]:
    """``result path -> state`` (:func:`~molft_utils.runs.identity.recorded_state`: current, stale (why), ...)."""
    return {r["path"]: recorded_state(Path(r["path"]).parent, notebooks) for r in records}


def state_note(recs: Sequence[dict], states: Mapping[str, str]) -> str:
    """``""`` when every run of a group is current; else how many are stale or unrecorded, and why."""
    tally = pd.Series([states.get(r["path"], "not recorded") for r in recs]).value_counts()
    off = {state: int(n) for state, n in tally.items() if state != "current"}
    if not off:
        return ""
    parts = ", ".join(f"{n} {state}" for state, n in off.items())
    return (f"**{sum(off.values())} of {len(recs)} runs not current** ({parts}): their numbers may describe an "
            "older notebook or package code; rerun them before reading them as this version's")


def _findings_line(
    notebook: str, comps: Sequence[vd.Comparison], n_seeds: int, label: str = "the label", note: str = ""
) -> str:
    question = LESSONS.get(notebook, {}).get("question", "").format(label=label)
    head = f"- **{notebook}** ({n_seeds} seed{'s' if n_seeds != 1 else ''}{'; ' + note if note else ''}). {question} "
    if not comps:
        return head + "No paired comparison recorded."

    def counts(words: Sequence[str]) -> str:
        tally = pd.Series(list(words)).value_counts()
        return ", ".join(f"*{word}* ×{int(n)}" for word, n in tally.items())

    alone = "interval alone: " + counts([c.interval_verdict for c in comps])
    if len(comps) <= 10:
        items = "; ".join(
            f"{readable(c.method)} vs {readable(c.reference)}: *{c.verdict}*"
            + (f" (interval alone: {c.interval_verdict})" if c.interval_verdict != c.verdict else "")
            for c in comps
        )
        return head + "Verdicts: " + items + "."
    decided = [c for c in comps if c.verdict in (vd.BETTER, vd.WORSE)]
    # many comparisons: name each decided one by its method and what differs in its reference ("vs random")
    extra = "; ".join(f"{readable(c.method)} vs {versus(c.method, c.reference)}: *{c.verdict}*" for c in decided)
    return (
        head
        + f"{len(comps)} comparisons — verdicts: {counts([c.verdict for c in comps])} ({alone})"
        + (f". Decided: {extra}." if extra else ".")
    )


def _our_size(by_lesson: Mapping[str, Sequence[dict]]) -> str:
    for rec in by_lesson.get("04_peft", []):
        n = rec.get("extra", {}).get("diagnostics", {}).get("full: trainable parameters")
        if n:
            return f" ({int(n):,} trainable parameters with its head, from lesson 04's record)"
    return ""


def reference_table(records_by_lesson: Mapping[str, Sequence[dict]], data_dir: Path) -> str:
    """The student report's published numbers beside ours (markdown; empty without the data file)."""
    path = data_dir / "reference_student_report.csv"
    if not path.is_file():
        return ""
    ref = pd.read_csv(path, comment="#", dtype={"value": str})
    rows = []
    for r in ref.itertuples(index=False):
        recs = records_by_lesson.get(r.lesson, [])
        ours = [rec["metrics"][r.our_method][r.metric] for rec in recs
                if r.our_method in rec.get("metrics", {}) and r.metric in rec["metrics"][r.our_method]]  # fmt: skip
        rows.append(
            {
                "lesson": r.lesson,
                "method (report)": r.method,
                "our method": readable(r.our_method),
                "metric": METRIC_NAMES.get(r.metric, r.metric),
                "published (MoLFormer-XL)": r.value,
                "ours (molft-roformer-small)": mean_std(ours),
            }
        )
    return markdown_table(pd.DataFrame(rows))


def _remove_unlinked_figures(fig_dir: Path, linked: set[Path]) -> None:
    """Delete the lesson figures (``NN_<notebook>_<config hash>_*.png``) of ``fig_dir`` that the summary just
    written does not link: figures of configurations whose results are gone would otherwise pile up beside it."""
    for path in sorted(fig_dir.glob("[0-9][0-9]_*.png")) if fig_dir.is_dir() else []:
        if path not in linked:
            path.unlink()
            log.info("removed %s (no longer in the summary)", path)


def build_report(
    root: str | Path,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    notebooks: str | Path | None = None,
) -> Path:
    """Write ``summary.md`` (and ``figures/``) for every result below ``root``.

    Parameters
    ----------
    root
        Directory searched recursively for ``result.json``.
    out
        Output markdown file; default ``root/summary.md``.
    data_dir
        Folder with ``reference_student_report.csv`` (default: ``data/`` beside ``root``).
    notebooks
        Folder of the source notebooks the runs are checked against (default: ``notebooks/`` beside ``root``):
        a run made by an older notebook or older package code is marked as not current.

    Returns
    -------
    Path
        The written summary.
    """
    root = Path(root)
    out = Path(out) if out else root / "summary.md"
    data_dir = Path(data_dir) if data_dir else root.resolve().parent / "data"
    notebooks = Path(notebooks) if notebooks else root.resolve().parent / "notebooks"
    records = [r for r in load_results(root) if "notebook" in r and "metrics" in r]
    states = run_states(records, notebooks)
    commits = sorted({str(r.get("environment", {}).get("git_commit") or "unknown")[:10] for r in records})
    fig_dir = out.parent / "figures"
    figures: set[Path] = set()  # every figure this summary links; older ones in fig_dir are removed at the end
    groups = group_records(records)
    comps_by_group = {key: lesson_comparisons(recs) for key, recs in groups.items()}
    derived = any(
        isinstance(c, dict) and c.get("derived")
        for recs in groups.values()
        for rec in recs
        for m in rec.get("metrics", {})
        for c in [model_convergence(rec, m)]
    )
    lines = [
        "# molft report",
        "",
        f"Generated by `python -m molft_utils.runs.report {root.name}` on "
        f"{_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from {len(records)} result file(s) "
        f"(code at git commit(s) {', '.join(commits) or '–'}). Every number below is read from a `result.json` "
        "written by an executed notebook; nothing is typed by hand. Values are mean ± sample std over seeds, "
        "with the number of seeds in parentheses; test-set metrics unless stated otherwise.",
        "",
        "## Findings",
        "",
        "Each lesson's question and the verdicts of its paired comparisons (method − reference on the same seed "
        "and split; test RMSE). A verdict is *better* / *worse* when the whole 95 % confidence interval of the "
        "mean paired difference (Student t over seeds) lies below / above zero, *not distinguishable* when it "
        "contains zero, *not decided (unconverged)* when a model in the comparison did not converge or its "
        "convergence is not recorded, and *not decided (n=1)* with a single seed. A run counts as converged "
        "when validation stopped improving for `patience` evaluations at its end (early stopping), or when its "
        f"best validation RMSE of the last {vd.CONVERGENCE_WINDOW} evaluations improved on the best before them "
        f"by less than {vd.CONVERGENCE_THRESHOLD:.0%}; a shorter run that did not stop early is not converged. "
        "A lesson whose runs were made by an older version of its notebook or of the package code it runs is "
        "marked *not current* (`python -m molft_utils.runs.batch --status` lists every run).",
        "",
    ]
    if derived:
        lines += [
            "*Convergence:* some result files predate convergence records; for those, convergence is derived "
            "from the per-epoch validation histories recorded in `result.json` (the rule above, with the "
            "configured patience); a model without a recorded history is marked *convergence not recorded*.",
            "",
        ]
    for (notebook, _), recs in groups.items():
        n_seeds = len({r["seed"] for r in recs})
        label = dataset_of(recs[0]).get("label_name", "the label")
        note = state_note(recs, states)
        lines.append(_findings_line(notebook, comps_by_group[(notebook, _)], n_seeds, label, note))
    lines.append("")
    # the published numbers are on Lipophilicity: compare only results on it
    by_lesson = {
        nb: recs
        for (nb, _), recs in groups.items()
        if dataset_of(recs[0]).get("name", "lipophilicity") == "lipophilicity"
    }
    ref_md = reference_table(by_lesson, data_dir)
    if ref_md:
        lines += [
            "### Beside the student report this series reproduces",
            "",
            "Published numbers (`data/reference_student_report.csv`, provenance in `data/README.md`) were "
            "measured with **MoLFormer-XL**, a 12-layer, 768-wide encoder pretrained on far more molecules; ours "
            f"with the embedded **molft-roformer-small**{_our_size(by_lesson)}, with the budgets stated per lesson "
            "below, and over seeds where the report has one run. The columns compare protocols, not backbones "
            "of equal size: agreement or disagreement here is not a verdict on either.",
            "",
            ref_md,
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
    for (notebook, ghash), recs in groups.items():
        seeds = sorted({r["seed"] for r in recs})
        title = f"{notebook} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})"
        dataset = dataset_of(recs[0])
        lines += [f"## {notebook} · {dataset.get('display_name', dataset.get('name', '?'))}", ""]
        lines += [dataset_line(dataset), ""]
        lines += [f"Configuration: {config_line(group_config(recs[0]))}", f"Seeds: {seeds}.", ""]
        note = state_note(recs, states)
        if note:
            lines += [note + ".", ""]
        comps = comps_by_group[(notebook, ghash)]
        if comps:
            lines += ["Paired comparisons:", "", comparison_markdown(comps), ""]
            fpath = fig_dir / f"{notebook}_{ghash}_forest.png"
            if forest_figure(comps, fpath, f"{title}: paired differences"):
                figures.add(fpath)
                lines += [f"![{notebook} paired differences]({fpath.relative_to(out.parent)})", ""]
        table = method_table(recs)
        lines += ["Per method:", "", markdown_table(table), ""]
        kind, fig_fn = LESSON_FIGURES.get(notebook, ("test RMSE per method", bars_figure))
        fpath = fig_dir / f"{notebook}_{ghash}_rmse.png"
        drawn = fig_fn(recs, fpath, f"{title}: {kind}", unit=error_unit(dataset))
        # a figure function returns whether it drew ``fpath``, or the list of figures it drew
        for drawn_path in drawn if isinstance(drawn, list) else [fpath] if drawn else []:
            figures.add(drawn_path)
            lines += [f"![{notebook} {kind}]({drawn_path.relative_to(out.parent)})", ""]
        diag = diagnostics_table(recs)
        if not diag.empty:
            lines += ["Diagnostics:", "", markdown_table(diag), ""]
        runs = ", ".join(
            f"[seed={r['seed']}]({Path(r['path']).parent.relative_to(out.parent)}/)"
            for r in sorted(recs, key=lambda r: r["seed"])
        )
        lines += [f"Executed notebooks: {runs}", ""]
    out.write_text("\n".join(lines))
    log.info("wrote %s (%d records)", out, len(records))
    _remove_unlinked_figures(fig_dir, figures)
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
