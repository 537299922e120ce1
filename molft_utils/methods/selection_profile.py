"""What a selection picked: novelty, label distribution and scaffold coverage of the picks.

The lesson's text about a strategy ("representative", "outliers", "diverse") has to follow these numbers,
not the strategy's name. :func:`describe_picks` measures, for the picks against the already-labelled
molecules (the training split in regime A, the labelled start in a low-data regime):

* **novelty** - mean ECFP4 Tanimoto similarity of each pick to its nearest labelled molecule (lower = more
  novel; Rogers & Hahn 2010 fingerprints, Morgan radius 2, 2048 bits);
* **label distribution** - mean and standard deviation of the picks' labels and the share of picks in each
  tercile of the labelled molecules' labels (a stratified or label-neutral pick has about 1/3 in each);
* **scaffold coverage** - the number of distinct Bemis-Murcko scaffolds among the picks and the share of picks
  whose scaffold does not occur among the labelled molecules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold

from molft_utils.methods.selection import ecfp4_bitvectors

__all__ = ["describe_picks", "murcko_scaffolds", "nearest_similarity"]


def murcko_scaffolds(smiles: Sequence[str]) -> list[str]:
    """Bemis-Murcko scaffold SMILES of each molecule (``""`` for an acyclic one).

    Raises
    ------
    ValueError
        If a SMILES cannot be parsed (the message names its index and the string).
    """
    out = []
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi) if isinstance(smi, str) else None
            if mol is None:
                raise ValueError(f"could not parse SMILES at index {i}: {smi!r}")
            out.append(MurckoScaffold.MurckoScaffoldSmiles(mol=mol))
    finally:
        RDLogger.EnableLog("rdApp.*")
    return out


def nearest_similarity(smiles: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """ECFP4 Tanimoto similarity of each molecule in ``smiles`` to its nearest molecule in ``reference``."""
    if not len(reference):
        raise ValueError("reference is empty")
    ref = ecfp4_bitvectors(reference)
    return np.array([max(DataStructs.BulkTanimotoSimilarity(f, ref)) for f in ecfp4_bitvectors(smiles)])


def describe_picks(
    pick_smiles: Sequence[str],
    pick_labels: Sequence[float] | np.ndarray,
    labelled_smiles: Sequence[str],
    labelled_labels: Sequence[float] | np.ndarray,
) -> dict[str, float]:
    """Novelty, label distribution and scaffold coverage of a set of picks (see the module docstring).

    Returns
    -------
    dict
        ``n``, ``nearest-labelled Tanimoto``, ``label mean``, ``label std``, ``share low / middle / high
        label tercile`` (terciles of ``labelled_labels``), ``distinct scaffolds``, ``share new scaffolds``.
    """
    y = np.asarray(pick_labels, dtype=float)
    if len(y) != len(pick_smiles) or not len(y):
        raise ValueError(f"need one label per pick and at least one pick, got {len(pick_smiles)} / {len(y)}")
    edges = np.quantile(np.asarray(labelled_labels, dtype=float), [1 / 3, 2 / 3])
    tercile = np.searchsorted(edges, y, side="left")
    scaffolds = murcko_scaffolds(pick_smiles)
    known = set(murcko_scaffolds(labelled_smiles))
    return {
        "n": float(len(y)),
        "nearest-labelled Tanimoto": float(nearest_similarity(pick_smiles, labelled_smiles).mean()),
        "label mean": float(y.mean()),
        "label std": float(y.std(ddof=1)) if len(y) > 1 else 0.0,
        "share low label tercile": float(np.mean(tercile == 0)),
        "share middle label tercile": float(np.mean(tercile == 1)),
        "share high label tercile": float(np.mean(tercile == 2)),
        "distinct scaffolds": float(len(set(scaffolds))),
        "share new scaffolds": float(np.mean([s not in known for s in scaffolds])),
    }
