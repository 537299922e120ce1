"""Lesson 03's study design (molft_utils.methods.selection_study)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from molft_utils.methods import selection_study as st
from molft_utils.runs import comparisons

SMILES = [
    "CCO", "CCN", "CCC", "CCCl", "CCBr", "c1ccccc1", "c1ccccc1O", "c1ccccc1N", "c1ccncc1", "c1ccncc1C",
    "C1CCCCC1", "C1CCCCC1O", "CC(=O)O", "CC(=O)N", "CC(=O)OC", "c1ccc2ccccc2c1", "c1ccc2ncccc2c1", "OCCO",
    "NCCN", "CCOCC", "c1ccoc1", "c1ccsc1", "C1CCNCC1", "C1CCOCC1",
]  # fmt: skip


def _frame(smiles: list[str], seed: int = 0) -> pd.DataFrame:
    y = np.random.default_rng(seed).normal(size=len(smiles))
    return pd.DataFrame({"smiles": smiles, "label": y})


def test_method_names_round_trip_and_pair_with_random_in_the_report() -> None:
    name = st.method_name("B", "maxmin", 200, "rf")
    assert name == "regime=B|strategy=maxmin|n=200|learner=rf"
    assert st.parse_method(name) == {"regime": "B", "strategy": "maxmin", "n": 200, "learner": "rf"}
    # the report's dict reference substitutes the strategy and keeps regime, budget and learner
    assert comparisons.reference_for(name, {"strategy": "random"}) == st.method_name("B", "random", 200, "rf")
    with pytest.raises(ValueError):
        st.method_name("B", "a|b", 1)
    with pytest.raises(ValueError):
        st.parse_method("strategy=random|n=100")


def test_low_data_split_is_a_seeded_partition() -> None:
    train = _frame(SMILES)
    start, cand = st.low_data_split(train, 5, seed=3)
    assert len(start) == 5 and len(cand) == len(train) - 5
    assert set(start.smiles) | set(cand.smiles) == set(train.smiles)
    assert not set(start.smiles) & set(cand.smiles)
    again, _ = st.low_data_split(train, 5, seed=3)
    assert again.equals(start)
    other, _ = st.low_data_split(train, 5, seed=4)
    assert not other.equals(start)
    with pytest.raises(ValueError):
        st.low_data_split(train, len(train), seed=0)


def test_proxy_labels_follow_the_start_labels() -> None:
    # label = number of heavy atoms (approximately): a forest on the start set must rank candidates sensibly
    smiles = [("C" * k) + "O" for k in range(1, 25)]
    y = np.arange(1, 25, dtype=float)
    proxy = st.proxy_labels(smiles[::2], y[::2], smiles[1::2], seed=0, n_estimators=50)
    assert proxy.shape == (12,)
    assert np.corrcoef(proxy, y[1::2])[0, 1] > 0.8


def test_pick_all_spends_the_budget_with_every_strategy() -> None:
    cand = _frame(SMILES)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=len(cand))
    picks = st.pick_all(6, seed=0, smiles=list(cand.smiles), labels=cand.label.to_numpy(),
                        embeddings=rng.normal(size=(len(cand), 4)), scores=scores, reference_smiles=["CCO"],
                        random_draws=3)  # fmt: skip
    assert list(picks) == ["random", "random (draw 2)", "random (draw 3)", "stratified", "kmeans", "maxmin",
                           "influence"]  # fmt: skip
    for name, idx in picks.items():
        assert len(idx) == 6 and len(set(idx.tolist())) == 6, name
        assert idx.min() >= 0 and idx.max() < len(cand)
    assert set(picks["influence"]) == set(np.argsort(-scores)[:6])
    assert not np.array_equal(np.sort(picks["random"]), np.sort(picks["random (draw 2)"]))
    with pytest.raises(ValueError):
        st.pick_all(6, seed=0, smiles=list(cand.smiles), labels=cand.label, embeddings=np.zeros((24, 2)),
                    scores=scores, random_draws=0)  # fmt: skip


def test_describe_selection_rows_and_novelty() -> None:
    labelled = _frame(SMILES[:8])
    cand = _frame(SMILES[8:], seed=1)
    picks = {"copies": np.array([0, 1]), "far": np.array([9, 10])}
    prof = st.describe_selection(picks, cand, labelled)
    assert list(prof.index) == ["copies", "far", "all candidates"]
    assert prof.loc["all candidates", "n"] == len(cand)
    assert np.isclose(prof.loc["copies", "label mean"], cand.label.iloc[[0, 1]].mean())
    shares = prof[["share low label tercile", "share middle label tercile", "share high label tercile"]]
    assert np.allclose(shares.sum(axis=1), 1.0)


def test_paired_deltas_against_random_and_none() -> None:
    m = {
        st.method_name("B", "none", 0): {"rmse": 1.0},
        st.method_name("B", "random", 10): {"rmse": 0.9},
        st.method_name("B", "maxmin", 10): {"rmse": 0.8},
        st.method_name("B", "random", 20): {"rmse": 0.7},
        st.method_name("B", "maxmin", 20, "rf"): {"rmse": 0.5},  # no random partner for the forest
        "not a study key": {"rmse": 0.0},
    }
    df = st.paired_deltas(m)
    row = df[(df.strategy == "maxmin") & (df.n == 10)].iloc[0]
    assert np.isclose(row["Δ vs random"], -0.1) and np.isclose(row["Δ vs none"], -0.2)
    assert df[(df.strategy == "random") & (df.n == 10)].iloc[0]["Δ vs random"] == 0.0
    assert np.isnan(df[(df.learner == "rf")].iloc[0]["Δ vs random"])
    assert df.strategy.tolist()[:3] == ["none", "random", "maxmin"]
    assert len(df) == 5


def test_learning_curve_figure_points_and_bands() -> None:
    one = {st.method_name("B", s, b, lrn): [1.0 - b / 100] for s in ("random", "maxmin") for b in (10, 20)
           for lrn in ("finetuned", "rf")}  # fmt: skip
    one[st.method_name("B", "none", 0)] = [1.1]
    one[st.method_name("A", "random", 100)] = [0.5]  # another regime: ignored
    fig = st.learning_curve_figure(one, start_size=20)
    assert len(fig.axes) == 2
    assert not any(ax.collections for ax in fig.axes)  # one seed: points, no bands
    three = {k: v * 3 if len(v) == 1 else v for k, v in one.items()}
    three = {k: [v[0], v[0] + 0.05, v[0] - 0.05] for k, v in three.items()}
    fig = st.learning_curve_figure(three)
    assert all(ax.collections for ax in fig.axes)  # bands over seeds
    with pytest.raises(ValueError):
        st.learning_curve_figure({st.method_name("A", "random", 100): [0.5]})


def test_per_seed_values() -> None:
    recs = [{"metrics": {"a": {"rmse": 1.0}}}, {"metrics": {"a": {"rmse": 2.0}, "b": {"mae": 1.0}}}]
    assert st.per_seed_values(recs) == {"a": [1.0, 2.0]}


def test_describe_against_follows_the_numbers() -> None:
    cols = ["nearest-labelled Tanimoto", "share new scaffolds", "label std", "share low label tercile",
            "share middle label tercile", "share high label tercile"]  # fmt: skip
    prof = pd.DataFrame(
        [[0.60, 0.3, 1.0, 0.3, 0.4, 0.3], [0.40, 0.6, 1.0, 0.2, 0.2, 0.6], [0.70, 0.1, 0.5, 0.5, 0.5, 0.0],
         [0.6, 0.3, 1.0, 0.3, 0.4, 0.3], [0.55, 0.4, 1.1, 0.3, 0.3, 0.4]],
        index=["random", "maxmin", "kmeans", "random (draw 2)", "all candidates"], columns=cols,
    )  # fmt: skip
    lines = st.describe_against(prof)
    assert len(lines) == 2
    assert lines[0].startswith("maxmin") and "more novel than random" in lines[0] and "more new scaffolds" in lines[0]
    assert "more familiar than random" in lines[1] and "narrower labels" in lines[1]
    assert "0.20/0.20/0.60" in lines[0]
    with pytest.raises(ValueError):
        st.describe_against(prof, reference="none")
