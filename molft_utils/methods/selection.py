"""Choosing a budget of ``n`` external molecules to add to the training set.

The reference study adds 100 molecules from an external pool to the Lipophilicity training set and
compares ways of choosing them. This module implements those strategies plus two classical controls.
Every selector works on the *already leakage-filtered* pool (see :func:`molft_utils.data.splits.remove_overlap`),
returns **positional** indices into that pool, is deterministic for a given ``seed`` and raises
:class:`ValueError` when the budget ``n`` is below 1 or larger than the pool.

Strategies
----------
``random``
    :func:`random_sample` - a uniform draw without replacement; the control every other strategy must beat.
``stratified``
    :func:`stratified_sample` - label-stratified sampling as in the reference study: the pool labels are cut
    into ``bins`` quantile bins (3 → Low / Medium / High logD), the budget is allocated to the bins in
    proportion to their size with largest-remainder (Hamilton) rounding (:func:`allocate`) so that the
    total is exactly ``n``, and each bin is sampled uniformly. The added set then has the label distribution
    of the pool (stratified random sampling, Cochran, *Sampling Techniques*, 3rd ed., 1977, ch. 5).
``kmeans``
    :func:`kmeans_diversity_sample` - the reference study's "diversity sampling": molecule embeddings
    (:func:`embed_smiles`, mean-pooled encoder states) are clustered with k-means (5 clusters, k-means++
    initialisation; Lloyd, 1982; Arthur & Vassilvitskii, 2007), the budget is spread over the clusters in
    proportion to their size with at least one molecule per cluster, and **within each cluster the molecules
    nearest to the centroid are taken**. The reference study does not say how molecules are chosen inside a
    cluster; we take the centroid-nearest ones because (a) diversity comes from covering every cluster,
    while the members closest to a centroid are its most *representative* molecules (the classical
    "cluster representative" choice of cluster-based compound selection), (b) it is deterministic given the
    clustering, and (c) the outlier-seeking alternative (farthest-point sampling) is already what
    ``maxmin`` does - this keeps the two diversity strategies genuinely different instead of redundant.
``maxmin``
    :func:`maxmin_sample` - the MaxMin algorithm (Ashton et al., *Quant. Struct.-Act. Relat.* 21 (2002)
    598-604) via RDKit's ``MaxMinPicker.LazyBitVectorPick`` on ECFP4 bit vectors (Morgan radius 2, 2048 bits)
    with Tanimoto distance: each new pick is the pool molecule whose nearest already-picked neighbour is
    farthest away. Structure-based and model-free.
``top``
    :func:`top_n` - the ``n`` highest scores, e.g. the influence scores (Koh & Liang, ICML 2017) of
    :func:`molft_utils.runs.influence_runs.cached_head_influence`, which notebook 02 computes and stores in the
    run cache (kind ``"influence_scores"``) and notebook 03 reads from there (or computes with the same settings).

Evaluating a selection
----------------------
:func:`merge_additions` appends the chosen pool molecules to the training split (with a ``source`` column);
the fine-tune on training split + picks from the MLM-adapted backbone of notebook 01 is notebook 02's
:func:`molft_utils.runs.influence_runs.retrain_with_additions` (one implementation for both lessons).
:func:`pool_label_noise` compares the pool's labels with the Lipophilicity labels
of the same molecules in the training split - a direct measurement of how noisy the added labels are.

:func:`select` dispatches on the strategy name for the notebook; :data:`SELECTORS` lists the names and the
inputs each needs.

Index order: ``random``, ``stratified`` and ``kmeans`` return sorted indices; ``maxmin`` returns them in
pick order (the first picks are the most spread out); ``top`` returns them best first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import rdFingerprintGenerator
from rdkit.SimDivFilters import MaxMinPicker
from sklearn.cluster import KMeans

from molft_utils.core.registry import Registry
from molft_utils.data.loading import frame_sha256
from molft_utils.training.embedding import embed_smiles  # re-exported: the features diversity sampling clusters

__all__ = [
    "SELECTORS",
    "STRATUM_NAMES",
    "allocate",
    "ecfp4_bitvectors",
    "embed_smiles",
    "frame_sha256",
    "kmeans_diversity_sample",
    "maxmin_sample",
    "merge_additions",
    "pool_label_noise",
    "quantile_bins",
    "random_sample",
    "select",
    "stratified_sample",
    "top_n",
]

logger = logging.getLogger(__name__)

#: Names of the label strata when ``bins=3`` (as in the reference study).
STRATUM_NAMES: tuple[str, ...] = ("Low", "Medium", "High")


def _check_budget(n: int, n_pool: int) -> int:
    """Validate the budget ``n`` against the pool size and return it as ``int``."""
    if isinstance(n, bool) or int(n) != n:
        raise ValueError(f"budget n must be an integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"budget n must be at least 1, got {n}")
    if n > n_pool:
        raise ValueError(f"budget n={n} is larger than the pool ({n_pool} molecules)")
    return n


def allocate(counts: Sequence[int] | np.ndarray, n: int, minimum: int = 0) -> np.ndarray:
    """Split a budget over groups in proportion to their sizes (largest-remainder rounding).

    Each group first gets ``min(minimum, count)`` items; the rest of the budget is shared in proportion
    to the remaining group sizes: every group gets the integer part of its quota and the leftover items go
    to the largest fractional remainders (ties: larger group first, then lower index). The result sums to
    exactly ``n`` and never exceeds a group's size.

    Parameters
    ----------
    counts
        Group sizes (non-negative integers).
    n
        Budget, ``1 <= n <= sum(counts)``.
    minimum
        Guaranteed items per non-empty group; applied only when the budget allows it (``n`` at least the
        sum of the minima), otherwise ignored.

    Returns
    -------
    np.ndarray
        Integer allocation per group, same length as ``counts``.

    Raises
    ------
    ValueError
        For negative counts or a budget outside ``[1, sum(counts)]``.

    Examples
    --------
    >>> allocate([50, 30, 20], 10).tolist()
    [5, 3, 2]
    >>> allocate([5, 3, 2], 5).tolist()  # quotas 2.5, 1.5, 1.0: the tie on .5 goes to the larger group
    [3, 1, 1]
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"counts must be a 1-D sequence of non-negative integers, got {counts.tolist()}")
    n = _check_budget(n, int(counts.sum()))
    base = np.minimum(counts, minimum) if minimum > 0 else np.zeros_like(counts)
    if base.sum() > n:
        base = np.zeros_like(counts)
    rest = counts - base
    remaining = n - int(base.sum())
    if remaining == 0:
        return base
    quota = rest * remaining / rest.sum()
    out = np.floor(quota).astype(np.int64)
    left = remaining - int(out.sum())
    if left:
        # largest remainder first; ties -> larger group, then lower index (lexsort: last key is primary)
        order = np.lexsort((np.arange(len(counts)), -rest, -(quota - out)))
        out[order[:left]] += 1
    return base + out


