"""Tests for molft_utils.data.loading: checksums, validation errors, drop_invalid and canonicalisation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from molft_utils.data.loading import (
    EXPECTED_MD5,
    EXTERNAL_POOL,
    LIPOPHILICITY,
    DataValidationError,
    canonicalize,
    load_dataset,
    load_external_pool,
    load_lipophilicity,
    md5,
    verify_checksums,
)


def _write(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_checksums_match_readme() -> None:
    assert md5(LIPOPHILICITY) == EXPECTED_MD5["lipophilicity.csv"] == "28a5a27de430d85acc162abe864ee994"
    assert md5(EXTERNAL_POOL) == EXPECTED_MD5["external_pool.csv"] == "08fbfe75d00e7ab940055bfda638b748"
    assert verify_checksums() == EXPECTED_MD5


def test_verify_checksums_mismatch(tmp_path: Path) -> None:
    _write(tmp_path, "smiles,target\nCCO,1.0\n", "lipophilicity.csv")
    _write(tmp_path, "SMILES,Label\nCCO,1.0\n", "external_pool.csv")
    with pytest.raises(DataValidationError, match=r"lipophilicity\.csv: md5 .* != expected 28a5a27d"):
        verify_checksums(tmp_path)


def test_load_real_files() -> None:
    lipo, pool = load_lipophilicity(), load_external_pool()
    assert len(lipo) == 4200 and len(pool) == 300
    assert list(lipo.columns) == ["row", "smiles_raw", "smiles", "smiles_flat", "label"]
    assert lipo["row"].tolist() == list(range(1, 4201))
    assert lipo.loc[0, "smiles_raw"] == "Cn1c(CN2CCN(CC2)c3ccc(Cl)cc3)nc4ccccc14"
    assert lipo.loc[0, "label"] == pytest.approx(3.54)
    assert pool.loc[0, "label"] == pytest.approx(1.548)


def test_canonicalisation(tmp_path: Path) -> None:
    assert canonicalize("OCC") == canonicalize("CCO") == ("CCO", "CCO")
    iso, flat = canonicalize("C[C@@H](N)C(=O)O")
    assert "@" in iso and "@" not in flat
    assert flat == canonicalize("CC(N)C(=O)O")[0]
    assert canonicalize("not a smiles") is None
    df = load_dataset(_write(tmp_path, "smiles,target\nOCC,1.0\nF/C=C/F,2\n"))
    assert df["smiles"].tolist() == ["CCO", "F/C=C/F"]
    assert df["smiles_flat"].tolist() == ["CCO", "FC=CF"]
    assert df["smiles_raw"].tolist() == ["OCC", "F/C=C/F"]


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("smi,target\nCCO,1\n", ["missing column", "'smiles'", "columns found: ['smi', 'target']"]),
        ("smiles,target\n", ["no data rows"]),
        ("", ["empty", "0 bytes"]),
        ("smiles,target\nCCO,1\nC1CC,2\n", ["row 2", "unparsable SMILES 'C1CC'"]),
        ("smiles,target\nCCO,\n", ["row 1", "missing label"]),
        ("smiles,target\nCCO,abc\n", ["row 1", "label 'abc' is not a number"]),
        ("smiles,target\nCCO,nan\nCCN,inf\n", ["row 1", "'nan' is not finite", "row 2", "'inf' is not finite"]),
        ("smiles,target\nCCO,1.5\nCCC,2\nOCC,2.5\n", ["rows 1 and 3", "conflicting", "1.5", "2.5", "'CCO'"]),
    ],
    ids=["missing-col", "no-rows", "zero-bytes", "bad-smiles", "no-label", "text-label", "nonfinite", "conflict"],
)
def test_bad_csv_raises(tmp_path: Path, text: str, patterns: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataValidationError) as exc:
        load_dataset(path)
    msg = str(exc.value)
    assert str(path) in msg
    for pattern in patterns:
        assert pattern in msg, (pattern, msg)


def test_all_bad_rows_reported_together(tmp_path: Path) -> None:
    lines = "\n".join(f"X{i}x,1" for i in range(12))
    path = _write(tmp_path, f"smiles,target\nCCO,1\n{lines}\n")
    with pytest.raises(DataValidationError) as exc:
        load_dataset(path)
    msg = str(exc.value)
    assert "12 invalid row(s)" in msg and "row 2:" in msg and "row 11:" in msg and "and 2 more" in msg


def test_drop_invalid_logs_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, "smiles,target\nCCO,1\nC1CC,2\nCCN,\nCCC,3\n")
    with caplog.at_level(logging.WARNING, logger="molft_utils.data.loading"):
        df = load_dataset(path, drop_invalid=True)
    assert df["row"].tolist() == [1, 4]
    assert df["label"].tolist() == [1.0, 3.0]
    assert "dropped 2 invalid row(s)" in caplog.text and "rows 2, 3" in caplog.text


def test_drop_invalid_still_raises_on_conflict(tmp_path: Path) -> None:
    path = _write(tmp_path, "smiles,target\nCCO,1\nOCC,2\nC1CC,3\n")
    with pytest.raises(DataValidationError, match="conflicting"):
        load_dataset(path, drop_invalid=True)


def test_identical_duplicates(tmp_path: Path) -> None:
    path = _write(tmp_path, "smiles,target\nCCO,1\nOCC,1.0\nCCC,2\n")
    assert load_dataset(path)["row"].tolist() == [1, 2, 3]
    assert load_dataset(path, allow_duplicates="mean")["row"].tolist() == [1, 3]
    with pytest.raises(DataValidationError, match="rows 1 and 2"):
        load_dataset(path, allow_duplicates="error")


def test_custom_columns(tmp_path: Path) -> None:
    df = load_dataset(_write(tmp_path, "SMILES,Label\nc1ccccc1,0.5\n"), smiles_col="SMILES", label_col="Label")
    assert df.loc[0, "smiles"] == "c1ccccc1" and df.loc[0, "label"] == 0.5
