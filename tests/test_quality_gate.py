from __future__ import annotations

import math

from molft_utils.pretraining.quality_gate import run_quality_gate
from molft_utils.training.train import TrainConfig


def test_quality_gate_smoke_runs_every_method_and_writes_nothing():
    from molft_utils.models.backbone import DEFAULT_BACKBONE

    def snapshot():
        return {p.name: p.stat().st_mtime_ns for p in DEFAULT_BACKBONE.iterdir()}

    before = snapshot()
    record = run_quality_gate([0], TrainConfig(epochs=1, mixed_precision="no"), limit=48)
    assert set(record["methods"]) == {"pretrained + head", "random init + head", "ECFP4 + RandomForest"}
    for stats in record["methods"].values():
        assert math.isfinite(stats["rmse"]["mean"]) and stats["rmse"]["n"] == 1
    assert snapshot() == before  # a smoke run must not touch the committed records or the model card
