"""Fixed, verified train/validation/test splits and leakage checks.

* :func:`random_split` / :func:`scaffold_split` make index splits (deterministic given their arguments).
* :class:`Split` stores a split with fingerprints of the data it indexes (file MD5 and a SHA-256 of the
  canonical SMILES in file order); :meth:`Split.load` refuses a split whose data changed.
* :func:`get_split` loads ``{name}_{kind}_seed{seed}.json`` (random) or ``{name}_scaffold.json`` (scaffold)
  from the committed ``data/splits/`` (read only) or, for any other data set or seed, from a run-time folder
  under the model cache, creating and saving it there on first use (never into the tracked ``data/``).
  The scaffold split is the deterministic DeepChem-style one for *every* seed: the seed of a run then
  only varies model initialisation and data order, so scaffold results across seeds share one test set.
* :func:`overlap_with` / :func:`leakage_report` / :func:`remove_overlap` find and drop molecules of an
  external pool that also occur in (parts of) the reference data, exactly or ignoring stereochemistry.

Run ``python -m molft_utils.data.splits`` to (re)generate the committed lipophilicity split files (the only
command that writes into ``data/splits/``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import RDLogger
from rdkit.Chem.Scaffolds.MurckoScaffold import MurckoScaffoldSmiles

from molft_utils.core.settings import get_settings
from molft_utils.data.loading import DATA_DIR, md5

__all__ = [
    "PARTS",
    "SPLIT_DIR",
    "Split",
    "default_split_dir",
    "get_split",
    "locate_split",
    "leakage_report",
    "murcko_scaffold",
    "overlap_with",
    "random_split",
    "remove_overlap",
    "scaffold_split",
    "smiles_sha256",
]

logger = logging.getLogger(__name__)

SPLIT_DIR = DATA_DIR / "splits"
PARTS = ("train", "valid", "test")
REPORT_COLUMNS = ["row", "smiles", "label", "part", "match", "reference_label"]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def random_split(n: int, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, list[int]]:
    """Shuffle ``range(n)`` with ``numpy.random.default_rng(seed)`` and cut it into three parts.

    Parameters
    ----------
    n : int
        Number of rows.
    seed : int
        RNG seed; the same ``(n, seed, fractions)`` always gives the same split.
    fractions : sequence of 3 floats
        Train / valid / test fractions (valid and test sizes are rounded, train takes the rest).

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}``, each sorted ascending.
    """
    _, f_valid, f_test = _check_fractions(fractions)
    perm = np.random.default_rng(seed).permutation(n)
    n_valid, n_test = round(f_valid * n), round(f_test * n)
    n_train = n - n_valid - n_test
    cuts = {"train": perm[:n_train], "valid": perm[n_train : n_train + n_valid], "test": perm[n_train + n_valid :]}
    return {k: sorted(int(i) for i in v) for k, v in cuts.items()}


def murcko_scaffold(smiles: str) -> str:
    """Bemis–Murcko scaffold SMILES without chirality (``""`` for acyclic molecules)."""
    RDLogger.DisableLog("rdApp.*")
    try:
        return MurckoScaffoldSmiles(smiles=smiles, includeChirality=False)
    finally:
        RDLogger.EnableLog("rdApp.*")


def scaffold_split(
    smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int | None = None
) -> dict[str, list[int]]:
    """Split by Bemis–Murcko scaffold so no scaffold appears in two parts.

    Parameters
    ----------
    smiles : sequence of str
        SMILES in row order.
    fractions : sequence of 3 floats
        Target train / valid / test fractions.
    seed : int or None
        ``None``: DeepChem style, scaffold groups sorted largest first (ties by first row) and each put
        into train until it would overflow, then valid, then test. An int: balanced-scaffold style
        (chemprop), groups larger than half the test size go first, the rest follow shuffled, each
        placed into the first part it still fits in (test otherwise).

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}``, each sorted ascending.
    """
    f_train, f_valid, f_test = _check_fractions(fractions)
    n = len(smiles)
    groups_by_scaffold: dict[str, list[int]] = defaultdict(list)
    for i, smi in enumerate(smiles):
        groups_by_scaffold[murcko_scaffold(smi)].append(i)
    groups = list(groups_by_scaffold.values())
    train_cut, valid_cut = f_train * n, (f_train + f_valid) * n
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    if seed is None:
        groups.sort(key=lambda g: (len(g), -g[0]), reverse=True)
        for g in groups:
            if len(parts["train"]) + len(g) > train_cut:
                if len(parts["train"]) + len(parts["valid"]) + len(g) > valid_cut:
                    parts["test"] += g
                else:
                    parts["valid"] += g
            else:
                parts["train"] += g
    else:
        rng = np.random.default_rng(seed)
        n_train, n_valid = f_train * n, f_valid * n
        big = [g for g in groups if len(g) > f_test * n / 2]
        small = [g for g in groups if len(g) <= f_test * n / 2]
        rng.shuffle(big)
        rng.shuffle(small)
        for g in big + small:
            if len(parts["train"]) + len(g) <= n_train:
                parts["train"] += g
            elif len(parts["valid"]) + len(g) <= n_valid:
                parts["valid"] += g
            else:
                parts["test"] += g
    return {k: sorted(v) for k, v in parts.items()}


def smiles_sha256(smiles: Sequence[str]) -> str:
    """SHA-256 of ``"\\n".join(smiles)`` (canonical SMILES in file order): a fingerprint of the rows."""
    return hashlib.sha256("\n".join(smiles).encode("utf-8")).hexdigest()


@dataclass
class Split:
    """A train/valid/test split of a data set, with fingerprints of that data.

    Attributes
    ----------
    name : str
        Data set name, e.g. ``"lipophilicity"``.
    kind : str
        ``"random"`` or ``"scaffold"``.
    seed : int or None
        Seed used to make it (``None`` for the deterministic scaffold split).
    train, valid, test : list of int
        Positional row indices into the DataFrame from :func:`molft_utils.data.loading.load_dataset`.
    data_md5 : str
        MD5 of the data file (``""`` if unknown).
    smiles_sha256 : str
        :func:`smiles_sha256` of ``df["smiles"]``.
    n_rows : int
        Number of rows of the data set.
    """

    name: str
    kind: str
    seed: int | None
    train: list[int]
    valid: list[int]
    test: list[int]
    data_md5: str
    smiles_sha256: str
    n_rows: int

    def parts(self) -> dict[str, list[int]]:
        """Return ``{"train": ..., "valid": ..., "test": ...}``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def frames(self, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Return the three parts of ``df`` (positional indexing)."""
        return {k: df.iloc[v].reset_index(drop=True) for k, v in self.parts().items()}

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (parent folders created) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")
        return path

    def verify(self, df: pd.DataFrame, data_path: str | Path | None = None, source: str = "split") -> None:
        """Check the split against ``df`` (and the file MD5 when ``data_path`` is given).

        Raises
        ------
        ValueError
            If row count, index range, disjointness, coverage, SMILES hash or file MD5 disagree.
        """
        where = f"{source} ({self.name}/{self.kind}, seed={self.seed})"
        if len(df) != self.n_rows:
            raise ValueError(f"{where}: made for {self.n_rows} rows but the data has {len(df)}; the data changed")
        all_idx = self.train + self.valid + self.test
        bad = [i for i in all_idx if not 0 <= i < self.n_rows]
        if bad:
            raise ValueError(f"{where}: indices out of range [0, {self.n_rows}): {bad[:10]}")
        if len(set(all_idx)) != len(all_idx):
            raise ValueError(f"{where}: parts overlap or contain repeated indices")
        if len(all_idx) != self.n_rows:
            raise ValueError(f"{where}: parts cover {len(all_idx)} of {self.n_rows} rows")
        actual = smiles_sha256(df["smiles"].tolist())
        if actual != self.smiles_sha256:
            raise ValueError(
                f"{where}: SMILES hash {actual[:12]}… != stored {self.smiles_sha256[:12]}…; the data changed "
                "(rows edited or reordered), so these indices no longer point at the same molecules"
            )
        if data_path is not None and self.data_md5:
            actual_md5 = md5(data_path)
            if actual_md5 != self.data_md5:
                raise ValueError(f"{where}: {data_path} md5 {actual_md5} != stored {self.data_md5}; the data changed")

    @classmethod
    def load(cls, path: str | Path, df: pd.DataFrame, data_path: str | Path | None = None) -> Split:
        """Read a JSON split and :meth:`verify` it against ``df``.

        Parameters
        ----------
        path : str or Path
            JSON file written by :meth:`save`.
        df : pandas.DataFrame
            The data the split indexes (from :func:`molft_utils.data.loading.load_dataset`).
        data_path : str or Path, optional
            The data file, to also check its MD5.
        """
        path = Path(path)
        split = cls(**json.loads(path.read_text(encoding="utf-8")))
        split.verify(df, data_path=data_path, source=str(path))
        return split


def make_split(
    df: pd.DataFrame,
    kind: str = "random",
    seed: int | None = 0,
    name: str = "lipophilicity",
    data_path: str | Path | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> Split:
    """Build a :class:`Split` of ``df`` (``kind`` "random" or "scaffold"; see :func:`get_split`)."""
    if kind == "random":
        if seed is None:
            raise ValueError("random split needs an integer seed")
        parts = random_split(len(df), seed, fractions)
    elif kind == "scaffold":
        parts = scaffold_split(df["smiles"].tolist(), fractions, seed)
    else:
        raise ValueError(f"kind must be 'random' or 'scaffold', got {kind!r}")
    return Split(
        name=name,
        kind=kind,
        seed=seed,
        **parts,
        data_md5=md5(data_path) if data_path is not None and Path(data_path).is_file() else "",
        smiles_sha256=smiles_sha256(df["smiles"].tolist()),
        n_rows=len(df),
    )


def split_path(kind: str, seed: int | None, name: str = "lipophilicity", split_dir: str | Path = SPLIT_DIR) -> Path:
    """File name of a split: ``{name}_{kind}_seed{seed}.json`` or ``{name}_scaffold.json``."""
    if kind == "scaffold" and seed is None:
        return Path(split_dir) / f"{name}_scaffold.json"
    return Path(split_dir) / f"{name}_{kind}_seed{seed}.json"


def default_split_dir(name: str) -> Path:
    """Run-time folder for split files made on demand: ``$MOLFT_CACHE/splits/<name>`` (or ``<repo>/cache``)."""
    root = get_settings().cache_dir
    return root / "splits" / name


def locate_split(
    kind: str,
    seed: int | None,
    name: str = "lipophilicity",
    split_dir: str | Path | None = None,
    committed_dir: str | Path | None = SPLIT_DIR,
) -> Path:
    """Where the split file for ``(name, kind, seed)`` is read from or will be written to.

    The committed file in ``committed_dir`` (``data/splits/``) when it exists, else the file in
    ``split_dir`` (default :func:`default_split_dir`).
    """
    if kind == "scaffold":
        seed = None
    if committed_dir is not None:
        committed = split_path(kind, seed, name, committed_dir)
        if committed.is_file():
            return committed
    return split_path(kind, seed, name, split_dir if split_dir is not None else default_split_dir(name))


def get_split(
    df: pd.DataFrame,
    kind: str = "random",
    seed: int | None = 0,
    name: str = "lipophilicity",
    split_dir: str | Path | None = None,
    data_path: str | Path | None = None,
    committed_dir: str | Path | None = SPLIT_DIR,
) -> Split:
    """Load the saved split for ``(name, kind, seed)``, verified against ``df``; create and save it if absent.

    A committed split (``committed_dir``, default ``data/splits/``) is only ever read. A split that is not
    committed is made on first use and saved with the data's checksums (file MD5, SMILES SHA-256) in
    ``split_dir`` (default :func:`default_split_dir`: under the model cache, never in the tracked ``data/``),
    then reused and verified on every later call.

    The scaffold split ignores ``seed``: every seed gets the deterministic DeepChem-style split stored in
    ``{name}_scaffold.json``. ``data_path`` defaults to ``DATA_DIR / f"{name}.csv"`` when that file exists
    (then its MD5 is stored and checked too).
    """
    if kind == "scaffold":
        seed = None
    if data_path is None and (DATA_DIR / f"{name}.csv").is_file():
        data_path = DATA_DIR / f"{name}.csv"
    path = locate_split(kind, seed, name, split_dir, committed_dir)
    if path.is_file():
        return Split.load(path, df, data_path=data_path)
    split = make_split(df, kind, seed, name, data_path)
    split.save(path)
    logger.info(
        "created split %s (train/valid/test = %d/%d/%d)", path, len(split.train), len(split.valid), len(split.test)
    )
    return split


def overlap_with(pool_df: pd.DataFrame, reference_df: pd.DataFrame, reference_name: str) -> pd.DataFrame:
    """Pool rows whose molecule also occurs in ``reference_df``.

    Parameters
    ----------
    pool_df, reference_df : pandas.DataFrame
        Frames from :func:`molft_utils.data.loading.load_dataset`.
    reference_name : str
        Written to the ``part`` column (e.g. ``"test"``).

    Returns
    -------
    pandas.DataFrame
        Columns ``row`` (pool file row), ``smiles``, ``label``, ``part``, ``match`` (``"exact"``: same
        canonical isomeric SMILES; ``"stereo-free"``: only the stereo-free SMILES agree) and
        ``reference_label`` (label of the first matching reference row).
    """
    exact = dict(zip(reference_df["smiles"], reference_df["label"], strict=True))
    flat: dict[str, float] = {}
    for smi, lab in zip(reference_df["smiles_flat"], reference_df["label"], strict=True):
        flat.setdefault(smi, lab)
    rows = []
    for rec in pool_df.itertuples(index=False):
        if rec.smiles in exact:
            rows.append((rec.row, rec.smiles, rec.label, reference_name, "exact", exact[rec.smiles]))
        elif rec.smiles_flat in flat:
            rows.append((rec.row, rec.smiles, rec.label, reference_name, "stereo-free", flat[rec.smiles_flat]))
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def leakage_report(pool_df: pd.DataFrame, parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate :func:`overlap_with` over named reference parts (one report row per pool row and part)."""
    reports = [overlap_with(pool_df, ref, name) for name, ref in parts.items()]
    return pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(columns=REPORT_COLUMNS)


def remove_overlap(pool_df: pd.DataFrame, report: pd.DataFrame) -> pd.DataFrame:
    """Return ``pool_df`` without the rows (by ``row`` number) listed in ``report``."""
    kept = pool_df[~pool_df["row"].isin(set(report["row"]))].reset_index(drop=True)
    logger.info("removed %d overlapping pool row(s), %d left", len(pool_df) - len(kept), len(kept))
    return kept


def main() -> None:
    """Create (or verify) the lipophilicity split files: random seeds 0, 1, 2 and the scaffold split."""
    from molft_utils.data.loading import load_lipophilicity

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    df = load_lipophilicity()
    for seed in (0, 1, 2):
        s = get_split(df, "random", seed, split_dir=SPLIT_DIR)
        logger.info("random seed %d: %d/%d/%d", seed, len(s.train), len(s.valid), len(s.test))
    s = get_split(df, "scaffold", split_dir=SPLIT_DIR)
    logger.info("scaffold: %d/%d/%d", len(s.train), len(s.valid), len(s.test))


if __name__ == "__main__":
    main()
