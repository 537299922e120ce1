"""Loading and validation of SMILES + label CSV files.

* :func:`load_dataset` reads a CSV with a SMILES column and a numeric label column, canonicalises every
  molecule with RDKit and validates the file, raising :class:`DataValidationError` with the file path,
  the row number(s) and the problem.
* :func:`load_lipophilicity` / :func:`load_external_pool` load the two vendored data files.
* :func:`md5` / :func:`verify_checksums` check that the vendored files are byte-identical to the
  versions documented in ``data/README.md``.

Row numbers are 1-based data rows as in the file, the header excluded (row 1 is the first line after
the header).

Duplicates: the same molecule (same canonical isomeric SMILES) appearing twice with the *same* label is
harmless and kept by default (``allow_duplicates="keep"``); ``"mean"`` collapses such duplicates into
their first row; ``"error"`` rejects any duplicate. Duplicates with *conflicting* labels always raise,
also when ``drop_invalid=True``: a conflict is a data problem a human must resolve, not a parse error.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pandas as pd
from rdkit import Chem, RDLogger

from molft_utils.core.settings import REPO_ROOT

__all__ = [
    "frame_sha256",
    "DATA_DIR",
    "EXPECTED_MD5",
    "EXTERNAL_POOL",
    "LIPOPHILICITY",
    "DataValidationError",
    "canonicalize",
    "load_dataset",
    "load_external_pool",
    "load_lipophilicity",
    "md5",
    "verify_checksums",
]

logger = logging.getLogger(__name__)

DATA_DIR = REPO_ROOT / "data"
LIPOPHILICITY = DATA_DIR / "lipophilicity.csv"
EXTERNAL_POOL = DATA_DIR / "external_pool.csv"
EXPECTED_MD5 = {
    "lipophilicity.csv": "28a5a27de430d85acc162abe864ee994",
    "external_pool.csv": "08fbfe75d00e7ab940055bfda638b748",
}
COLUMNS = ["row", "smiles_raw", "smiles", "smiles_flat", "label"]
_MAX_LISTED = 10
_LABEL_TOL = 1e-9


class DataValidationError(ValueError):
    """A data file is malformed: missing columns, no rows, bad SMILES or labels, conflicting duplicates."""


@contextmanager
def _rdkit_quiet() -> Iterator[None]:
    """Silence RDKit's own error/warning logging to stderr inside the block."""
    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def canonicalize(smiles: str) -> tuple[str, str] | None:
    """Canonicalise one SMILES string.

    Parameters
    ----------
    smiles : str
        Input SMILES.

    Returns
    -------
    tuple of (str, str) or None
        ``(canonical isomeric SMILES, canonical SMILES without stereo)``, or ``None`` when RDKit cannot
        parse the input (or it is empty).
    """
    if not smiles or not smiles.strip():
        return None
    with _rdkit_quiet():
        mol = Chem.MolFromSmiles(smiles.strip())
    if mol is None:
        return None
    return Chem.MolToSmiles(mol), Chem.MolToSmiles(mol, isomericSmiles=False)


