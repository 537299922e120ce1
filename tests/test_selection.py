"""Tests for molft_utils.methods.selection (budgeted choice of external molecules)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_SMILES
from rdkit import DataStructs

from molft_utils.data.loading import load_external_pool
from molft_utils.methods.selection import (
    SELECTORS,
    allocate,
    ecfp4_bitvectors,
    embed_smiles,
    kmeans_diversity_sample,
    maxmin_sample,
    quantile_bins,
    random_sample,
    select,
    stratified_sample,
    top_n,
)
from molft_utils.models.backbone import RegressionModel


@pytest.fixture(scope="module")
def pool():
    return load_external_pool()


def _blobs(sizes=(40, 25, 15, 12, 8), dim=6, seed=0):
    """Well-separated Gaussian blobs; returns points and their true blob id."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[: len(sizes)] * 50.0
    x = np.concatenate([c + rng.normal(size=(s, dim)) for c, s in zip(centres, sizes, strict=True)])
    y = np.repeat(np.arange(len(sizes)), sizes)
    return x, y


def _mean_pairwise_distance(smiles, idx):
    fps = ecfp4_bitvectors([smiles[i] for i in idx])
    d = [1 - s for i in range(1, len(fps)) for s in DataStructs.BulkTanimotoSimilarity(fps[i], fps[:i])]
    return float(np.mean(d))


# --- allocate ------------------------------------------------------------------------------------


def test_allocate_hand_cases():
    assert allocate([50, 30, 20], 10).tolist() == [5, 3, 2]
    # quotas 3.6, 3.6, 2.8 -> floors 3, 3, 2 (8); the two leftover go to remainders .8, then .6 (lower index)
    assert allocate([36, 36, 28], 10).tolist() == [4, 3, 3]
    # quotas 2.5, 1.5, 1.0: the .5 tie is broken towards the larger group
    assert allocate([5, 3, 2], 5).tolist() == [3, 1, 1]
    assert allocate([101, 99, 100], 100).tolist() == [34, 33, 33]
    assert allocate([0, 7, 3], 10).tolist() == [0, 7, 3]


def test_allocate_minimum_and_exact_total():
    # proportional alone would give the small group nothing
    assert allocate([97, 2, 1], 5).tolist() == [5, 0, 0]
    got = allocate([97, 2, 1], 5, minimum=1)
    assert got.tolist() == [3, 1, 1]
    # minimum ignored when the budget cannot cover it
    assert allocate([97, 2, 1], 2, minimum=1).sum() == 2
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 30, size=rng.integers(1, 7))
        if counts.sum() == 0:
            continue
        n = int(rng.integers(1, counts.sum() + 1))
        a = allocate(counts, n, minimum=int(rng.integers(0, 2)))
        assert a.sum() == n
        assert (a <= counts).all() and (a >= 0).all()


def test_allocate_errors():
    with pytest.raises(ValueError, match="at least 1"):
        allocate([3, 3], 0)
    with pytest.raises(ValueError, match="larger than the pool"):
        allocate([3, 3], 7)
    with pytest.raises(ValueError, match="non-negative"):
        allocate([3, -1], 1)


# --- stratified ----------------------------------------------------------------------------------


def test_quantile_bins_terciles():
    bins = quantile_bins(np.arange(9.0), 3)
    assert bins.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_stratified_proportions_hand_case():
    # 60 labels -> terciles of 20 each; a budget of 10 must split 4/3/3 (remainder to the lowest index)
    labels = np.random.default_rng(1).permutation(np.linspace(-1, 4, 60))
    idx = stratified_sample(labels, 10, seed=0)
    counts = np.bincount(quantile_bins(labels, 3)[idx], minlength=3)
    assert counts.tolist() == [4, 3, 3]


def test_stratified_follows_skewed_pool():
    # 2 bins on a pool where the median splits 70/30 because of ties at the low end
    labels = np.array([0.0] * 70 + list(np.linspace(1, 2, 30)))
    bins = quantile_bins(labels, 2)
    assert np.bincount(bins).tolist() == [70, 30]
    idx = stratified_sample(labels, 20, bins=2, seed=3)
    assert np.bincount(bins[idx], minlength=2).tolist() == [14, 6]


def test_stratified_on_real_pool(pool):
    y = pool["label"].to_numpy()
    a = stratified_sample(y, 100, seed=7)
    assert len(a) == 100 and len(np.unique(a)) == 100
    assert np.array_equal(a, stratified_sample(y, 100, seed=7))
    assert not np.array_equal(a, stratified_sample(y, 100, seed=8))
    expected = allocate(np.bincount(quantile_bins(y, 3)), 100)
    assert np.bincount(quantile_bins(y, 3)[a], minlength=3).tolist() == expected.tolist()


