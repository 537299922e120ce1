"""RDKit 2D descriptors: features for a classical baseline and targets for multi-task pretraining.

MolBERT (Fabian et al., 2020) and ChemBERTa-2 (Ahmad et al., 2022) teach a SMILES encoder chemistry
by asking it to predict standardised RDKit descriptors from its pooled representation (PhysChemPred /
multi-task regression, MTR); Sultan et al. (2025, arXiv 2503.03360) use the same objective to adapt a
pretrained transformer to a task's own molecules. The descriptors are computed from structures only,
never from labels.

* :data:`DESCRIPTOR_NAMES` - RDKit's 2D descriptor list without five that are slow or numerically
  unstable (``qed``, ``Ipc``, ``AvgIpc``, ``SPS``, ``BertzCT``): 212 descriptors.
* :func:`rdkit_descriptors` - an ``(n, 212)`` float32 array, computed in parallel, cached on disk
  in chunks so that an interrupted computation resumes.
* :class:`DescriptorScaler` - robust standardisation (clip to the 0.5 / 99.5 % quantiles of the
  fitting set, then z-score; near-constant descriptors dropped), saved as JSON next to a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors

__all__ = ["DESCRIPTOR_NAMES", "EXCLUDED", "DescriptorScaler", "descriptor_row", "rdkit_descriptors"]

log = logging.getLogger(__name__)

#: RDKit descriptors left out: slow (``qed``, ``SPS``, ``BertzCT``) or overflowing (``Ipc``, ``AvgIpc``).
EXCLUDED = frozenset({"qed", "Ipc", "AvgIpc", "SPS", "BertzCT"})
_FUNCTIONS = [(name, fn) for name, fn in Descriptors.descList if name not in EXCLUDED]
#: Names of the computed descriptors, in column order.
DESCRIPTOR_NAMES: tuple[str, ...] = tuple(name for name, _ in _FUNCTIONS)
_CHUNK = 10_000


def descriptor_row(smiles: str) -> np.ndarray:
    """The descriptors of one molecule (float32; NaN where RDKit fails or the SMILES does not parse)."""
    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None
    out = np.full(len(_FUNCTIONS), np.nan, dtype=np.float32)
    if mol is None:
        return out
    for j, (_, fn) in enumerate(_FUNCTIONS):
        try:
            out[j] = fn(mol)
        except Exception:  # noqa: BLE001 - a descriptor RDKit cannot compute stays NaN
            pass
    with np.errstate(over="ignore", invalid="ignore"):
        out[~np.isfinite(out)] = np.nan
    return out


def _rows(smiles: Sequence[str], workers: int) -> np.ndarray:
    if workers > 1 and len(smiles) > 200:
        with Pool(workers) as pool:
            rows = pool.map(descriptor_row, smiles, chunksize=256)
    else:
        rows = [descriptor_row(s) for s in smiles]
    return np.stack(rows) if rows else np.zeros((0, len(_FUNCTIONS)), dtype=np.float32)


def rdkit_descriptors(
    smiles: Sequence[str], workers: int = 1, cache_dir: str | Path | None = None, progress: bool = False
) -> np.ndarray:
    """RDKit 2D descriptors of ``smiles``, shape ``(len(smiles), len(DESCRIPTOR_NAMES))``.

    Parameters
    ----------
    smiles
        SMILES strings; one that does not parse gives a row of NaN (the loaders reject such rows earlier).
    workers
        Processes for the computation.
    cache_dir
        If given, results are stored there in chunks of 10,000 molecules keyed by the SMILES and the
        descriptor list, so a second call (or a resumed one) reads instead of computing.
    progress
        Log one line per computed chunk.
    """
    smiles = list(smiles)
    if cache_dir is None:
        return _rows(smiles, workers)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    names_digest = hashlib.sha256("\n".join(DESCRIPTOR_NAMES).encode()).hexdigest()[:12]
    parts = []
    for start in range(0, len(smiles), _CHUNK):
        chunk = smiles[start : start + _CHUNK]
        digest = hashlib.sha256("\n".join(chunk).encode()).hexdigest()[:20]
        path = cache / f"desc-{names_digest}-{digest}.npy"
        if path.exists():
            parts.append(np.load(path))
            continue
        rows = _rows(chunk, workers)
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, rows)
        tmp.replace(path)
        parts.append(rows)
        if progress:
            log.info("descriptors: %d / %d molecules", min(start + _CHUNK, len(smiles)), len(smiles))
    return np.concatenate(parts) if parts else _rows([], 1)


@dataclass
class DescriptorScaler:
    """Robust standardisation of descriptor columns.

    Each kept column is clipped to ``[low, high]`` (quantiles of the fitting set), then z-scored with
    the clipped mean and standard deviation; NaN becomes 0 (the mean) after scaling. Columns whose
    clipped standard deviation is below ``1e-6`` are dropped.
    """

    names: list[str]
    low: list[float]
    high: list[float]
    mean: list[float]
    std: list[float]
    quantile: float = 0.005

    @classmethod
    def fit(
        cls, values: np.ndarray, names: Sequence[str] = DESCRIPTOR_NAMES, quantile: float = 0.005
    ) -> DescriptorScaler:
        """Fit on ``values`` of shape ``(n, len(names))``."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(names):
            raise ValueError(f"expected an array of shape (n, {len(names)}), got {values.shape}")
        low = np.nanquantile(values, quantile, axis=0)
        high = np.nanquantile(values, 1 - quantile, axis=0)
        clipped = np.clip(values, low, high)
        mean, std = np.nanmean(clipped, axis=0), np.nanstd(clipped, axis=0)
        keep = np.isfinite(std) & (std > 1e-6)
        return cls(
            [n for n, k in zip(names, keep, strict=True) if k],
            low[keep].tolist(),
            high[keep].tolist(),
            mean[keep].tolist(),
            std[keep].tolist(),
            quantile,
        )

    def transform(self, values: np.ndarray, names: Sequence[str] = DESCRIPTOR_NAMES) -> np.ndarray:
        """Standardised kept columns, float32, NaN replaced by 0."""
        index = {n: j for j, n in enumerate(names)}
        missing = [n for n in self.names if n not in index]
        if missing:
            raise ValueError(f"descriptor columns missing from the input: {missing[:5]}")
        cols = np.asarray(values, dtype=np.float64)[:, [index[n] for n in self.names]]
        z = (np.clip(cols, self.low, self.high) - np.asarray(self.mean)) / np.asarray(self.std)
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> DescriptorScaler:
        return cls(**json.loads(Path(path).read_text()))