def quantile_bins(labels: Sequence[float] | np.ndarray, bins: int = 3) -> np.ndarray:
    """Assign each label to one of ``bins`` quantile bins (0 = lowest).

    Bin edges are the ``k / bins`` quantiles of ``labels``; a label equal to an edge goes to the lower bin
    (right-closed intervals, like :func:`pandas.qcut`). With many tied labels some bins can be empty.

    Parameters
    ----------
    labels
        Pool labels (finite numbers).
    bins
        Number of bins, at least 1.

    Returns
    -------
    np.ndarray
        Bin index per label, integers in ``[0, bins)``.
    """
    y = np.asarray(labels, dtype=float)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("labels contain NaN or infinite values")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    inner = np.quantile(y, np.arange(1, bins) / bins)
    return np.searchsorted(inner, y, side="left")


def random_sample(n_pool: int, n: int, seed: int = 0) -> np.ndarray:
    """Uniform random sample of ``n`` of ``n_pool`` positions, without replacement (sorted)."""
    n = _check_budget(n, n_pool)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_pool, size=n, replace=False))


def stratified_sample(labels: Sequence[float] | np.ndarray, n: int, bins: int = 3, seed: int = 0) -> np.ndarray:
    """Label-stratified sample: quantile bins, proportional allocation, uniform draw per bin.

    Parameters
    ----------
    labels
        Labels of the pool molecules.
    n
        Budget.
    bins
        Number of quantile bins (3 = Low / Medium / High, :data:`STRATUM_NAMES`).
    seed
        Seed of the within-bin draws.

    Returns
    -------
    np.ndarray
        ``n`` sorted positions into the pool.
    """
    strata = quantile_bins(labels, bins)
    n = _check_budget(n, len(strata))
    take = allocate(np.bincount(strata, minlength=bins), n)
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(strata == b), size=k, replace=False) for b, k in enumerate(take) if k]
    logger.info("stratified sample: %s per bin", take.tolist())
    return np.sort(np.concatenate(picks))


