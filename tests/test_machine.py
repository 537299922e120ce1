"""The machine record that makes wall times comparable (molft_utils.core.machine)."""

from __future__ import annotations

from pathlib import Path

import torch

from molft_utils.core import machine
from molft_utils.core.device import autocast_dtype


def test_machine_info_names_what_a_time_depends_on(monkeypatch) -> None:
    monkeypatch.setenv("MOLFT_NUM_THREADS", "1")
    info = machine.machine_info()
    assert set(info) == {"cpu", "cpu_count", "torch_cpu_capability", "native_bf16", "threads"}
    assert info["threads"] == "1" and info["cpu_count"] >= 1
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # the precision the project trains in follows the recorded flag: bf16 only where the CPU multiplies it natively
    expected = torch.bfloat16 if info["native_bf16"] else None
    assert autocast_dtype(torch.device("cpu"), "auto") is expected


def test_cpu_name_reads_proc_cpuinfo(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2\n")
    real_path = Path

    def fake_path(*args):
        return fake if args == ("/proc/cpuinfo",) else real_path(*args)

    monkeypatch.setattr(machine, "Path", fake_path)
    assert machine.cpu_name() == "Test CPU 9000"