# --- random / top --------------------------------------------------------------------------------


def test_random_sample():
    a = random_sample(50, 20, seed=1)
    assert len(a) == 20 and len(np.unique(a)) == 20 and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, random_sample(50, 20, seed=1))
    assert not np.array_equal(a, random_sample(50, 20, seed=2))
    assert sorted(random_sample(5, 5, seed=0).tolist()) == [0, 1, 2, 3, 4]


def test_top_n_order_and_ties():
    scores = [0.1, 0.9, 0.5, 0.9, -2.0, 0.5]
    assert top_n(scores, 4).tolist() == [1, 3, 2, 5]
    with pytest.raises(ValueError, match="NaN"):
        top_n([1.0, np.nan], 1)


@pytest.mark.parametrize("bad", [0, -3, 11])
def test_bad_budget_raises(bad):
    labels = np.linspace(0, 1, 10)
    x, _ = _blobs((5, 5), dim=3)
    smiles = ["C" * (i + 1) for i in range(10)]
    for call in (
        lambda: random_sample(10, bad),
        lambda: stratified_sample(labels, bad),
        lambda: kmeans_diversity_sample(x, bad),
        lambda: maxmin_sample(smiles, bad),
        lambda: top_n(labels, bad),
    ):
        with pytest.raises(ValueError, match="budget n"):
            call()


# --- k-means -------------------------------------------------------------------------------------


def test_kmeans_covers_every_cluster_and_takes_central_points():
    x, blob = _blobs()
    idx = kmeans_diversity_sample(x, 10, n_clusters=5, seed=0)
    assert len(idx) == 10 and len(np.unique(idx)) == 10
    # proportional with at least one each: sizes 40,25,15,12,8 -> 1 + allocate([39,24,14,11,7], 5)
    assert sorted(np.bincount(blob[idx], minlength=5).tolist()) == sorted(
        (1 + allocate([39, 24, 14, 11, 7], 5)).tolist()
    )
    assert set(blob[idx]) == {0, 1, 2, 3, 4}
    # within each blob the chosen points are the ones nearest to the blob mean
    for b in range(5):
        members = np.flatnonzero(blob == b)
        d = np.linalg.norm(x[members] - x[members].mean(0), axis=1)
        chosen = idx[blob[idx] == b]
        assert set(chosen) == set(members[np.argsort(d)[: len(chosen)]])
    assert np.array_equal(idx, kmeans_diversity_sample(x, 10, n_clusters=5, seed=0))


def test_kmeans_small_budget_one_per_cluster():
    x, blob = _blobs((30, 3, 3, 3, 3))
    idx = kmeans_diversity_sample(x, 5, n_clusters=5, seed=1)
    assert sorted(blob[idx].tolist()) == [0, 1, 2, 3, 4]


# --- MaxMin --------------------------------------------------------------------------------------


def test_maxmin_more_diverse_than_random(pool):
    smiles = pool["smiles"].tolist()
    picked = maxmin_sample(smiles, 100, seed=0)
    assert len(picked) == 100 and len(np.unique(picked)) == 100
    assert np.array_equal(picked, maxmin_sample(smiles, 100, seed=0))
    d_maxmin = _mean_pairwise_distance(smiles, picked)
    d_random = _mean_pairwise_distance(smiles, random_sample(len(smiles), 100, seed=0))
    assert d_maxmin > d_random


def test_maxmin_bad_smiles():
    with pytest.raises(ValueError, match="index 1"):
        maxmin_sample(["CCO", "not a smiles", "c1ccccc1"], 2)


# --- embeddings + dispatcher ---------------------------------------------------------------------


def test_embed_smiles_matches_embed_and_restores_mode(tiny_mlm, tokenizer):
    torch.set_num_threads(1)
    model = RegressionModel(tiny_mlm.roformer, dropout=0.5)
    model.train()
    emb = embed_smiles(model, tokenizer, TINY_SMILES, batch_size=2)
    assert emb.shape == (len(TINY_SMILES), 32) and emb.dtype == np.float32
    assert model.training
    model.eval()
    with torch.no_grad():
        one = tokenizer([TINY_SMILES[2]], return_tensors="pt")
        ref = model.embed(one["input_ids"], one["attention_mask"]).numpy()[0]
    np.testing.assert_allclose(emb[2], ref, rtol=1e-4, atol=1e-5)
    assert np.array_equal(emb, embed_smiles(model, tokenizer, TINY_SMILES, batch_size=4))


