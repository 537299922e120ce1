"""A registry of the data sets the lessons can run on: Lipophilicity, or any SMILES + label CSV.

Every notebook has a ``dataset`` parameter (with ``smiles_col``, ``label_col``, ``label_name`` and
``label_unit``); :func:`molft_utils.runs.finetune.load_task` resolves it here with :func:`get_dataset`:

* a **registered name** (``"lipophilicity"``, the default: MoleculeNet Lipophilicity with its external
  pool ``data/external_pool.csv`` and the committed splits in ``data/splits/``), or
* the **path of a CSV** with a SMILES column and a numeric label column. Its columns default to
  ``smiles`` and ``target``; its name is the file stem; it has no external pool (lessons 02 and 03 then
  hold out a seeded part of the training split as the pool, see :func:`molft_utils.runs.finetune.load_task`);
  its random and scaffold splits are made on first use and saved with the data's checksums under the
  model cache (``$MOLFT_CACHE/splits/<name>-<md5>/``), never into the tracked ``data/`` folder.

Every file goes through :func:`molft_utils.data.loading.load_dataset`: a malformed file stops with an error naming
the file, the row and the problem, and nothing is dropped silently.

Adding a data set
-----------------
For a one-off run, pass the path (notebook parameters or the batch runner)::

    python -m molft_utils.runs.batch --smoke -p dataset=/data/solubility.csv -p smiles_col=SMILES \\
        -p label_col=logS -p label_name=logS -p "label_unit=log mol/L"

To make it a named data set for everyone, register it in this module (below the Lipophilicity entry)::

    register(DatasetSpec(
        name="esol",                         # what `dataset=` accepts; also names splits and cache keys
        path=DATA_DIR / "esol.csv",          # vendor it with its md5 in data/README.md
        smiles_col="smiles",
        label_col="measured log solubility in mols per litre",
        display_name="ESOL (Delaney)",       # titles and the report
        label_name="logS",                   # axis and table labels
        label_unit="log mol/L",
        pool_path=None,                      # optional external pool with its own two columns
    ))

and commit its splits with ``python -m molft_utils.data.splits`` if they should be fixed in the repository.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from molft_utils.data.loading import DATA_DIR, EXTERNAL_POOL, LIPOPHILICITY, load_dataset, md5

__all__ = [
    "COMMITTED_SPLIT_DIR",
    "DEFAULT_DATASET",
    "DatasetSpec",
    "available",
    "get_dataset",
    "is_registered_default",
    "register",
    "slug",
]

log = logging.getLogger(__name__)

#: The data set every notebook uses unless told otherwise.
DEFAULT_DATASET = "lipophilicity"
#: Folder of the committed (tracked) split files; only read at run time.
COMMITTED_SPLIT_DIR = DATA_DIR / "splits"


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (letters, digits, ``.``, ``_``, ``-``)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return out or "dataset"


@dataclass(frozen=True)
class DatasetSpec:
    """A SMILES + label data set and how to read, name and split it.

    Attributes
    ----------
    name : str
        Identifier: the ``dataset`` parameter, split file names, cache keys.
    path : Path
        The CSV file.
    smiles_col, label_col : str
        Its SMILES and label columns.
    display_name : str
        Human-readable name for titles and the report.
    label_name : str
        Short name of the label for axes and tables (e.g. ``"logD"``).
    label_unit : str
        Unit of the label (``""`` if none or unknown).
    pool_path : Path or None
        Optional external pool CSV (lessons 02 and 03); ``None``: the lessons hold out part of the
        training split instead.
    pool_smiles_col, pool_label_col : str
        Columns of the pool file.
    committed_splits : bool
        True when split files for this data set are committed in ``data/splits/`` (read, never written).
    """

    name: str
    path: Path
    smiles_col: str = "smiles"
    label_col: str = "target"
    display_name: str = ""
    label_name: str = ""
    label_unit: str = ""
    pool_path: Path | None = None
    pool_smiles_col: str = "smiles"
    pool_label_col: str = "target"
    committed_splits: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.pool_path is not None:
            object.__setattr__(self, "pool_path", Path(self.pool_path))
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)
        if not self.label_name:
            object.__setattr__(self, "label_name", self.label_col)

    @property
    def axis_label(self) -> str:
        """Label with unit for axes, e.g. ``"logD (log units)"`` or ``"TPSA (Å²)"``."""
        return f"{self.label_name} ({self.label_unit})" if self.label_unit else self.label_name

    @property
    def error_unit(self) -> str:
        """What an RMSE is measured in, for ``"test RMSE ({error_unit})"``: ``"logD, log units"``."""
        return f"{self.label_name}, {self.label_unit}" if self.label_unit else f"{self.label_name} units"

    def load(self) -> pd.DataFrame:
        """The validated table (:func:`molft_utils.data.loading.load_dataset`)."""
        return load_dataset(self.path, smiles_col=self.smiles_col, label_col=self.label_col)

    def load_pool(self) -> pd.DataFrame | None:
        """The validated external pool, or ``None`` when the data set has none."""
        if self.pool_path is None:
            return None
        return load_dataset(self.pool_path, smiles_col=self.pool_smiles_col, label_col=self.pool_label_col)

    def md5(self) -> str:
        """MD5 of the data file."""
        return md5(self.path)

    def split_dirs(self, cache_root: str | Path) -> tuple[Path | None, Path]:
        """``(committed folder or None, run-time folder)`` for this data set's split files.

        The run-time folder is ``<cache_root>/splits/<name>-<md5 prefix>/``, so two different files that
        share a name never share split files.
        """
        committed = COMMITTED_SPLIT_DIR if self.committed_splits else None
        return committed, Path(cache_root) / "splits" / f"{slug(self.name)}-{self.md5()[:12]}"

    def record(self) -> dict:
        """What a ``result.json`` records about the data: name, path, md5, columns, label, pool."""
        rec = {
            "name": self.name,
            "display_name": self.display_name,
            "path": str(self.path),
            "md5": self.md5(),
            "smiles_col": self.smiles_col,
            "label_col": self.label_col,
            "label_name": self.label_name,
            "label_unit": self.label_unit,
        }
        if self.pool_path is not None:
            rec["pool"] = {"path": str(self.pool_path), "md5": md5(self.pool_path)}
        return rec


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the registry under ``spec.name`` (``replace=True`` to overwrite an entry)."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"a dataset named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def available() -> list[str]:
    """Names of the registered data sets."""
    return sorted(_REGISTRY)


register(
    DatasetSpec(
        name="lipophilicity",
        path=LIPOPHILICITY,
        smiles_col="smiles",
        label_col="target",
        display_name="MoleculeNet Lipophilicity",
        label_name="logD",
        label_unit="log units",
        pool_path=EXTERNAL_POOL,
        pool_smiles_col="SMILES",
        pool_label_col="Label",
        committed_splits=True,
    )
)


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith((".csv", ".csv.gz")) or "/" in text or "\\" in text


def get_dataset(
    dataset: str | Path | DatasetSpec = DEFAULT_DATASET,
    smiles_col: str | None = None,
    label_col: str | None = None,
    label_name: str | None = None,
    label_unit: str | None = None,
    display_name: str | None = None,
) -> DatasetSpec:
    """Resolve a registered name or a CSV path into a :class:`DatasetSpec`.

    Parameters
    ----------
    dataset
        A registered name (see :func:`available`), the path of a CSV file, or a spec.
    smiles_col, label_col, label_name, label_unit, display_name
        ``None`` keeps the registered value (for a path: columns ``smiles`` / ``target``, the label named
        after its column, no unit, the file stem as name).

    Raises
    ------
    FileNotFoundError
        If ``dataset`` is neither registered nor an existing file.
    """
    overrides = {
        k: v
        for k, v in {
            "smiles_col": smiles_col,
            "label_col": label_col,
            "label_name": label_name,
            "label_unit": label_unit,
            "display_name": display_name,
        }.items()
        if v is not None
    }
    if isinstance(dataset, DatasetSpec):
        spec = dataset
    elif str(dataset) in _REGISTRY:
        spec = _REGISTRY[str(dataset)]
    else:
        path = Path(str(dataset)).expanduser()
        if not path.is_file():
            if not _looks_like_path(str(dataset)):
                raise FileNotFoundError(
                    f"dataset {str(dataset)!r} is neither a registered name ({', '.join(available())}) nor a file"
                )
            raise FileNotFoundError(f"{path}: no such data file (dataset parameter)")
        path = path.resolve()
        spec = DatasetSpec(name=slug(path.name.removesuffix(".gz").removesuffix(".csv")), path=path)
    if not overrides:
        return spec
    if "label_col" in overrides and "label_name" not in overrides and spec.label_name == spec.label_col:
        overrides["label_name"] = overrides["label_col"]
    return dataclasses.replace(spec, **overrides)


def is_registered_default(spec: DatasetSpec) -> bool:
    """True when ``spec`` is exactly the registered entry of its name (no column overrides)."""
    return _REGISTRY.get(spec.name) == spec
