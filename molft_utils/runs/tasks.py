"""The data of a run: a data set, its saved split and the leakage-filtered pool (:func:`load_task`).

Every lesson starts from :func:`load_task` (re-exported by :mod:`molft_utils.runs.finetune`, where the lessons
call it): Lipophilicity by default, or any registered name / SMILES + label CSV (:mod:`molft_utils.data.datasets`),
with its saved split and the external pool — or, for a data set without one, a seeded held-out part of the
training split — with the molecules that overlap validation or test removed. Smoke mode (``MOLFT_SMOKE=1``,
:func:`resolve_smoke`) keeps only the first :data:`SMOKE_SIZES` molecules of every part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from molft_utils.core.settings import get_settings
from molft_utils.data.datasets import DEFAULT_DATASET, DatasetSpec, get_dataset, is_registered_default
from molft_utils.data.loading import md5
from molft_utils.data.splits import Split, get_split, leakage_report, locate_split, remove_overlap

__all__ = ["POOL_FRACTION", "SMOKE_SIZES", "Task", "load_task", "resolve_smoke"]

#: Molecules per part in smoke mode (train, valid, test, pool).
SMOKE_SIZES = {"train": 64, "valid": 32, "test": 32, "pool": 40}
#: Share of the training split held out as the pool (lessons 02, 03) for a data set without an external pool.
POOL_FRACTION = 0.2


def resolve_smoke(smoke: bool | None) -> bool:
    """``smoke`` if given, else the environment variable ``MOLFT_SMOKE`` (``1``/``true``/``yes``)."""
    if smoke is not None:
        return bool(smoke)
    return get_settings().smoke


@dataclass
class Task:
    """The data of one run: split parts and the leakage-filtered pool.

    Attributes
    ----------
    split
        The saved split (indices into the full table).
    train, valid, test
        The parts (columns ``row, smiles_raw, smiles, smiles_flat, label``).
    pool
        Pool without the molecules that also occur in validation or test.
    leakage
        The removed overlaps (pool row, SMILES, labels, part, match kind).
    smoke
        True when the parts were shrunk for a smoke run.
    data_md5
        MD5 of the data file.
    dataset
        The data set (name, file, columns, label name and unit).
    pool_raw
        The pool before the leakage filter (the external pool file, or the held-out training rows).
    pool_source
        ``"external"`` (the data set's pool file) or ``"train-holdout"`` (:data:`POOL_FRACTION` of the
        training split, drawn with the run's seed and removed from ``train``).
    split_file
        The split file read or written.
    pool_seed
        Seed of the held-out pool draw (``"train-holdout"`` only).
    """

    split: Split
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    pool: pd.DataFrame
    leakage: pd.DataFrame
    smoke: bool = False
    data_md5: str = ""
    dataset: DatasetSpec = field(default_factory=get_dataset)
    pool_raw: pd.DataFrame | None = None
    pool_source: str = "external"
    split_file: str = ""
    pool_seed: int = 0

    @property
    def key(self) -> dict:
        """What identifies this task's data in cache keys.

        For the registered default data set the key is unchanged from before data sets were configurable
        (its file checksum identifies it), so existing cache entries stay valid; any other data set adds
        its name, columns and how its pool was formed.
        """
        key = {
            "data_md5": self.data_md5,
            "split": self.split.name,
            "split_kind": self.split.kind,
            "split_seed": self.split.seed,
            "smoke": self.smoke,
        }
        if not (is_registered_default(self.dataset) and self.dataset.name == DEFAULT_DATASET):
            key["dataset"] = {
                "name": self.dataset.name,
                "smiles_col": self.dataset.smiles_col,
                "label_col": self.dataset.label_col,
                "pool": self.pool_source,
                "pool_md5": md5(self.dataset.pool_path) if self.dataset.pool_path else None,
                "pool_fraction": POOL_FRACTION if self.pool_source == "train-holdout" else None,
                "pool_seed": self.pool_seed if self.pool_source == "train-holdout" else None,
            }
        return key

    @property
    def label(self) -> str:
        """Human-readable split name, e.g. ``"random split (seed 0)"`` or ``"scaffold split"``."""
        if self.split.kind == "scaffold":
            return "scaffold split"
        return f"{self.split.kind} split (seed {self.split.seed})"

    @property
    def pool_note(self) -> str:
        """One sentence on where the pool comes from (printed by the lessons that use it)."""
        if self.pool_source == "external":
            return f"pool: the external pool of {self.dataset.display_name} ({self.dataset.pool_path.name})"
        return (
            f"pool: {self.dataset.display_name} has no external pool, so {POOL_FRACTION:.0%} of the training split "
            f"(drawn with seed {self.pool_seed}) is held out as the pool; "
            "those molecules are not in `train`, and their labels are the data set's own"
        )

    def sizes(self) -> dict[str, int]:
        """Molecules per part."""
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test), "pool": len(self.pool)}

    def describe(self) -> dict:
        """The task for ``result.json``: data set (path, md5, columns, label), split file, sizes, pool."""
        return {
            "dataset": self.dataset.record(),
            "split": self.label,
            "split_file": self.split_file,
            "split_md5": md5(self.split_file) if self.split_file and Path(self.split_file).is_file() else "",
            "sizes": self.sizes(),
            "pool_source": self.pool_source,
            "pool_overlaps_removed": len(self.leakage),
        }


def _holdout_pool(train: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``train`` into (rest, pool) with ``POOL_FRACTION`` of it in the pool, drawn with ``seed``."""
    n_pool = max(1, round(POOL_FRACTION * len(train)))
    order = np.random.default_rng(seed).permutation(len(train))
    pool_idx, rest_idx = np.sort(order[:n_pool]), np.sort(order[n_pool:])
    return train.iloc[rest_idx].reset_index(drop=True), train.iloc[pool_idx].reset_index(drop=True)


def load_task(
    split: str = "random",
    seed: int = 0,
    smoke: bool = False,
    dataset: str | Path | DatasetSpec = DEFAULT_DATASET,
    smiles_col: str | None = None,
    label_col: str | None = None,
    label_name: str | None = None,
    label_unit: str | None = None,
) -> Task:
    """Load a data set, its saved ``split`` for ``seed`` and the leakage-filtered pool.

    Parameters
    ----------
    split
        ``"random"`` (one saved split per seed) or ``"scaffold"`` (one deterministic split).
    seed
        Selects the random split (and, without an external pool, the held-out pool rows).
    smoke
        Keep only the first :data:`SMOKE_SIZES` molecules of every part.
    dataset, smiles_col, label_col, label_name, label_unit
        A registered name or a CSV path, with optional column / label overrides
        (:func:`molft_utils.data.datasets.get_dataset`). The file is validated by
        :func:`molft_utils.data.loading.load_dataset` before anything else happens.

    Notes
    -----
    Committed splits (Lipophilicity, ``data/splits/``) are read; any other split is made on first use and
    saved with its checksums under ``$MOLFT_CACHE/splits/`` (:meth:`DatasetSpec.split_dirs`), then reused.
    A data set without an external pool gets a pool of :data:`POOL_FRACTION` of the training split, drawn
    with ``seed``; those rows leave the training part.
    """
    from molft_utils.core.records import ModelCache

    spec = get_dataset(dataset, smiles_col, label_col, label_name, label_unit)
    df = spec.load()
    committed, run_dir = spec.split_dirs(ModelCache().root)
    sp = get_split(df, kind=split, seed=seed, name=spec.name, split_dir=run_dir, data_path=spec.path,
                   committed_dir=committed)
    split_file = locate_split(split, seed, spec.name, run_dir, committed)
    parts = sp.frames(df)
    pool = spec.load_pool()
    source = "external"
    if pool is None:
        parts["train"], pool = _holdout_pool(parts["train"], seed)
        source = "train-holdout"
    pool_raw = pool
    leakage = leakage_report(pool, {"valid": parts["valid"], "test": parts["test"]})
    pool = remove_overlap(pool, leakage)
    if smoke:
        parts = {k: v.iloc[: SMOKE_SIZES[k]].reset_index(drop=True) for k, v in parts.items()}
        pool = pool.iloc[: SMOKE_SIZES["pool"]].reset_index(drop=True)
    return Task(sp, parts["train"], parts["valid"], parts["test"], pool, leakage, smoke, spec.md5(), spec, pool_raw,
                source, str(split_file), int(seed))
