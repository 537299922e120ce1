"""Run records and a content-addressed model cache.

* :func:`config_hash` gives a stable short hash of a configuration dict.
* :func:`environment_info` records python / package versions and the git state of the repo.
* :func:`write_json_atomic` writes JSON via a temporary file and :func:`os.replace`.
* :func:`write_result` / :func:`load_results` write and collect ``result.json`` run records.
* :class:`ModelCache` stores built artefacts (e.g. fine-tuned models) under
  ``root/kind/<config_hash(key)>/``; an entry counts only once its ``done`` marker exists.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from molft_utils.core.settings import REPO_ROOT, get_settings

__all__ = [
    "ModelCache",
    "RunRecord",
    "config_hash",
    "environment_info",
    "load_results",
    "to_jsonable",
    "write_json_atomic",
    "write_result",
]

logger = logging.getLogger(__name__)

_PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "rdkit": "rdkit",
    "sklearn": "sklearn",
    "numpy": "numpy",
    "pandas": "pandas",
}


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` into plain JSON types.

    Dataclass instances become dicts (``dataclasses.asdict``), paths become strings, numpy
    scalars / arrays become python numbers / lists, tuples and sets become lists and
    non-finite floats become ``None``.

    Parameters
    ----------
    obj
        Any nesting of dicts, lists, tuples, sets, dataclasses, paths, numpy and python scalars.

    Returns
    -------
    Any
        An object that :func:`json.dumps` accepts with ``allow_nan=False``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def _canonical_json(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(config: dict) -> str:
    """Return a stable 16-hex-character hash of a configuration.

    Parameters
    ----------
    config
        Configuration; may contain paths, numpy scalars and dataclasses (a dataclass may also be
        passed directly).

    Returns
    -------
    str
        First 16 hex digits of the sha256 of the canonical (sorted-key, compact) JSON.
    """
    return hashlib.sha256(_canonical_json(config).encode("utf-8")).hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def environment_info() -> dict:
    """Describe the software environment of a run.

    Returns
    -------
    dict
        ``python``, ``platform``, ``packages`` (name -> version for the installed ones among
        torch, transformers, peft, rdkit, sklearn, numpy, pandas), ``git_commit`` (None when the
        repo is not a git checkout or has no commits) and ``git_dirty`` (None when unknown).
    """
    packages: dict[str, str] = {}
    for name, module in _PACKAGES.items():
        try:
            mod = importlib.import_module(module)
        except Exception:  # a broken optional package must not break the record
            continue
        packages[name] = str(getattr(mod, "__version__", "unknown"))
    commit = _git("rev-parse", "--verify", "HEAD")
    status = _git("status", "--porcelain") if _git("rev-parse", "--is-inside-work-tree") == "true" else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "git_commit": commit or None,
        "git_dirty": None if status is None else bool(status),
    }


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically.

    The data is written to a temporary file in the same directory, flushed and moved into place
    with :func:`os.replace`, so readers never see a half-written file. NaN / inf become ``null``.

    Parameters
    ----------
    path
        Destination file; parent directories are created.
    obj
        Object to serialise (see :func:`to_jsonable`).

    Returns
    -------
    Path
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclasses.dataclass
class RunRecord:
    """One run's result, as stored in ``result.json``.

    Attributes
    ----------
    notebook
        Name of the notebook / experiment that produced it.
    seed
        Random seed.
    config
        Full configuration of the run.
    metrics
        Method name -> metric dict (see :func:`molft_utils.training.metrics.regression_metrics`).
    timings
        Named durations in seconds.
    extra
        Anything else worth keeping.
    """

    notebook: str
    seed: int
    config: dict
    metrics: dict[str, dict[str, float]]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """Return the JSON-ready record including hash, environment and creation time."""
        return {
            "notebook": self.notebook,
            "seed": int(self.seed),
            "config": to_jsonable(self.config),
            "config_hash": config_hash(self.config),
            "metrics": to_jsonable(self.metrics),
            "timings": to_jsonable(self.timings),
            "extra": to_jsonable(self.extra),
            "environment": environment_info(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }


def write_result(
    out_dir: str | os.PathLike,
    notebook: str,
    seed: int,
    config: dict,
    metrics: dict[str, dict[str, float]],
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/result.json`` for one run.

    Parameters
    ----------
    out_dir
        Run directory (created if needed).
    notebook, seed, config, metrics, timings, extra
        See :class:`RunRecord`.

    Returns
    -------
    Path
        Path of the written ``result.json``.
    """
    record = RunRecord(notebook, seed, config, metrics, dict(timings or {}), dict(extra or {}))
    path = write_json_atomic(Path(out_dir) / "result.json", record.to_dict())
    logger.info("wrote %s", path)
    return path


