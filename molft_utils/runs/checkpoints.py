"""Checkpoints of a run's expensive stages, so that a run cut short resumes where it stopped.

A full-size run of a lesson can outlast the session that started it (lesson 04: a learning-rate sweep, six
fine-tunes to convergence and a LoRA rank study, hours on two cores). Each finished stage — one fine-tune
and what was measured on it — is written as a small JSON record into the run's folder
(``<out_dir>/checkpoints/``); when the run starts again, a stage whose record exists is read back instead
of being recomputed. Committing that folder carries a half-finished run into the next session.

A record is reused only by a run of the **same notebook and package logic** (the identity the batch runner
uses, :mod:`molft_utils.runs.identity`: Markdown, comments and docstrings do not count) and the **same stage
key** (everything the stage's computation depends on: method, rate, configuration, data); anything else misses
and is recomputed. Once the run has
written its ``result.json`` (which then holds the numbers), :meth:`Checkpoints.finish` deletes the folder.
Records hold plain JSON; NaN stays NaN. The executed notebook says which stages were resumed.

Usage in a notebook::

    checkpoints = Checkpoints.for_notebook("04_peft", ctx.out_dir)
    record = checkpoints.get_or_compute("final lora", {"lr": 3e-3, "config": cfg}, lambda: train_and_measure())
    ...
    checkpoints.finish()   # after write_result
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from molft_utils.core.records import REPO_ROOT, config_hash, to_jsonable
from molft_utils.runs.identity import logic_identity
from molft_utils.runs.identity import notebook_identity as identity_of

__all__ = ["Checkpoints", "notebook_identity"]

log = logging.getLogger(__name__)

FOLDER = "checkpoints"


def notebook_identity(name: str, notebooks: Path | None = None) -> dict[str, object]:
    """The logic of ``notebooks/<name>.ipynb`` and of the package code it runs (the batch runner's rerun rule):
    an edit of Markdown, comments or docstrings keeps a half-finished run's checkpoints valid."""
    path = Path(notebooks or REPO_ROOT / "notebooks") / f"{name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook, so its checkpoints cannot be keyed by its source")
    return {k: v for k, v in logic_identity(identity_of(path)).items() if k != "parameters"}


def _plain(obj: Any) -> Any:
    """JSON types for ``obj`` (numpy, paths, dataclasses...), keeping non-finite floats as they are."""
    if isinstance(obj, float):
        return obj
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):  # numpy arrays and scalars
        return _plain(obj.tolist())
    return to_jsonable(obj)


class Checkpoints:
    """Stage records of one run, in ``root`` (normally ``<out_dir>/checkpoints``).

    Parameters
    ----------
    root
        Folder of the records (created on the first write).
    identity
        What the records are valid for (notebook and code hashes, see :func:`notebook_identity`); part of
        every record's key.
    """

    def __init__(self, root: Path, identity: dict[str, str]) -> None:
        self.root = Path(root)
        self.identity = dict(identity)
        self.hits: list[str] = []
        self.misses: list[str] = []

    @classmethod
    def for_notebook(cls, name: str, out_dir: Path, notebooks: Path | None = None) -> Checkpoints:
        """The checkpoints of the run of notebook ``name`` writing to ``out_dir``."""
        return cls(Path(out_dir) / FOLDER, notebook_identity(name, notebooks))

    def path_for(self, stage: str, key: dict) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", stage).strip("_") or "stage"
        return self.root / f"{slug}-{config_hash({'stage': stage, 'key': key, 'identity': self.identity})}.json"

    def get_or_compute(self, stage: str, key: dict, compute: Callable[[], dict]) -> dict:
        """The record of ``stage`` under ``key``: read back when a run of this notebook and code wrote it,
        else ``compute()`` (a JSON-able dict), written atomically, then returned as read back (so a fresh and a
        resumed run continue with the same values).
        """
        key = _plain(key)
        path = self.path_for(stage, key)
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("stage") == stage and stored.get("key") == key and stored.get("identity") == self.identity:
                self.hits.append(stage)
                log.info("checkpoint hit: %s (written %s)", stage, stored.get("written"))
                return stored["value"]
            raise RuntimeError(f"{path}: checkpoint key mismatch (hash collision or an edited file); delete it")
        value = compute()
        if not isinstance(value, dict):
            raise TypeError(f"stage {stage!r} must return a dict, got {type(value).__name__}")
        record = {
            "stage": stage,
            "key": key,
            "identity": self.identity,
            "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "value": _plain(value),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, allow_nan=True)
        os.replace(tmp, path)
        self.misses.append(stage)
        return json.loads(path.read_text(encoding="utf-8"))["value"]

    def summary(self) -> str:
        """One line: how many stages were computed and how many resumed from an earlier, interrupted run."""
        if not self.hits:
            return f"checkpoints: {len(self.misses)} stage(s) computed in this run, none resumed"
        return (f"checkpoints: {len(self.hits)} stage(s) resumed from an interrupted run of this notebook and code "
                f"({', '.join(self.hits)}), {len(self.misses)} computed in this run")

    def finish(self) -> None:
        """Remove the records once the run has written its result (its numbers are in ``result.json`` now)."""
        if self.root.is_dir():
            shutil.rmtree(self.root)