def test_select_dispatch(pool):
    y = pool["label"].to_numpy()
    assert np.array_equal(select("stratified", 30, labels=y, seed=2), stratified_sample(y, 30, seed=2))
    assert np.array_equal(select("random", 30, labels=y, seed=2), random_sample(len(y), 30, seed=2))
    assert np.array_equal(select("top", 5, scores=y), top_n(y, 5))
    x, _ = _blobs()
    assert np.array_equal(
        select("kmeans", 7, embeddings=x, n_clusters=3, seed=1), kmeans_diversity_sample(x, 7, n_clusters=3, seed=1)
    )
    assert set(SELECTORS) == {"random", "stratified", "kmeans", "maxmin", "top"}
    with pytest.raises(ValueError, match="needs smiles"):
        select("maxmin", 5, labels=y)
    with pytest.raises(ValueError, match="unknown selection strategy"):
        select("entropy", 5, labels=y)


# ---------------------------------------------------------------- merge, label noise
# (cached influence scores and the retrains with additions: tests/test_influence_pipeline.py)


def _frames(tokenizer):
    import pandas as pd

    smiles = TINY_SMILES * 2
    labels = np.linspace(-1.0, 3.0, len(smiles))
    df = pd.DataFrame({"smiles": smiles, "smiles_flat": smiles, "label": labels})
    return df.iloc[:6].reset_index(drop=True), df.iloc[6:9].reset_index(drop=True), df.iloc[9:].reset_index(drop=True)


def test_merge_additions(tokenizer):
    from molft_utils.methods.selection import merge_additions

    train, _, pool = _frames(tokenizer)
    merged = merge_additions(train, pool, [2, 0])
    assert len(merged) == len(train) + 2
    assert merged.source.tolist() == ["train"] * len(train) + ["pool", "pool"]
    assert merged.smiles.iloc[-2:].tolist() == [pool.smiles[2], pool.smiles[0]]
    assert len(merge_additions(train, pool, [])) == len(train)
    with pytest.raises(ValueError):
        merge_additions(train, pool, [1, 1])
    with pytest.raises(ValueError):
        merge_additions(train, pool, [len(pool)])


def test_pool_label_noise():
    import pandas as pd

    from molft_utils.methods.selection import pool_label_noise

    pool = pd.DataFrame({"smiles": ["A", "B", "C"], "smiles_flat": ["a", "b", "c"], "label": [1.0, 2.0, 3.0]})
    ref = pd.DataFrame({"smiles_flat": ["b", "b", "c", "d"], "label": [1.0, 2.0, 3.5, 0.0]})
    out = pool_label_noise(pool, ref)
    assert out.smiles.tolist() == ["B", "C"]
    np.testing.assert_allclose(out.reference_label, [1.5, 3.5])
    np.testing.assert_allclose(out.difference, [0.5, -0.5])


# --- MaxMin from a labelled reference; pick descriptors -------------------------------------------


def test_maxmin_with_reference_avoids_the_labelled_set():
    from molft_utils.methods.selection_profile import nearest_similarity

    pool = ["CCO", "CCCO", "c1ccccc1", "c1ccccc1O", "C1CCNCC1", "CCN"]
    reference = ["CCO", "CCCO", "CCN"]
    picks = maxmin_sample(pool, 2, reference=reference)
    assert len(picks) == 2 and len(set(picks.tolist())) == 2 and picks.min() >= 0 and picks.max() < len(pool)
    # the molecules identical to labelled ones are never among the first picks
    assert not {0, 1, 5} & set(picks.tolist())
    sim = nearest_similarity([pool[i] for i in picks], reference)
    assert (sim < 1.0).all()


def test_describe_picks_hand_case():
    from molft_utils.methods.selection_profile import describe_picks, murcko_scaffolds

    assert murcko_scaffolds(["c1ccccc1CC", "CCO"]) == ["c1ccccc1", ""]
    labelled = ["c1ccccc1C", "CCO", "CCCC"]
    d = describe_picks(["c1ccccc1C", "C1CCNCC1"], [0.0, 3.0], labelled, [0.0, 1.0, 2.0])
    assert d["n"] == 2 and d["label mean"] == 1.5
    assert d["share low label tercile"] == 0.5 and d["share high label tercile"] == 0.5
    assert d["distinct scaffolds"] == 2 and d["share new scaffolds"] == 0.5  # benzene known, piperidine new
    assert 0.5 <= d["nearest-labelled Tanimoto"] < 1.0  # one exact match (1.0), one dissimilar
    with pytest.raises(ValueError, match="one label per pick"):
        describe_picks(["CCO"], [1.0, 2.0], labelled, [0.0, 1.0, 2.0])