def load_results(root: str | os.PathLike) -> list[dict]:
    """Load every ``result.json`` below ``root`` (recursively, sorted by path).

    Parameters
    ----------
    root
        Directory to search.

    Returns
    -------
    list[dict]
        The parsed records, each with an added ``"path"`` key holding the file's location.
    """
    out = []
    for path in sorted(Path(root).rglob("result.json")):
        with path.open(encoding="utf-8") as fh:
            rec = json.load(fh)
        rec["path"] = str(path)
        out.append(rec)
    return out


class ModelCache:
    """A content-addressed cache of built artefacts.

    Entries live in ``root/kind/<config_hash(key)>/`` and hold the artefact files, ``key.json``
    (the full key) and an empty ``done`` marker. Entries are built in a temporary sibling
    directory and renamed into place, so an interrupted build never yields a usable entry.

    Parameters
    ----------
    root
        Cache directory; defaults to ``$MOLFT_CACHE`` or ``<repo>/cache``.
    """

    DONE = "done"
    KEY_FILE = "key.json"

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        if root is None:
            root = get_settings().cache_dir
        self.root = Path(root)

    @staticmethod
    def _check_key(key: dict) -> dict:
        if not isinstance(key, dict):
            raise TypeError(f"cache key must be a dict, got {type(key).__name__}")
        if not isinstance(key.get("code_version"), str) or not key["code_version"]:
            raise ValueError("cache key must contain a non-empty 'code_version' string")
        return to_jsonable(key)

    def path_for(self, kind: str, key: dict) -> Path:
        """Return the entry directory ``root/kind/<hash>/`` (which may not exist)."""
        self._check_key(key)
        return self.root / kind / config_hash(key)

    def has(self, kind: str, key: dict) -> bool:
        """Return True when a complete entry (``done`` marker present) exists."""
        return (self.path_for(kind, key) / self.DONE).is_file()

    def _verify(self, path: Path, key: dict) -> None:
        stored = json.loads((path / self.KEY_FILE).read_text(encoding="utf-8"))
        if stored != self._check_key(key):
            raise RuntimeError(f"cache key mismatch at {path}: stored {stored!r}, requested {to_jsonable(key)!r}")

    def get_or_create(self, kind: str, key: dict, build: Callable[[Path], None]) -> Path:
        """Return the entry for ``key``, building it with ``build(tmpdir)`` on a miss.

        Parameters
        ----------
        kind
            Artefact family (sub-directory), e.g. ``"finetuned"``.
        key
            JSON-able dict identifying the artefact; must contain ``code_version``.
        build
            Writes the artefact files into the directory it is given.

        Returns
        -------
        Path
            The entry directory.

        Raises
        ------
        RuntimeError
            If an existing entry's ``key.json`` differs from ``key`` (hash collision or tampering).
        """
        jkey = self._check_key(key)
        final = self.path_for(kind, key)
        if (final / self.DONE).is_file():
            self._verify(final, key)
            logger.info("cache hit: %s/%s", kind, final.name)
            return final
        logger.info("cache miss: %s/%s - building", kind, final.name)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an incomplete leftover (no done marker) from an interrupted run
            logger.warning("removing incomplete cache entry %s", final)
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            build(tmp)
            write_json_atomic(tmp / self.KEY_FILE, jkey)
            (tmp / self.DONE).touch()
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / self.DONE).is_file():
                    raise
                logger.info("cache entry %s was built concurrently; using it", final)
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._verify(final, key)
        return final
