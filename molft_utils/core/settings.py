"""Configuration in one place: the ``MOLFT_*`` environment variables, read once into a :class:`Settings`.

=====================  ==========================================================================
``MOLFT_SMOKE``        ``1``/``true``/``yes``: tiny sizes for tests and CI (default off)
``MOLFT_NUM_THREADS``  torch intra-op threads for a notebook run (default: torch's own choice)
``MOLFT_CACHE``        the model / split cache directory (default ``<repository>/cache``)
``MOLFT_DEVICE``       ``cpu``, ``cuda``, ``mps`` or ``auto`` (default ``auto``)
=====================  ==========================================================================

Modules call :func:`get_settings` instead of reading ``os.environ``; the environment is read on the first call
and kept. A process that changes the environment on purpose (a test with ``monkeypatch.setenv``) calls
:func:`reload_settings` afterwards. Only the batch runner *writes* ``MOLFT_NUM_THREADS``, and only for the
notebook kernels it starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO_ROOT", "Settings", "get_settings", "reload_settings"]

#: The repository root (``molft_utils/`` lies in it); the one definition every module uses.
REPO_ROOT = Path(__file__).resolve().parents[2]

_TRUE = ("1", "true", "yes")


@dataclass(frozen=True)
class Settings:
    """The run-wide settings; build one with :meth:`from_env`.

    Attributes
    ----------
    smoke
        Tiny sizes everywhere (``MOLFT_SMOKE``).
    num_threads
        Torch threads, or ``None`` to keep torch's default (``MOLFT_NUM_THREADS``).
    cache_dir
        Where models and split files are cached (``MOLFT_CACHE``).
    device
        The preferred device, ``"auto"`` unless ``MOLFT_DEVICE`` says otherwise.
    """

    smoke: bool = False
    num_threads: int | None = None
    cache_dir: Path = REPO_ROOT / "cache"
    device: str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``); a malformed value is an error naming it."""
        env = os.environ if environ is None else environ
        threads = env.get("MOLFT_NUM_THREADS", "").strip()
        if threads and (not threads.isdigit() or int(threads) < 1):
            raise ValueError(f"MOLFT_NUM_THREADS must be a positive integer, got {threads!r}")
        return cls(
            smoke=env.get("MOLFT_SMOKE", "").strip().lower() in _TRUE,
            num_threads=int(threads) if threads else None,
            cache_dir=Path(env.get("MOLFT_CACHE") or REPO_ROOT / "cache"),
            device=env.get("MOLFT_DEVICE", "").strip() or "auto",
        )


_current: Settings | None = None


def get_settings() -> Settings:
    """The settings of this process (the environment is read on the first call)."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def reload_settings() -> Settings:
    """Read the environment again (after a deliberate change to it) and return the new settings."""
    global _current
    _current = Settings.from_env()
    return _current