def _format_problems(path: Path, problems: list[tuple[int, str]]) -> str:
    listed = "\n".join(f"  row {row}: {msg}" for row, msg in problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{path}: {len(problems)} invalid row(s) (rows are 1-based, header excluded):\n{listed}{more}"


def _parse_label(raw: str) -> tuple[float | None, str | None]:
    """Return ``(value, None)`` or ``(None, problem)``."""
    if raw is None or not str(raw).strip():
        return None, f"missing label {raw!r}"
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None, f"label {raw!r} is not a number"
    if not math.isfinite(value):
        return None, f"label {raw!r} is not finite"
    return value, None


def load_dataset(
    path: str | Path,
    smiles_col: str = "smiles",
    label_col: str = "target",
    drop_invalid: bool = False,
    allow_duplicates: Literal["keep", "mean", "error"] = "keep",
) -> pd.DataFrame:
    """Load and validate a SMILES + label CSV.

    Parameters
    ----------
    path : str or Path
        CSV file.
    smiles_col, label_col : str
        Names of the SMILES and label columns.
    drop_invalid : bool
        If True, rows with unparsable SMILES or missing / non-numeric / non-finite labels are dropped
        and a warning is logged with their count and row numbers; otherwise they raise. Conflicting
        duplicates raise in both cases.
    allow_duplicates : {"keep", "mean", "error"}
        Handling of the same molecule repeated with the same label: keep every row, collapse them into
        the first row (the mean of identical labels), or raise.

    Returns
    -------
    pandas.DataFrame
        Columns ``row`` (1-based data row in the file), ``smiles_raw``, ``smiles`` (canonical isomeric),
        ``smiles_flat`` (canonical, stereo removed) and ``label`` (float), in file order, with a fresh
        ``RangeIndex``.

    Raises
    ------
    DataValidationError
        If the file is empty, lacks a column, or has invalid rows / conflicting duplicates.
    """
    path = Path(path)
    if allow_duplicates not in ("keep", "mean", "error"):
        raise ValueError(f"allow_duplicates must be 'keep', 'mean' or 'error', got {allow_duplicates!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    if path.stat().st_size == 0:
        raise DataValidationError(f"{path}: file is empty (0 bytes)")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(f"{path}: file is empty ({exc})") from exc
    missing = [c for c in (smiles_col, label_col) if c not in raw.columns]
    if missing:
        raise DataValidationError(f"{path}: missing column(s) {missing}; columns found: {list(raw.columns)}")
    if len(raw) == 0:
        raise DataValidationError(f"{path}: file has a header but no data rows")

    records: list[tuple[int, str, str, str, float]] = []
    problems: list[tuple[int, str]] = []
    for i, (smi, lab) in enumerate(zip(raw[smiles_col], raw[label_col], strict=True), start=1):
        canon = canonicalize(smi)
        value, label_problem = _parse_label(lab)
        row_problems = []
        if canon is None:
            row_problems.append(f"unparsable SMILES {smi!r}")
        if label_problem:
            row_problems.append(label_problem)
        if row_problems:
            problems.append((i, "; ".join(row_problems)))
            continue
        records.append((i, smi, canon[0], canon[1], float(value)))

    if problems:
        if not drop_invalid:
            raise DataValidationError(_format_problems(path, problems))
        rows = [r for r, _ in problems]
        shown = ", ".join(map(str, rows[:_MAX_LISTED])) + (" ..." if len(rows) > _MAX_LISTED else "")
        logger.warning("%s: dropped %d invalid row(s): rows %s", path, len(rows), shown)
        if not records:
            raise DataValidationError(_format_problems(path, problems) + "\n(no valid rows left)")

    df = pd.DataFrame.from_records(records, columns=COLUMNS)
    df = _check_duplicates(df, path, allow_duplicates)
    return df.reset_index(drop=True)


def _check_duplicates(df: pd.DataFrame, path: Path, allow_duplicates: str) -> pd.DataFrame:
    """Raise on conflicting duplicates; keep, collapse or reject identical ones."""
    dup_mask = df["smiles"].duplicated(keep=False)
    if not dup_mask.any():
        return df
    conflicts: list[tuple[int, str]] = []
    identical: list[tuple[int, str]] = []
    for smi, group in df[dup_mask].groupby("smiles", sort=False):
        first = group.iloc[0]
        for _, other in group.iloc[1:].iterrows():
            pair = (
                f"rows {first['row']} and {other['row']} are the same molecule {smi!r} "
                f"with labels {float(first['label'])!r} and {float(other['label'])!r}"
            )
            if abs(first["label"] - other["label"]) > _LABEL_TOL:
                conflicts.append((int(other["row"]), f"conflicting duplicate: {pair}"))
            else:
                identical.append((int(other["row"]), f"duplicate: {pair}"))
    if conflicts:
        raise DataValidationError(_format_problems(path, conflicts))
    if identical and allow_duplicates == "error":
        raise DataValidationError(_format_problems(path, identical))
    if identical and allow_duplicates == "mean":
        logger.info("%s: collapsed %d identical duplicate row(s)", path, len(identical))
        return df.drop_duplicates("smiles", keep="first")
    return df


def load_lipophilicity(**kwargs: object) -> pd.DataFrame:
    """Load ``data/lipophilicity.csv`` (columns ``smiles``, ``target``); kwargs go to :func:`load_dataset`."""
    return load_dataset(LIPOPHILICITY, smiles_col="smiles", label_col="target", **kwargs)


def load_external_pool(**kwargs: object) -> pd.DataFrame:
    """Load ``data/external_pool.csv`` (columns ``SMILES``, ``Label``); kwargs go to :func:`load_dataset`."""
    return load_dataset(EXTERNAL_POOL, smiles_col="SMILES", label_col="Label", **kwargs)


def md5(path: str | Path) -> str:
    """Return the hex MD5 digest of a file's bytes."""
    digest = hashlib.md5()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksums(data_dir: str | Path = DATA_DIR) -> dict[str, str]:
    """Check the vendored data files against :data:`EXPECTED_MD5`.

    Parameters
    ----------
    data_dir : str or Path
        Folder holding the files.

    Returns
    -------
    dict
        File name -> MD5 digest, when all match.

    Raises
    ------
    DataValidationError
        Listing every missing or mismatching file with expected and actual digests.
    """
    data_dir = Path(data_dir)
    found: dict[str, str] = {}
    errors: list[str] = []
    for name, expected in EXPECTED_MD5.items():
        path = data_dir / name
        if not path.is_file():
            errors.append(f"{path}: missing")
            continue
        found[name] = md5(path)
        if found[name] != expected:
            errors.append(f"{path}: md5 {found[name]} != expected {expected} (file changed; see data/README.md)")
    if errors:
        raise DataValidationError("checksum verification failed:\n  " + "\n  ".join(errors))
    return found


def frame_sha256(frame: pd.DataFrame, columns: Sequence[str] = ("smiles", "label")) -> str:
    """sha256 of the given columns of ``frame``, row by row (identifies a data part in cache keys)."""
    text = "\n".join("\t".join(repr(v) for v in row) for row in frame[list(columns)].itertuples(index=False))
    return hashlib.sha256(text.encode()).hexdigest()
