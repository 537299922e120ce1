"""Time a command and record the measurement in a JSON file (the test-time figures the README quotes).

Usage::

    python -m molft_utils.runs.timing --name ci_fresh_clone --out reports/benchmark/test_times.json \\
        --describe "bash .ci/run on a fresh clone (new .venv, install, make test)" -- bash .ci/run

The command runs with its output passed through; the entry stores its wall time, exit status, the last pytest
summary line it printed (when there is one), the machine's core count and its load average just before the start,
so a reader can tell an idle machine from a shared one. Other entries in the file are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from molft_utils.core.records import write_json_atomic

logger = logging.getLogger(__name__)

_PYTEST_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error).* in [\d.]+s.*?)\s*=*$")


def pytest_summary(lines: list[str]) -> str | None:
    """Return the last pytest summary line (``"499 passed, 3 warnings in 812.3s (0:13:32)"``) in ``lines``."""
    found = None
    for line in lines:
        match = _PYTEST_SUMMARY.match(line.strip())
        if match:
            found = match.group(1)
    return found


def time_command(command: list[str], cwd: Path | None = None) -> dict:
    """Run ``command``, echoing its output, and return the measurement (wall seconds, exit status, summary)."""
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    lines: list[str] = []
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line.rstrip("\n"))
        rc = proc.wait()
    return {
        "command": " ".join(command),
        "started": started,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "returncode": rc,
        "pytest_summary": pytest_summary(lines),
        "cores": os.cpu_count(),
        "load_average_1min_before": None if load_before is None else round(load_before, 2),
    }


def record(out: Path, name: str, entry: dict) -> None:
    """Store ``entry`` under ``name`` in the JSON file ``out``, keeping its other entries."""
    data = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    data[name] = entry
    data["measured"] = entry["started"]
    write_json_atomic(out, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="entry name, e.g. ci_fresh_clone")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmark/test_times.json"))
    parser.add_argument("--describe", default=None, help="what was measured, in words (stored with the entry)")
    parser.add_argument("--cwd", type=Path, default=None, help="directory to run the command in")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    entry = time_command(command, cwd=args.cwd)
    if args.describe:
        entry["description"] = args.describe
    record(args.out, args.name, entry)
    logger.info("%s: %.0f s, exit %d -> %s", args.name, entry["wall_seconds"], entry["returncode"], args.out)
    return entry["returncode"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
