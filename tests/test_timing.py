"""The command timer that writes reports/benchmark/test_times.json."""

from __future__ import annotations

import json
import sys

from molft_utils.runs import timing


def test_pytest_summary_takes_the_last_summary_line():
    lines = ["collected 3 items", "=== 2 passed, 1 warning in 3.21s ===", "", "== 3 passed in 12.50s (0:00:12) =="]
    assert timing.pytest_summary(lines) == "3 passed in 12.50s (0:00:12)"
    assert timing.pytest_summary(["no tests here"]) is None
    assert timing.pytest_summary(["1 failed, 2 passed in 1.00s"]) == "1 failed, 2 passed in 1.00s"


def test_main_records_the_run_and_keeps_other_entries(tmp_path, capsys):
    out = tmp_path / "times.json"
    out.write_text(json.dumps({"older": {"wall_seconds": 1.0}}))
    code = "print('5 passed in 0.01s')"
    rc = timing.main(["--name", "demo", "--out", str(out), "--describe", "a demo", "--", sys.executable, "-c", code])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["older"] == {"wall_seconds": 1.0}
    entry = data["demo"]
    assert entry["returncode"] == 0 and entry["pytest_summary"] == "5 passed in 0.01s"
    assert entry["description"] == "a demo" and entry["wall_seconds"] >= 0
    assert data["measured"] == entry["started"]
    assert "5 passed" in capsys.readouterr().out


def test_main_returns_the_command_status(tmp_path):
    out = tmp_path / "times.json"
    assert timing.main(["--name", "fails", "--out", str(out), "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert json.loads(out.read_text())["fails"]["returncode"] == 3
