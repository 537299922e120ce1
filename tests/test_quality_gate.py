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


def test_card_pairs_rows_by_seed_and_decides_by_the_interval():
    from molft_utils.models.model_card import _paired_section, paired_interval

    mean, lo, hi = paired_interval([-0.10, -0.11, -0.09])
    assert abs(mean + 0.10) < 1e-12 and lo < mean < hi < 0
    assert paired_interval([0.5])[1] != paired_interval([0.5])[1]  # NaN bound for one seed

    def row(backbone, method, seed, rmse):
        return {"backbone": backbone, "method": method, "split": "random", "seed": seed, "rmse": rmse}

    rows = [row("x (v2)", "finetuned", s, 0.60 + 0.01 * s) for s in range(3)]
    rows += [row("x (v1)", "finetuned", s, [0.70, 0.55, 0.66][s]) for s in range(3)]  # noisy: not distinguishable
    rows += [row("-", "ecfp4_rf", s, 0.70 + 0.01 * s) for s in range(3)]  # v2 lower by 0.10 on every seed
    rows.append(row("x (v2)", "finetuned", 9, 0.1))  # no partner seed: not paired
    text = "\n".join(_paired_section(rows))
    assert "| finetuned (v2) | ecfp4_rf | -0.100 |" in text and text.count("| better |") == 1
    assert "| finetuned (v2) | finetuned (v1) |" in text and "not distinguishable" in text
    assert "3/3 | better" in text