def kmeans_diversity_sample(embeddings: np.ndarray, n: int, n_clusters: int = 5, seed: int = 0) -> np.ndarray:
    """Cluster the embeddings with k-means and take the centroid-nearest molecules of every cluster.

    The budget is spread over the clusters in proportion to their size (largest-remainder rounding) with at
    least one molecule per cluster when ``n >= n_clusters``; inside a cluster the members nearest to its
    centroid (Euclidean, in embedding space) are chosen - see the module docstring for why.

    Parameters
    ----------
    embeddings
        Array ``(n_pool, dim)``, e.g. from :func:`embed_smiles`.
    n
        Budget.
    n_clusters
        Number of k-means clusters (5 in the reference study); reduced to ``n_pool`` for tiny pools.
    seed
        ``random_state`` of :class:`sklearn.cluster.KMeans`.

    Returns
    -------
    np.ndarray
        ``n`` sorted positions into the pool.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n_pool, dim), got shape {x.shape}")
    n = _check_budget(n, len(x))
    k = min(n_clusters, len(x))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    labels = km.labels_
    take = allocate(np.bincount(labels, minlength=k), n, minimum=1)
    dist = np.linalg.norm(x - km.cluster_centers_[labels], axis=1)
    picks = []
    for c, m in enumerate(take):
        members = np.flatnonzero(labels == c)
        order = np.lexsort((members, dist[members]))  # nearest first, ties by index
        picks.append(members[order[:m]])
    logger.info("k-means diversity sample: %s per cluster", take.tolist())
    return np.sort(np.concatenate(picks))


def ecfp4_bitvectors(smiles: Sequence[str], n_bits: int = 2048) -> list[DataStructs.ExplicitBitVect]:
    """ECFP4 (Morgan radius 2) bit vectors as RDKit ``ExplicitBitVect`` objects.

    Raises
    ------
    ValueError
        If a SMILES cannot be parsed (the message names its index and the string).
    """
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=n_bits)
    fps = []
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi) if isinstance(smi, str) else None
            if mol is None:
                raise ValueError(f"could not parse SMILES at index {i}: {smi!r}")
            fps.append(gen.GetFingerprint(mol))
    finally:
        RDLogger.EnableLog("rdApp.*")
    return fps


def maxmin_sample(
    smiles: Sequence[str], n: int, seed: int = 0, reference: Sequence[str] | None = None
) -> np.ndarray:
    """MaxMin diversity picking on ECFP4 Tanimoto distance (RDKit ``LazyBitVectorPick``).

    Parameters
    ----------
    smiles
        Pool SMILES.
    n
        Budget.
    seed
        Seed of RDKit's random first pick (must be >= 0; RDKit treats -1 as "unseeded").
    reference
        Already-labelled molecules (e.g. the training set). When given they seed the pick list
        (RDKit's ``firstPicks``), so every pick is the pool molecule farthest from *everything labelled
        so far* - the active-learning form of MaxMin - and no random first pick is made. ``None``
        (default): MaxMin over the pool alone.

    Returns
    -------
    np.ndarray
        ``n`` positions into the pool, in pick order.
    """
    n = _check_budget(n, len(smiles))
    if seed < 0:
        raise ValueError(f"seed must be non-negative for a reproducible MaxMin pick, got {seed}")
    fps = ecfp4_bitvectors(smiles)
    if not reference:
        picks = MaxMinPicker().LazyBitVectorPick(fps, len(fps), n, seed=int(seed))
        return np.asarray(list(picks), dtype=np.int64)
    ref = ecfp4_bitvectors(reference)
    first = list(range(len(ref)))
    picks = MaxMinPicker().LazyBitVectorPick(ref + fps, len(ref) + len(fps), len(ref) + n, first, int(seed))
    out = np.asarray(list(picks)[len(ref):], dtype=np.int64) - len(ref)
    if len(out) != n or (out < 0).any():
        raise RuntimeError(f"MaxMin with {len(ref)} reference molecules returned unexpected picks")
    return out


def top_n(scores: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` highest scores, best first; equal scores keep the lower index first.

    NaN scores are rejected (they would silently sort to one end).
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n = _check_budget(n, len(s))
    return np.argsort(-s, kind="stable")[:n]


class Selector(NamedTuple):
    """A selection strategy: ``func(value, n[, seed=...], **options) -> positions`` and the input it reads.

    ``needs`` is one of ``"n_pool"``, ``"labels"``, ``"embeddings"``, ``"smiles"``, ``"scores"`` (the keyword
    arguments of :func:`select`); ``seeded`` says whether ``func`` takes ``seed``.
    """

    func: Callable[..., np.ndarray]
    needs: str
    seeded: bool = True


#: Strategy name → :class:`Selector`; :func:`select` dispatches on it. A new strategy is one registration
#: (plus its test)::
#:
#:     SELECTORS.register("my_strategy", Selector(my_sample, "embeddings"))
#:
#: after which ``select("my_strategy", n, embeddings=...)`` runs it and notebook 03 can list it.
SELECTORS: Registry[Selector] = Registry("selection strategy")
SELECTORS.register("random", Selector(random_sample, "n_pool"))
SELECTORS.register("stratified", Selector(stratified_sample, "labels"))
SELECTORS.register("kmeans", Selector(kmeans_diversity_sample, "embeddings"))
SELECTORS.register("maxmin", Selector(maxmin_sample, "smiles"))
SELECTORS.register("top", Selector(top_n, "scores", seeded=False))


def select(
    strategy: str,
    n: int = 100,
    *,
    seed: int = 0,
    labels: Sequence[float] | np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    smiles: Sequence[str] | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    n_pool: int | None = None,
    **options: Any,
) -> np.ndarray:
    """Run the selector named ``strategy`` with the input it needs.

    Parameters
    ----------
    strategy
        One of :data:`SELECTORS`: ``"random"``, ``"stratified"``, ``"kmeans"``, ``"maxmin"``, ``"top"``.
    n
        Budget (default 100, as in the reference study).
    seed
        Seed (ignored by ``"top"``, which is deterministic).
    labels, embeddings, smiles, scores
        Pool inputs; only the one the strategy needs must be given (``stratified`` → labels, ``kmeans`` →
        embeddings, ``maxmin`` → smiles, ``top`` → scores).
    n_pool
        Pool size for ``"random"``; inferred from any other given input when omitted.
    **options
        Extra keyword arguments for the selector (``bins`` for stratified, ``n_clusters`` for kmeans).

    Returns
    -------
    np.ndarray
        Positions into the pool.
    """
    func, needs, seeded = SELECTORS[strategy]
    given = {"labels": labels, "embeddings": embeddings, "smiles": smiles, "scores": scores}
    if needs == "n_pool" and n_pool is None:
        sizes = {len(v) for v in given.values() if v is not None}
        if len(sizes) != 1:
            raise ValueError("strategy 'random' needs n_pool (or exactly one pool input to infer it from)")
        n_pool = sizes.pop()
    given["n_pool"] = n_pool
    value = given[needs]
    if value is None:
        raise ValueError(f"strategy {strategy!r} needs {needs}=")
    return func(value, n, seed=seed, **options) if seeded else func(value, n, **options)


# --------------------------------------------------------------------------------------------
# the training split plus a selection; label noise of the pool
# --------------------------------------------------------------------------------------------


def merge_additions(train: pd.DataFrame, pool: pd.DataFrame, positions: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """The training split with the pool rows at ``positions`` appended; column ``source`` says which is which.

    Raises
    ------
    ValueError
        For repeated or out-of-range positions.
    """
    pos = np.asarray(positions, dtype=np.int64)
    if len(np.unique(pos)) != len(pos):
        raise ValueError("positions contain duplicates")
    if len(pos) and (pos.min() < 0 or pos.max() >= len(pool)):
        raise ValueError(f"positions out of range for a pool of {len(pool)} molecules")
    added = pool.iloc[pos].assign(source="pool")
    return pd.concat([train.assign(source="train"), added], ignore_index=True)


def pool_label_noise(pool: pd.DataFrame, reference: pd.DataFrame, column: str = "smiles_flat") -> pd.DataFrame:
    """Pool molecules that also occur in ``reference`` (matched on ``column``), with both labels.

    Use it with the training split: the leakage filter removed validation/test overlaps from the pool, but
    overlaps with the training split remain and measure how far the pool's labels are from Lipophilicity's.

    Returns
    -------
    pd.DataFrame
        Columns ``smiles``, ``pool_label``, ``reference_label`` (mean over duplicates in ``reference``) and
        ``difference`` (pool − reference); one row per matching pool molecule.
    """
    ref = reference.groupby(column, sort=False)["label"].mean()
    hits = pool[pool[column].isin(ref.index)]
    out = pd.DataFrame(
        {
            "smiles": hits["smiles"].to_numpy(),
            "pool_label": hits["label"].to_numpy(dtype=float),
            "reference_label": ref.loc[hits[column]].to_numpy(dtype=float),
        }
    )
    out["difference"] = out["pool_label"] - out["reference_label"]
    return out
