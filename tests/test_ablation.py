"""The pretraining-objective ablation: arm commands, resuming, and validation-only scoring of each backbone."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from molft_utils.data.loading import load_lipophilicity
from molft_utils.models.backbone import DEFAULT_BACKBONE
from molft_utils.pretraining import ablation


@pytest.fixture(scope="module")
def first_molecules():
    return load_lipophilicity().iloc[:90].reset_index(drop=True)  # validated once: about 3 s


@pytest.fixture()
def small_data(first_molecules, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Lipophilicity's first 90 molecules and a fixed split of them, in place of the 4,200 (seconds, not minutes)."""
    calls = []

    def split(df, kind, seed):
        calls.append({"n": len(df), "kind": kind, "seed": seed})
        return SimpleNamespace(train=np.arange(0, 60), valid=np.arange(60, 75), test=np.arange(75, 90))

    monkeypatch.setattr(ablation, "load_lipophilicity", first_molecules.copy)
    monkeypatch.setattr(ablation, "get_split", split)
    return calls


@pytest.fixture()
def tiny_backbone(tiny_mlm, tokenizer, tmp_path: Path) -> Path:
    """A randomly initialised one-layer backbone saved like a pretraining run's output (its record borrowed)."""
    folder = tmp_path / "tiny"
    tiny_mlm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_run_arm_builds_the_arms_command_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(ablation.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    out = ablation.run_arm("mlm30+desc1", 40, tmp_path / "v1", tmp_path / "arms")
    assert out == tmp_path / "arms" / "mlm30+desc1" and len(calls) == 1
    args = dict(zip(calls[0][3::2], calls[0][4::2], strict=False))  # after `python -m molft_utils...pretrain`
    assert args["--init-from"] == str(tmp_path / "v1") and args["--max-steps"] == "40"
    assert (args["--mlm-probability"], args["--mlm-weight"], args["--descriptor-weight"]) == ("0.3", "1.0", "1.0")
    assert args["--checkpoint-dir"] == str(out / "checkpoint")  # resumable
    out.mkdir(parents=True)
    (out / "pretraining.json").write_text("{}")
    ablation.run_arm("mlm30+desc1", 40, tmp_path / "v1", tmp_path / "arms")
    assert len(calls) == 1, "an arm with a record is not trained again"


def test_score_reads_validation_only_and_the_arms_record(
    tiny_backbone: Path, small_data: list[dict], tmp_path: Path
) -> None:
    with_record = tmp_path / "with-record"
    shutil.copytree(tiny_backbone, with_record)
    shutil.copy(DEFAULT_BACKBONE / "pretraining.json", with_record / "pretraining.json")
    rows = ablation.score({"plain": tiny_backbone, "recorded": with_record})
    assert small_data == [{"n": 90, "kind": "random", "seed": 0}]  # the random split of seed 0
    assert [r["arm"] for r in rows] == ["plain", "recorded"]
    assert set(rows[0]) == {"arm", "probe_valid_rmse", "probe_valid_r2", "probe_alpha"}  # no test metrics at all
    assert all(math.isfinite(r["probe_valid_rmse"]) for r in rows)
    assert rows[0]["probe_valid_rmse"] == rows[1]["probe_valid_rmse"]  # same weights, same probe
    record = json.loads((DEFAULT_BACKBONE / "pretraining.json").read_text())
    assert rows[1]["steps"] == record["history"]["steps"]
    assert rows[1]["descriptor_weight"] == record["mlm_config"]["descriptor_weight"]


@pytest.mark.usefixtures("small_data")
def test_score_only_writes_the_table(tiny_backbone: Path, tmp_path: Path) -> None:
    root = tmp_path / "arms"
    shutil.copytree(tiny_backbone, root / "desc1")
    shutil.copy(DEFAULT_BACKBONE / "pretraining.json", root / "desc1" / "pretraining.json")
    ablation.main(["--score-only", "--arms", "desc1", "mlm15", "--root", str(root), "--init-from", str(tiny_backbone),
                   "--steps", "7"])  # fmt: skip
    table = json.loads((root / "ablation.json").read_text())
    assert table["steps_per_arm"] == 7 and "validation" in table["scored_on"]
    assert [r["arm"] for r in table["rows"]] == ["v1 (start, no further training)", "desc1"]  # mlm15 never ran
