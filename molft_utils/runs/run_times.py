"""Measured run times: one table from every ``batch.json`` the batch runner wrote (full and quick profiles).

::

    python -m molft_utils.runs.run_times reports reports-quick                    # print the table
    python -m molft_utils.runs.run_times reports reports-quick --readme README.md  # write it into the README

Each row is one executed run: notebook, profile, seed, whether its result is current
(:func:`molft_utils.runs.identity.recorded_state`), its wall time as the batch runner measured it, the machine it
ran on (CPU capability, native bf16, torch threads; recorded since session 12, "not recorded" before; the 1-minute
load average at its start and end since session 13: above the core count, the run shared the cores) and how
many of its fine-tunes came from the run cache (lesson 01 records ``extra.cache_hits``): a run that read its
models from the cache is not the time of a run from an empty cache. Smoke runs are left out. Nothing in the table
is typed by hand; the README holds it between ``<!-- run-times:start -->`` and ``<!-- run-times:end -->``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from molft_utils.core.records import REPO_ROOT
from molft_utils.runs.identity import BATCH_FILE, recorded_state

__all__ = ["collect", "main", "table", "write_readme"]

log = logging.getLogger(__name__)

START = "<!-- run-times:start (python -m molft_utils.runs.run_times reports reports-quick --readme README.md) -->"
END = "<!-- run-times:end -->"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _machine(machine: dict | None, load: dict | None = None) -> str:
    if not isinstance(machine, dict):
        return "not recorded"
    bf16 = "bf16" if machine.get("native_bf16") else "no native bf16 (fp32)"
    threads = machine.get("threads") or "default"
    text = f"{machine.get('torch_cpu_capability', '?')}, {bf16}, {threads} thread(s) of {machine.get('cpu_count')}"
    if isinstance(load, dict) and {"start", "end"} <= set(load):
        text += f", load {load['start']:.1f} → {load['end']:.1f}"
    return text


def collect(roots: Sequence[Path], notebooks: Path) -> list[dict]:
    """One row per run folder under ``roots`` that has a ``batch.json`` (smoke runs excluded), in a stable order."""
    rows = []
    for root in roots:
        for record_path in sorted(Path(root).rglob(BATCH_FILE)):
            record = _read(record_path)
            parameters = (record.get("identity") or {}).get("parameters") or record.get("parameters") or {}
            if not record or parameters.get("smoke"):
                continue
            run_dir = record_path.parent
            result = _read(run_dir / "result.json")
            hits = (result.get("extra") or {}).get("cache_hits")
            reused = f"{sum(map(bool, hits.values()))} of {len(hits)}" if isinstance(hits, dict) and hits else "-"
            rows.append(
                {
                    "notebook": Path(record.get("notebook", run_dir.parent.name)).stem,
                    "profile": parameters.get("profile") or (result.get("config") or {}).get("profile") or "full",
                    "seed": parameters.get("seed", result.get("seed")),
                    "state": recorded_state(run_dir, notebooks),
                    "seconds": record.get("seconds"),
                    "machine": _machine(record.get("machine"), record.get("load_average")),
                    "cached fine-tunes": reused,
                    "record": record_path.relative_to(Path(root).parent).as_posix()
                    if Path(root).is_absolute()
                    else record_path.as_posix(),
                }
            )
    return sorted(rows, key=lambda r: (r["notebook"], r["profile"] != "full", r["profile"], str(r["seed"])))


def table(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table (minutes and seconds)."""
    lines = [
        "| notebook | profile | seed | result | wall time | machine | fine-tunes from the run cache | record |",
        "|---|---|---:|---|---:|---|---|---|",
    ]
    for r in rows:
        seconds = r["seconds"]
        wall = f"{seconds / 60:.0f} min ({seconds:,.0f} s)" if isinstance(seconds, int | float) else "-"
        lines.append(
            f"| {r['notebook']} | {r['profile']} | {r['seed']} | {r['state']} | {wall} | {r['machine']} | "
            f"{r['cached fine-tunes']} | `{r['record']}` |"
        )
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> bool:
    """Replace the block between :data:`START` and :data:`END` in ``readme`` by ``text``; True when it changed."""
    old = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), flags=re.S)
    if not pattern.search(old):
        raise ValueError(f"{readme}: no run-times block (a line {START!r} ... {END!r})")
    new = pattern.sub(lambda _: f"{START}\n{text}\n{END}", old)
    if new != old:
        readme.write_text(new, encoding="utf-8")
    return new != old


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", type=Path, default=[REPO_ROOT / "reports", REPO_ROOT / "reports-quick"])
    p.add_argument("--notebooks", type=Path, default=REPO_ROOT / "notebooks")
    p.add_argument("--readme", type=Path, help="write the table into this file's run-times block")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    text = table(collect([r for r in a.roots if r.is_dir()], a.notebooks))
    if a.readme:
        changed = write_readme(a.readme, text)
        log.info("%s: run-times block %s", a.readme, "updated" if changed else "unchanged")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
