"""Tests for molft_utils.data.splits: random and scaffold splits, saved splits and pool leakage."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from molft_utils.data.loading import LIPOPHILICITY, load_dataset, load_external_pool, load_lipophilicity
from molft_utils.data.splits import (
    SPLIT_DIR,
    Split,
    get_split,
    leakage_report,
    murcko_scaffold,
    overlap_with,
    random_split,
    remove_overlap,
    scaffold_split,
)


@pytest.fixture(scope="module")
def lipo() -> pd.DataFrame:
    return load_lipophilicity()


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    return load_external_pool()


def _check_partition(parts: dict[str, list[int]], n: int) -> None:
    sets = [set(parts[k]) for k in ("train", "valid", "test")]
    assert sum(map(len, sets)) == n == len(set().union(*sets))


def test_random_split_sizes_disjoint_deterministic() -> None:
    a = random_split(1000, seed=0)
    assert {k: len(v) for k, v in a.items()} == {"train": 800, "valid": 100, "test": 100}
    _check_partition(a, 1000)
    assert a == random_split(1000, seed=0)
    assert a != random_split(1000, seed=1)
    b = random_split(11, seed=3, fractions=(0.6, 0.2, 0.2))
    _check_partition(b, 11)
    with pytest.raises(ValueError):
        random_split(10, 0, fractions=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("seed", [None, 0])
def test_scaffold_split_no_shared_scaffold(lipo: pd.DataFrame, seed: int | None) -> None:
    smiles = lipo["smiles"].tolist()
    parts = scaffold_split(smiles, seed=seed)
    _check_partition(parts, len(smiles))
    scaffolds = {k: {murcko_scaffold(smiles[i]) for i in v} for k, v in parts.items()}
    assert not scaffolds["train"] & scaffolds["valid"]
    assert not scaffolds["train"] & scaffolds["test"]
    assert not scaffolds["valid"] & scaffolds["test"]
    assert len(parts["train"]) >= 0.7 * len(smiles) and len(parts["test"]) > 0.05 * len(smiles)
    assert parts == scaffold_split(smiles, seed=seed)


def test_saved_splits_exist_and_verify(lipo: pd.DataFrame) -> None:
    for seed in (0, 1, 2):
        assert (SPLIT_DIR / f"lipophilicity_random_seed{seed}.json").is_file()
        split = get_split(lipo, "random", seed)
        assert split.parts() == random_split(len(lipo), seed)
    split = get_split(lipo, "scaffold", seed=1)
    assert split.seed is None and (SPLIT_DIR / "lipophilicity_scaffold.json").is_file()
    assert split.parts() == scaffold_split(lipo["smiles"].tolist())


def test_save_load_round_trip_and_changed_data(tmp_path: Path) -> None:
    data = tmp_path / "toy.csv"
    data.write_text("smiles,target\n" + "".join(f"{'C' * i}O,{i}\n" for i in range(1, 21)), encoding="utf-8")
    df = load_dataset(data)
    split = get_split(df, "random", seed=0, name="toy", split_dir=tmp_path, data_path=data)
    path = tmp_path / "toy_random_seed0.json"
    assert path.is_file() and json.loads(path.read_text())["n_rows"] == 20
    assert Split.load(path, df, data_path=data) == split

    changed = df.copy()
    changed.loc[3, "smiles"] = "CCN"
    with pytest.raises(ValueError, match="the data changed"):
        Split.load(path, changed)
    with pytest.raises(ValueError, match="made for 20 rows"):
        Split.load(path, df.iloc[:19])
    data.write_text(data.read_text() + "CCCCCCCCCCCCCCCCCCCCCCO,99\n", encoding="utf-8")
    with pytest.raises(ValueError, match="md5"):
        Split.load(path, df, data_path=data)

    bad = json.loads(path.read_text())
    bad["test"] = bad["test"] + [bad["train"][0]]
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="overlap"):
        Split.load(path, df)


def test_leakage_against_whole_set(lipo: pd.DataFrame, pool: pd.DataFrame) -> None:
    report = overlap_with(pool, lipo, "all")
    assert list(report.columns) == ["row", "smiles", "label", "part", "match", "reference_label"]
    assert (report["match"] == "exact").sum() == 10
    # data/README.md counts distinct molecules: 23 distinct stereo-free molecules (incl. the 10 exact),
    # which are 27 pool rows because the pool repeats some stereoisomers of the same molecule.
    flat = pool.set_index("row").loc[report["row"], "smiles_flat"]
    assert flat.nunique() == 23
    assert len(report) == 27
    exact = report[report["match"] == "exact"]
    assert set(exact["smiles"]) <= set(lipo["smiles"])
    assert len(remove_overlap(pool, report)) == 300 - 27


def test_leakage_report_parts(lipo: pd.DataFrame, pool: pd.DataFrame) -> None:
    split = get_split(lipo, "random", 0)
    report = leakage_report(pool, {k: v for k, v in split.frames(lipo).items() if k != "train"})
    assert set(report["part"]) <= {"valid", "test"}
    whole = overlap_with(pool, lipo, "all")
    assert set(report["row"]) <= set(whole["row"])
    assert len(remove_overlap(pool, report)) == 300 - report["row"].nunique()
    assert LIPOPHILICITY.is_file()
