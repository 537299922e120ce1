"""Run the numbered notebooks over seeds with papermill, then build the report.

::

    python -m molft_utils.batch                       # every notebook, seeds 0 1 2, then the report
    python -m molft_utils.batch --notebooks notebooks/01_finetune_and_mlm.ipynb --seeds 0 -p epochs=5
    python -m molft_utils.batch --smoke --out /tmp/smoke-reports

Each (notebook, seed) run is executed into ``<out>/<notebook>/seed=<s>/<notebook>.ipynb`` (with an
``<override-tag>/`` level when ``-p`` overrides are given), with the papermill parameters ``seed``,
``smoke`` and ``out_dir``; the notebook writes its figures and ``result.json`` there.

* **Resume.** A run is identified by a hash of the notebook's source cells and its parameters; the
  runner writes ``batch.json`` with that hash after a successful run and skips runs whose hash
  already has a ``result.json``. An interrupted batch, started again, redoes only what is missing;
  an edited notebook is run again (``--force`` reruns everything).
* **Failures.** A notebook that raises is kept with its error (papermill writes the executed
  notebook up to the failing cell); the runner goes on with the other runs and exits with status 1,
  listing what failed. The later notebooks of the same seed still run.
* **Parallel.** ``--jobs N`` runs N seeds at a time (notebooks of one seed run in order, because
  later notebooks reuse earlier ones' cached models); each job gets ``cpu_count // N`` torch threads.
"""

from __future__ import annotations

import argparse
import ast
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

from .runs import REPO_ROOT, config_hash, write_json_atomic

__all__ = ["RunSpec", "RunOutcome", "discover_notebooks", "main", "plan_runs", "run_batch"]

log = logging.getLogger(__name__)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
REPORT_DIR = REPO_ROOT / "reports"
BATCH_FILE = "batch.json"


def discover_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in ``directory``, in order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def notebook_source_hash(path: Path) -> str:
    """Hash of the cell types and sources (outputs and metadata do not count)."""
    nb = nbformat.read(path, as_version=4)
    text = json.dumps([(c.cell_type, c.source) for c in nb.cells])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    run_hash: str

    @property
    def output_notebook(self) -> Path:
        return self.out_dir / self.notebook.name

    def is_done(self) -> bool:
        """True when a previous run with the same hash left a result."""
        marker = self.out_dir / BATCH_FILE
        if not (marker.is_file() and (self.out_dir / "result.json").is_file()):
            return False
        try:
            return json.loads(marker.read_text()).get("run_hash") == self.run_hash
        except json.JSONDecodeError:
            return False


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "done" | "skipped" | "failed"
    seconds: float = 0.0
    error: str = ""
    extra: dict = field(default_factory=dict)


def plan_runs(
    notebooks: Sequence[Path],
    seeds: Sequence[int],
    out: Path,
    overrides: dict | None = None,
    smoke: bool = False,
) -> list[RunSpec]:
    """Every (notebook, seed) run with its parameters, output folder and hash."""
    overrides = _resolve_dataset(dict(overrides or {}))
    out = Path(out).resolve()  # papermill changes the process's working directory while it runs
    specs = []
    for nb in (Path(n).resolve() for n in notebooks):
        src_hash = notebook_source_hash(nb)
        for seed in seeds:
            base = out / nb.stem
            if overrides:
                base = base / _override_tag(overrides)
            out_dir = base / f"seed={seed}"
            params = {"seed": int(seed), "smoke": bool(smoke), **overrides}
            run_hash = config_hash({"notebook": nb.name, "source": src_hash, "parameters": params})
            specs.append(RunSpec(nb, int(seed), params | {"out_dir": str(out_dir)}, out_dir, run_hash))
    return specs


def _execute(spec: RunSpec, kernel: str, timeout: int | None) -> RunOutcome:
    import papermill as pm

    spec.out_dir.mkdir(parents=True, exist_ok=True)
    (spec.out_dir / BATCH_FILE).unlink(missing_ok=True)
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
    write_json_atomic(
        spec.out_dir / BATCH_FILE,
        {"run_hash": spec.run_hash, "parameters": spec.parameters, "seconds": seconds, "notebook": spec.notebook.name},
    )
    log.info("done %s seed=%d in %.0f s", spec.notebook.name, spec.seed, seconds)
    return RunOutcome(spec, "done", seconds)


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
            if not force and spec.is_done():
                log.info("skip %s seed=%d (result with the same hash exists)", spec.notebook.name, spec.seed)
                outcomes.append(RunOutcome(spec, "skipped"))
                continue
            outcomes.append(_execute(spec, kernel, timeout))
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
    p.add_argument("--notebooks", type=Path, nargs="+", help="default: every notebooks/NN_*.ipynb")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("-p", "--param", type=parse_override, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (as in the tests)")
    p.add_argument("--out", type=Path, default=None, help="default: reports/ (reports-smoke/ with --smoke)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in parallel")
    p.add_argument("--force", action="store_true", help="rerun runs that already have a result")
    p.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    p.add_argument("--kernel", default="python3")
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = a.out or (REPO_ROOT / ("reports-smoke" if a.smoke else "reports"))
    notebooks = [Path(n) for n in a.notebooks] if a.notebooks else discover_notebooks()
    if not notebooks:
        log.error("no notebooks to run")
        return 1
    specs = plan_runs(notebooks, a.seeds, out, dict(a.param), a.smoke)
    t0 = time.perf_counter()
    outcomes = run_batch(specs, a.jobs, a.force, a.kernel, a.timeout)
    wall = time.perf_counter() - t0
    _write_log(out, outcomes, wall)
    if not a.no_report:
        from .report import build_report

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
