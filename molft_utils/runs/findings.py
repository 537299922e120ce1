"""The findings cell of each lesson: this run's comparisons and, where ``reports/`` has them, the verdicts across seeds.

Built from :mod:`molft_utils.runs.comparisons` (grouping, comparison tables) and :mod:`molft_utils.runs.verdicts`
(theory checks); it lives apart from both so that neither imports the other's caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from molft_utils.core.records import load_results
from molft_utils.core.settings import REPO_ROOT
from molft_utils.runs import comparisons
from molft_utils.runs.verdicts import theory_checks

__all__ = ["findings_for"]


def _same_config(a: Mapping, b: Mapping) -> bool:
    """Whether two run configurations agree on every key both record (older records lack newer keys)."""
    return all(a[k] == b[k] for k in set(a) & set(b))


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
        This run's result record (a dict as written by :func:`molft_utils.core.records.write_result`, or the path of
        its ``result.json``); ``None`` skips the single-run part.
    reports_dir
        Directory of the batch results (default: the repository's ``reports/``); when it holds results for
        ``lesson``, the verdicts across seeds are added.

    Returns
    -------
    str
        Markdown text (also shown with ``IPython.display`` when available).
    """
    parts: list[str] = []
    rec_config: dict | None = None
    if result is not None:
        rec = json.loads(Path(result).read_text()) if isinstance(result, str | Path) else dict(result)
        rec_config = comparisons.group_config(rec)
        rec.setdefault("seed", rec.get("config", {}).get("seed", 0))
        rec.setdefault("notebook", lesson)
        comps = comparisons.lesson_comparisons([rec])
        parts.append(f"**This run** (seed {rec['seed']}; one seed, so no interval):")
        parts.append(comparisons.comparison_markdown(comps) if comps else "no paired comparison recorded.")
        checks = theory_checks(lesson, [rec])
        if checks:
            parts += ["", "Theory against this run:", *checks]
    if reports_dir is None:
        reports_dir = REPO_ROOT / "reports"
    reports_dir = Path(reports_dir)
    lesson_dir = _lesson_dir(reports_dir, lesson) if reports_dir.is_dir() else None
    if lesson_dir is not None:
        recs = [r for r in load_results(lesson_dir) if "metrics" in r and "notebook" in r]
        groups = comparisons.group_records(recs)
        if groups and rec_config is not None:
            # only batch results made with this run's configuration (keys both record; seed and out_dir aside)
            groups = {k: g for k, g in groups.items() if _same_config(comparisons.group_config(g[0]), rec_config)}
            if not groups:
                parts.append(f"\nNo batch results under `{lesson_dir}` were made with this run's configuration.")
        if groups:
            # the largest group (most seeds) is the batch configuration
            recs = max(groups.values(), key=len)
            comps = comparisons.lesson_comparisons(recs)
            seeds = sorted({r["seed"] for r in recs})
            parts.append(f"\n**Across seeds** ({len(seeds)} seeds {seeds}, results in `{lesson_dir}`):")
            parts.append(comparisons.comparison_markdown(comps) if comps else "no paired comparison recorded.")
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
