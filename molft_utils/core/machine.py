"""What a measured time depends on: the CPU, whether it multiplies bf16 natively, and the threads a run may use.

The same CPU model name (``AMD EPYC``) covers machines with and without AVX-512. Without ``avx512_bf16`` (or AMX)
the project trains in fp32 (:func:`molft_utils.core.device.autocast_dtype`), several times slower, so a wall time
or a throughput is comparable only with one recorded on the same kind of machine. The batch runner stores
:func:`machine_info` in every ``batch.json``, the benchmark in ``throughput.json``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from molft_utils.core.device import cpu_has_native_bf16

__all__ = ["cpu_name", "machine_info"]


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else what :mod:`platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU name and count, torch's CPU capability (``AVX2``, ``AVX512``, …), native bf16, ``MOLFT_NUM_THREADS``."""
    import torch

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "threads": os.environ.get("MOLFT_NUM_THREADS"),
    }
