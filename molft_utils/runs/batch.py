"""Run the numbered notebooks over seeds with papermill, then build the report.

::

    python -m molft_utils.runs.batch                       # every notebook, seeds 0 1 2, then the report
    python -m molft_utils.runs.batch --notebooks notebooks/01_finetune_and_mlm.ipynb --seeds 0 -p epochs=5
    python -m molft_utils.runs.batch --smoke --out /tmp/smoke-reports
    python -m molft_utils.runs.batch --notebooks 01 04 --seeds 1   # notebooks by number (or name, or file)
    python -m molft_utils.runs.batch --status                    # which results in reports/ are current, which stale
    python -m molft_utils.runs.batch --sync-records              # refresh the text of current runs (no execution)

Each (notebook, seed) run is executed into ``<out>/<notebook>/seed=<s>/<notebook>.ipynb`` (with an
``<override-tag>/`` level when ``-p`` overrides are given), with the papermill parameters ``seed``,
``smoke`` and ``out_dir``; the notebook writes its figures and ``result.json`` there. An override
is passed only to the notebooks whose ``parameters`` cell declares it, and only when it differs
from that notebook's default (an override that no notebook declares is an error).

This runner is the single-machine front end; ``workflow/Snakefile`` runs the same plan on a
cluster. Both use this module's rerun rule (:func:`plan_runs` → :attr:`RunSpec.identity`,
:func:`rerun_reason`), and every Snakemake job executes its run through this module
(``--expect-hash``), so the two never disagree about what a run is or when it is stale.

* **Rerun rule.** A run's identity is its notebook's code cells, the package code it can execute
  (:func:`notebook_code_modules`: the modules the notebook imports, followed through their imports; an edit
  elsewhere in the package leaves its results current) and its parameters, each hashed by what Python executes
  (:mod:`molft_utils.runs.identity`: an edit of Markdown, a comment or a docstring changes no number and costs
  no rerun). After a successful run the runner writes ``batch.json`` (identity and time) and a stamp
  ``.identity/<run_hash>.json`` (the file the Snakemake workflow depends on). A run is redone when
  :func:`rerun_reason` gives a reason: ``new`` (no result or no record), ``notebook changed``,
  ``code changed`` or ``parameters changed``; the runner logs it. An interrupted batch, started
  again, redoes only what is missing (``--force`` reruns everything).
* **Text refresh.** A current run whose notebook text was edited since (Markdown, comments) gets its executed
  copy rebuilt from today's source with the run's outputs (:func:`refresh_text`), and its record says so
  (``text_refreshed``); records from before logic hashes existed get them added (:func:`upgrade_record`).
* **Failures.** A notebook that raises is kept with its error (papermill writes the executed
  notebook up to the failing cell); the runner goes on with the other runs and exits with status 1,
  listing what failed. The later notebooks of the same seed still run.
* **Parallel.** ``--jobs N`` runs N seeds at a time (notebooks of one seed run in order, because
  later notebooks reuse earlier ones' cached models); each job gets ``cpu_count // N`` torch threads.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from molft_utils.core.machine import machine_info
from molft_utils.core.records import REPO_ROOT, config_hash, write_json_atomic
from molft_utils.runs.identity import (
    BATCH_FILE,
    cell_logic_source,
    code_hash,
    has_logic_hashes,
    identity_change,
    logic_identity,
    notebook_code_modules,
    notebook_defaults,
    notebook_identity,
    source_hash,
    text_change,
)

__all__ = [
    "RunOutcome",
    "RunSpec",
    "checkpoint_counts",
    "code_hash",
    "notebook_code_modules",
    "discover_notebooks",
    "resolve_notebooks",
    "main",
    "notebook_defaults",
    "plan_runs",
    "refresh_text",
    "rerun_reason",
    "sync_reason",
    "sync_record",
    "sync_stamp",
    "upgrade_record",
    "run_batch",
    "status_table",
]

log = logging.getLogger(__name__)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
REPORT_DIR = REPO_ROOT / "reports"
IDENTITY_DIR = ".identity"


def discover_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in ``directory``, in order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def resolve_notebooks(names: Sequence[str | Path], directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebook files that ``--notebooks`` names, in the order given.

    Each name is a notebook file (``notebooks/04_peft.ipynb``), or one of the numbered notebooks of
    ``directory`` by its name (``04_peft``) or its number (``04`` or ``4``).

    Raises
    ------
    ValueError
        A name that is neither an existing ``.ipynb`` file nor exactly one numbered notebook, with the choices.
    """
    known = discover_notebooks(directory)
    resolved = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb":
            if not path.is_file():
                raise ValueError(f"--notebooks {name}: no such notebook file")
            resolved.append(path)
            continue
        text = str(name)
        matches = [nb for nb in known if text == nb.stem or (text.isdigit() and int(text) == int(nb.stem[:2]))]
        if len(matches) != 1:
            choices = ", ".join(nb.stem for nb in known) or f"none in {directory}"
            problem = "matches several notebooks" if matches else "is neither a .ipynb file nor a numbered notebook"
            raise ValueError(
                f"--notebooks {name}: {problem} (choose a file, or one of: {choices}; a number such as 04 also works)"
            )
        resolved.append(matches[0])
    return resolved


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` → (key, python literal or string)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameter override must look like key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def _tag_value(value: object) -> str:
    """A short, file-name-safe form of an override value; a path becomes ``<stem>-<hash of the full path>``."""
    text = str(value)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    if "/" in text or "\\" in text or text.lower().endswith(".csv"):
        return re.sub(r"[^A-Za-z0-9._+-]+", "_", Path(text).name.split(".")[0] or "path")[:40] + f"-{digest}"
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", text)
    return safe if safe == text and len(safe) <= 60 else f"{safe[:40]}-{digest}"  # keep distinct values distinct


def _override_tag(overrides: dict) -> str:
    return ",".join(f"{k}={_tag_value(overrides[k])}" for k in sorted(overrides))


def _resolve_dataset(overrides: dict) -> dict:
    """Make a relative ``dataset=`` path absolute (papermill runs the notebooks in ``notebooks/``)."""
    value = overrides.get("dataset")
    if isinstance(value, str) and Path(value).expanduser().is_file():
        overrides = overrides | {"dataset": str(Path(value).expanduser().resolve())}
    return overrides


@dataclass
class RunSpec:
    """One (notebook, seed) execution."""

    notebook: Path
    seed: int
    parameters: dict
    out_dir: Path
    identity: dict
    overrides: dict = field(default_factory=dict)

    @property
    def run_hash(self) -> str:
        """Short hash of the logic part of :attr:`identity` (notebook name, logic hashes, parameters)."""
        return config_hash(logic_identity(self.identity))

    @property
    def output_notebook(self) -> Path:
        return self.out_dir / self.notebook.name

    @property
    def stamp(self) -> Path:
        """``.identity/<run_hash>.json``: exists once a run with this identity succeeded (or is scheduled)."""
        return self.out_dir / IDENTITY_DIR / f"{self.run_hash}.json"

    def is_done(self) -> bool:
        """True when a previous run with the same identity left a result."""
        return rerun_reason(self) is None


def _recorded_identity(spec: RunSpec) -> dict | None:
    try:
        record = json.loads((spec.out_dir / BATCH_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def rerun_reason(spec: RunSpec) -> str | None:
    """Why ``spec`` must run, or None when a result with the same identity exists.

    The one rerun rule of the batch runner and the Snakemake workflow. Returns ``"new"`` (no
    ``result.json`` or no ``batch.json`` record), ``"notebook changed"``, ``"code changed"`` (package
    source differs, or the record predates code hashing) or ``"parameters changed"``.
    """
    if not (spec.out_dir / "result.json").is_file():
        return "new"
    record = _recorded_identity(spec)
    if record is None:
        return "new"
    old = record.get("identity")
    if not isinstance(old, dict):  # a record from before identities were stored: only its hash is known
        return "code changed"  # its hash did not cover the package code
    change = identity_change(old, spec.identity)
    # parameters as JSON stores them (a tuple reads back as a list, an int key as a string): compare normalised
    if change is None and config_hash(old.get("parameters") or {}) != config_hash(spec.identity["parameters"]):
        return "parameters changed"
    return change


def upgrade_record(spec: RunSpec) -> bool:
    """Add the logic hashes to a current run's record written before they existed; True when it did.

    Such a record is current only while its text hashes equal today's (the same text runs the same logic), so
    today's logic hashes are the run's. Afterwards an edit of Markdown, comments or docstrings leaves the run
    current. The stamp is renamed to the new :attr:`RunSpec.run_hash` (kept older than the outputs).
    """
    record = _recorded_identity(spec)
    if record is None or rerun_reason(spec) is not None or has_logic_hashes(record["identity"]):
        return False
    previous = record.get("identity_upgraded", [])
    previous = previous if isinstance(previous, list) else [previous]
    record["identity_upgraded"] = [*previous, {"from": record["identity"], "on": time.strftime("%Y-%m-%d")}]
    record["identity"] = spec.identity
    record["run_hash"] = spec.run_hash
    write_json_atomic(spec.out_dir / BATCH_FILE, record)
    write_stamp(spec, (spec.out_dir / "result.json").stat().st_mtime - 1)
    return True


def _rebuild_text(executed: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``source``'s cells with the outputs of ``executed`` (the same code cells, by logic, in the same order).

    Papermill's injected-parameters cell is kept after the ``parameters`` cell; each code cell keeps its
    execution count, outputs and execution metadata. Raises :class:`ValueError` when the code cells differ.
    """
    def tags(cell: nbformat.NotebookNode) -> list:
        return cell.metadata.get("tags", [])

    injected = [c for c in executed.cells if "injected-parameters" in tags(c)]
    ran = [c for c in executed.cells if c.cell_type == "code" and "injected-parameters" not in tags(c)]
    code = [c for c in source.cells if c.cell_type == "code"]
    if len(ran) != len(code) or any(
        cell_logic_source(a.source) != cell_logic_source(b.source) for a, b in zip(ran, code, strict=True)
    ):
        raise ValueError("the executed notebook's code cells differ from the source's: the run must be redone")
    by_id = {c.get("id"): c for c in executed.cells if c.cell_type == "markdown" and c.get("id")}
    has_parameters = any("parameters" in tags(c) for c in source.cells)
    cells, outputs = ([] if has_parameters else list(injected)), iter(ran)  # papermill injects at the top then
    for cell in source.cells:
        new = copy.deepcopy(cell)
        old = next(outputs) if cell.cell_type == "code" else by_id.get(cell.get("id"))
        if cell.cell_type == "code":
            new.outputs, new.execution_count = old.outputs, old.execution_count
        if old is not None:  # the run's timings stay with their cells; tags come from today's source
            new.metadata = new.metadata | {k: v for k, v in old.metadata.items() if k in ("execution", "papermill")}
            if "tags" not in new.metadata and old.metadata.get("tags") == []:
                new.metadata["tags"] = []  # papermill's empty list, not a removed tag
        cells.append(new)
        if "parameters" in tags(cell):
            cells.extend(injected)
    rebuilt = copy.deepcopy(executed)
    rebuilt.cells = cells
    return rebuilt


def refresh_text(spec: RunSpec) -> bool:
    """Bring a current run's executed notebook and record up to today's text; True when anything changed.

    For a current run (:func:`rerun_reason` is None) whose recorded text hashes differ from today's (an edit of
    Markdown, comments or docstrings since the run), the executed copy is rebuilt from today's notebook with
    the run's outputs, and ``batch.json`` gets today's identity and an entry in ``text_refreshed`` (which
    hashes changed, when). Numbers, figures and ``result.json`` are untouched: the code that made them is the
    same logic.
    """
    record = _recorded_identity(spec)
    if record is None or rerun_reason(spec) is not None or not has_logic_hashes(record["identity"]):
        return False
    changed = text_change(record["identity"], spec.identity)
    if not changed:
        return False
    if "notebook_hash" in changed and spec.output_notebook.is_file():
        source = nbformat.read(spec.notebook, as_version=4)
        if source_hash(source) != spec.identity["notebook_hash"]:
            log.warning("%s changed since the run was planned: its text is not refreshed now", spec.notebook.name)
            return False
        try:
            rebuilt = _rebuild_text(nbformat.read(spec.output_notebook, as_version=4), source)
        except ValueError as err:
            log.warning("%s seed=%d: text not refreshed: %s", spec.notebook.name, spec.seed, err)
            return False
        tmp = spec.output_notebook.with_suffix(".ipynb.tmp")
        nbformat.write(rebuilt, tmp)
        os.replace(tmp, spec.output_notebook)
    entry = {k: [record["identity"].get(k), spec.identity[k]] for k in changed} | {"on": time.strftime("%Y-%m-%d")}
    record.setdefault("text_refreshed", []).append(entry)
    record["identity"] = spec.identity
    write_json_atomic(spec.out_dir / BATCH_FILE, record)
    return True


def sync_reason(spec: RunSpec) -> str | None:
    """Why :func:`sync_record` would act on ``spec``, or None: a current run whose record predates logic hashes,
    or whose notebook or package text was edited since it ran (Markdown, comments, docstrings).

    The Snakemake workflow plans a ``text`` job from it, as it plans a ``notebook`` job from :func:`rerun_reason`.
    """
    record = _recorded_identity(spec)
    if record is None or rerun_reason(spec) is not None:
        return None
    if not has_logic_hashes(record["identity"]):
        return "record without logic hashes"
    changed = text_change(record["identity"], spec.identity)
    return f"text edited ({', '.join(changed)})" if changed else None


def sync_record(spec: RunSpec) -> list[str]:
    """:func:`upgrade_record`, then :func:`refresh_text`, for a current run; the names of the steps that acted."""
    done = []
    if upgrade_record(spec):
        done.append("identity upgraded")
    if refresh_text(spec):
        done.append("text refreshed")
    for step in done:
        log.info("%s %s seed=%d: %s", step, spec.notebook.name, spec.seed, spec.out_dir)
    return done


def status_table(specs: Sequence[RunSpec]) -> str:
    """A Markdown table: each run, whether its committed result is current, and its recorded wall time.

    A result is *current* when :func:`rerun_reason` finds nothing to redo; otherwise the reason says what
    differs from the run that wrote it (its numbers then describe the older notebook or code).
    """
    lines = ["| notebook | seed | result | wall time (s) |", "|---|---:|---|---:|"]
    for spec in specs:
        reason = rerun_reason(spec)
        record = _recorded_identity(spec) or {}
        made = f"{record['seconds']:.0f}" if isinstance(record.get("seconds"), int | float) else "-"
        state = "current" if reason is None else ("missing" if reason == "new" else f"stale ({reason})")
        if reason is None and text_change(record.get("identity") or {}, spec.identity):
            state += " (text edited since: --sync-records refreshes it)"
        usable, total = checkpoint_counts(spec)
        if reason is not None and total:
            state += f"; a rerun resumes from {usable} of {total} checkpoints"
        lines.append(f"| {spec.notebook.stem} | {spec.seed} | {state} | {made} |")
    return "\n".join(lines)


def checkpoint_counts(spec: RunSpec) -> tuple[int, int]:
    """(usable, all) stage checkpoints in ``<out_dir>/checkpoints/`` (:mod:`molft_utils.runs.checkpoints`).

    A checkpoint is usable by a rerun of today's notebook when its identity equals the one
    :class:`~molft_utils.runs.checkpoints.Checkpoints` computes today
    (:func:`~molft_utils.runs.checkpoints.notebook_identity`).
    """
    from molft_utils.runs.checkpoints import notebook_identity as checkpoint_identity

    files = sorted((spec.out_dir / "checkpoints").glob("*.json"))
    today = checkpoint_identity(spec.notebook.stem, spec.notebook.parent) if files else {}
    usable = 0
    for path in files:
        try:
            usable += json.loads(path.read_text(encoding="utf-8")).get("identity") == today
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
    return usable, len(files)


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "done" | "skipped" | "failed"
    seconds: float = 0.0
    error: str = ""
    reason: str = ""
    extra: dict = field(default_factory=dict)


def plan_runs(
    notebooks: Sequence[Path],
    seeds: Sequence[int],
    out: Path,
    overrides: dict | None = None,
    smoke: bool = False,
    strict: bool = True,
) -> list[RunSpec]:
    """Every (notebook, seed) run with its parameters, output folder and identity.

    An override is applied to a notebook only when its ``parameters`` cell declares it and the value
    differs from that notebook's default. With ``strict``, an override no notebook declares raises
    :class:`ValueError` (a misspelt parameter would otherwise be ignored silently).
    """
    overrides = _resolve_dataset(dict(overrides or {}))
    out = Path(out).resolve()  # papermill changes the process's working directory while it runs
    specs = []
    declared: set[str] = set()
    for nb in (Path(n).resolve() for n in notebooks):
        today = notebook_identity(nb)
        defaults = notebook_defaults(nb)
        declared |= set(defaults)
        own = {k: v for k, v in overrides.items() if k in defaults and defaults[k] != v}
        for seed in seeds:
            base = out / nb.stem
            if own:
                base = base / _override_tag(own)
            out_dir = base / f"seed={seed}"
            params = {"seed": int(seed), "smoke": bool(smoke), **own}
            identity = today | {"parameters": params}
            specs.append(RunSpec(nb, int(seed), params | {"out_dir": str(out_dir)}, out_dir, identity, own))
    unknown = sorted(set(overrides) - declared - {"seed", "smoke", "out_dir"})
    if strict and unknown:
        raise ValueError(f"no notebook among {[Path(n).name for n in notebooks]} has the parameter(s) {unknown}")
    return specs


def _execute(spec: RunSpec, kernel: str, timeout: int | None) -> RunOutcome:
    import papermill as pm

    spec.out_dir.mkdir(parents=True, exist_ok=True)
    (spec.out_dir / BATCH_FILE).unlink(missing_ok=True)
    spec.stamp.unlink(missing_ok=True)  # recreated (older than the outputs) only when this run succeeds
    for old in spec.out_dir.glob("fig[0-9]*.png"):  # an earlier run's figures (numbering may differ) go with it
        old.unlink()
    started = time.time()
    load_start = os.getloadavg()[0]  # with the end's: was the machine shared while it ran?
    t0 = time.perf_counter()
    log.info("running %s seed=%d → %s", spec.notebook.name, spec.seed, spec.output_notebook)
    try:
        pm.execute_notebook(
            str(spec.notebook),
            str(spec.output_notebook),
            parameters=spec.parameters,
            kernel_name=kernel,
            cwd=str(spec.notebook.parent),
            progress_bar=False,
            execution_timeout=timeout,
        )
    except Exception as err:  # papermill keeps the executed notebook with the error
        seconds = time.perf_counter() - t0
        first = str(err).strip().splitlines()
        log.error(
            "FAILED %s seed=%d after %.0f s: %s", spec.notebook.name, spec.seed, seconds, first[-1] if first else err
        )
        return RunOutcome(spec, "failed", seconds, f"{type(err).__name__}: {first[-1] if first else err}")
    seconds = time.perf_counter() - t0
    if not (spec.out_dir / "result.json").is_file():
        return RunOutcome(spec, "failed", seconds, "the notebook ran but wrote no result.json")
    record = {
        "run_hash": spec.run_hash,
        "identity": spec.identity,
        "parameters": spec.parameters,
        "seconds": seconds,
        "notebook": spec.notebook.name,
        "machine": machine_info(),
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
    }
    write_json_atomic(spec.out_dir / BATCH_FILE, record)
    write_stamp(spec, started)
    log.info("done %s seed=%d in %.0f s", spec.notebook.name, spec.seed, seconds)
    return RunOutcome(spec, "done", seconds)


def write_stamp(spec: RunSpec, mtime: float | None = None) -> Path:
    """Write ``spec.stamp`` (the identity) and remove the stamps of earlier identities.

    ``mtime`` (the run's start) keeps the stamp older than the run's outputs, as the workflow expects.
    """
    for old in spec.stamp.parent.glob("*.json"):
        if old != spec.stamp:
            old.unlink(missing_ok=True)
    write_json_atomic(spec.stamp, spec.identity)
    if mtime is not None:
        os.utime(spec.stamp, (mtime, mtime))
    return spec.stamp


def sync_stamp(spec: RunSpec) -> str | None:
    """Apply :func:`rerun_reason` to ``spec.stamp``, the file the Snakemake workflow's run job depends on.

    * up to date: the stamp exists and is older than ``result.json`` (written if missing, e.g. a copied folder);
    * stale with a result (notebook, code or parameters changed): the stamp is (re)written now, newer than
      the outputs, so Snakemake reruns the job whether or not it has provenance records of its own;
    * new: left to the workflow's ``identity`` job.

    Returns the reason, as :func:`rerun_reason`.
    """
    reason = rerun_reason(spec)
    result = spec.out_dir / "result.json"
    if reason is None:
        older = result.stat().st_mtime - 1
        if not spec.stamp.is_file():
            write_stamp(spec, older)
        elif spec.stamp.stat().st_mtime >= result.stat().st_mtime:
            os.utime(spec.stamp, (older, older))
    elif result.is_file():
        write_json_atomic(spec.stamp, spec.identity)
    return reason


def run_batch(
    specs: Sequence[RunSpec],
    jobs: int = 1,
    force: bool = False,
    kernel: str = "python3",
    timeout: int | None = None,
) -> list[RunOutcome]:
    """Execute ``specs``; runs of one seed in order, ``jobs`` seeds in parallel."""
    by_seed: dict[int, list[RunSpec]] = {}
    for s in specs:
        by_seed.setdefault(s.seed, []).append(s)
    if jobs > 1:
        os.environ.setdefault("MOLFT_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))

    def run_seed(seed_specs: list[RunSpec]) -> list[RunOutcome]:
        outcomes = []
        for spec in seed_specs:
            reason = "forced" if force else rerun_reason(spec)
            if reason is None:
                log.info("skip %s seed=%d (result with the same identity exists)", spec.notebook.name, spec.seed)
                outcomes.append(RunOutcome(spec, "skipped", extra={"record": sync_record(spec)}))
                continue
            log.info("run %s seed=%d: %s", spec.notebook.name, spec.seed, reason)
            outcome = _execute(spec, kernel, timeout)
            outcome.reason = reason
            outcomes.append(outcome)
        return outcomes

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(run_seed, by_seed.values()))
    return [o for seed_outcomes in results for o in seed_outcomes]


def _write_log(out: Path, outcomes: Sequence[RunOutcome], wall: float) -> None:
    record = {
        "wall_seconds": wall,
        "runs": [
            {
                "notebook": o.spec.notebook.name,
                "seed": o.spec.seed,
                "status": o.status,
                "reason": o.reason,
                "seconds": o.seconds,
                "error": o.error,
                "out_dir": str(o.spec.out_dir),
            }
            for o in outcomes
        ],
    }
    write_json_atomic(out / "batch_log.json", record)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (1 when any run failed)."""
    p = argparse.ArgumentParser(description="Run the notebooks over seeds with papermill, then the report.")
    p.add_argument(
        "--notebooks", nargs="+", help="files, names (04_peft) or numbers (04); default: every notebooks/NN_*.ipynb"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("-p", "--param", type=parse_override, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (as in the tests)")
    p.add_argument("--out", type=Path, default=None, help="default: reports/ (reports-smoke/ with --smoke)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in parallel")
    p.add_argument("--force", action="store_true", help="rerun runs that already have a result")
    p.add_argument(
        "--status",
        action="store_true",
        help="only list each planned run as current or with the reason it would rerun (nothing is executed)",
    )
    p.add_argument(
        "--sync-records",
        action="store_true",
        help="only bring the records and executed notebooks of current runs up to today's text (add logic hashes "
        "to old records, refresh edited Markdown and comments); nothing is executed",
    )
    p.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    p.add_argument("--kernel", default="python3")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--no-log", action="store_true", help="do not write <out>/batch_log.json")
    p.add_argument(
        "--expect-hash",
        help="the run hash the caller planned (the workflow's jobs pass it); a different plan is an error",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = a.out or (REPO_ROOT / ("reports-smoke" if a.smoke else "reports"))
    try:
        notebooks = resolve_notebooks(a.notebooks) if a.notebooks else discover_notebooks()
    except ValueError as err:
        log.error("%s", err)
        return 1
    if not notebooks:
        log.error("no notebooks to run")
        return 1
    try:
        specs = plan_runs(notebooks, a.seeds, out, dict(a.param), a.smoke)
    except ValueError as err:
        log.error("%s", err)
        return 1
    if a.expect_hash and [s.run_hash for s in specs] != [a.expect_hash]:
        log.error(
            "planned run hash(es) %s differ from the expected %s: the notebook, the package code or the parameters "
            "changed after the workflow was planned; start the workflow again",
            [s.run_hash for s in specs],
            a.expect_hash,
        )
        return 1
    if a.status:
        print(status_table(specs))
        return 0
    if a.sync_records:
        for spec in specs:
            acted = sync_record(spec) if rerun_reason(spec) is None else []
            print(f"{spec.notebook.stem} seed={spec.seed}: {', '.join(acted) or 'nothing to do'}")
        return 0
    t0 = time.perf_counter()
    outcomes = run_batch(specs, a.jobs, a.force, a.kernel, a.timeout)
    wall = time.perf_counter() - t0
    if not a.no_log:
        _write_log(out, outcomes, wall)
    if not a.no_report:
        from molft_utils.runs.report import build_report

        build_report(out)
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    log.info("batch finished in %.0f s: %s", wall, counts)
    if failed:
        lines = [
            f"  {o.spec.notebook.name} seed={o.spec.seed}: {o.error} (see {o.spec.output_notebook})" for o in failed
        ]
        print("FAILED runs:\n" + "\n".join(lines), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
