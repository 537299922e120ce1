from __future__ import annotations

import math

from molft_utils.pretraining.quality_gate import FORESTS, SPLITS, run_quality_gate
from molft_utils.training.train import TrainConfig


def test_quality_gate_smoke_runs_every_row_and_writes_nothing():
    from molft_utils.models.backbone import DEFAULT_BACKBONE, MLM_BACKBONE

    def snapshot():
        return {d / p.name: p.stat().st_mtime_ns for d in (DEFAULT_BACKBONE, MLM_BACKBONE) for p in d.iterdir()}

    before = snapshot()
    record = run_quality_gate(TrainConfig(epochs=1, mixed_precision="no"), splits=SPLITS[:1], limit=48)
    methods = {(r["backbone"], r["method"]) for r in record["rows"]}
    backbones = {b for b, _ in methods} - {"-"}
    assert len(backbones) == 2
    assert methods == {(b, m) for b in backbones for m in ("finetuned", "linear_probe")} | {
        ("-", f"{f}_rf") for f in FORESTS
    }
    for row in record["rows"]:
        assert {"backbone", "method", "split", "seed", "rmse", "r2"} <= set(row)
        assert math.isfinite(row["rmse"]) and row["split"] == "random" and row["seed"] == 0
    assert all("convergence" in r for r in record["rows"] if r["method"] == "finetuned")
    assert snapshot() == before  # a smoke run must not touch the committed records or the model cards
