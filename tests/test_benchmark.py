"""FLOP and roofline arithmetic of the benchmark, on constructed inputs (no wall-clock asserts)."""

from __future__ import annotations

import pytest
import torch
from transformers import RoFormerModel

from molft_utils.models.backbone import RegressionModel, load_backbone
from molft_utils.pretraining.pretrain import backbone_config
from molft_utils.training.benchmark import format_table
from molft_utils.training.throughput import (
    ModelShape,
    batch_flops,
    matmul_rate,
    model_shape,
    roofline_fraction,
)


def test_batch_flops_by_hand():
    # one layer: two 2x3 linears (P = 12), hidden 2; head one 2x1 linear
    shape = ModelShape([(2, 3), (3, 2)], [(2, 1)], layers=1, hidden=2)
    assert shape.matmul_params == 12
    # per sequence forward: 2*12*T + 4*1*T^2*2 + 2*2 ; T = 5 -> 120 + 200 + 4 = 324
    assert batch_flops(shape, batch=1, tokens=5, training=False) == 324
    assert batch_flops(shape, batch=4, tokens=5, training=False) == 4 * 324
    assert batch_flops(shape, batch=4, tokens=5, training=True) == 3 * 4 * 324


def test_default_recipe_flops_match_the_issue_estimate():
    # 3.15 M matmul weights x 6 FLOPs x 54 tokens ~ 1.02 GFLOP per molecule (attention adds ~5 %)
    cfg = backbone_config(698, layers=4, hidden=256, heads=4, intermediate=1024)
    shape = model_shape(RegressionModel(RoFormerModel(cfg), fast=False))
    assert shape.matmul_params == 4 * (4 * 256 * 256 + 2 * 256 * 1024)
    per_mol = batch_flops(shape, 32, 54, training=True) / 32
    assert 1.02e9 < per_mol < 1.02e9 * 1.1


def test_roofline_fraction():
    assert roofline_fraction(3e9, 2.0, 3e9) == 0.5
    assert roofline_fraction(1e9, 1.0, 1e9) == 1.0
    with pytest.raises(ValueError, match="positive"):
        roofline_fraction(1e9, 0.0, 1e9)


def test_matmul_rate_is_a_positive_finite_rate():
    rate = matmul_rate([(8, 16), (16, 8), (8, 16)], tokens=32, dtype=torch.float32, training=True, repeats=2)
    assert 0 < rate < float("inf")


def test_format_table_from_a_constructed_record():
    row = {
        "mode": "train", "implementation": "fast", "precision": "bf16", "batch_size": 32,
        "molecules_per_second": 200.0, "achieved_gflops": 210.0, "roofline_gflops": 300.0, "roofline_fraction": 0.7,
    }  # fmt: skip
    record = {
        "schema": 2, "date": "2026-01-01T00:00:00+00:00", "cpu": "CPU X", "torch_threads": 2, "torch": "2.x",
        "results": [row, row | {"implementation": "eager", "molecules_per_second": 1.0}],
        "speedup_fast_over_eager_bf16": {"batch_size": 32, "train": 1.25},
    }  # fmt: skip
    table = format_table(record)
    assert "| train | bf16 | 32 | 200 | 210 | 300 | 70% |" in table
    assert "| 1 |" not in table  # eager rows are summarised by the speed-up line only
    assert "train 1.25×" in table and "CPU X (2 threads" in table
    with pytest.raises(ValueError, match="schema-2"):
        format_table({"results": []})


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    from molft_utils.training.benchmark import README_END, README_START, update_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"# A\n\n{README_START}\nold table\n{README_END}\n\nrest\n")
    update_readme(readme, "| new |")
    assert readme.read_text() == f"# A\n\n{README_START}\n| new |\n{README_END}\n\nrest\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers not found"):
        update_readme(readme, "x")


def test_profile_of_a_training_step_sums_to_one_and_names_the_matmuls():
    from molft_utils.training.throughput import OP_KINDS, profile_training_step

    cfg = backbone_config(698, layers=1, hidden=32, heads=2, intermediate=64)
    tokenizer = load_backbone()[1]
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC"] * 4
    prof = profile_training_step(RegressionModel(RoFormerModel(cfg)), tokenizer, smiles, batch_size=4, steps=2)
    assert abs(sum(prof["kinds"].values()) - 1.0) < 1e-6
    assert "matmul" in prof["kinds"] and set(prof["kinds"]) <= set(OP_KINDS.values()) | {"other"}
    assert prof["ops"] and all(0 < o["share"] <= 1 for o in prof["ops"]) and prof["steps"] == 2
    record = {"schema": 2, "results": [], "date": "d", "cpu": "c", "torch_threads": 2, "torch": "t", "profile": prof}
    assert "spends its CPU time" in format_table(record)


def test_parallel_line_in_the_table() -> None:
    row = {"mode": "train", "implementation": "fast", "precision": "bf16", "batch_size": 32}
    row |= {"molecules_per_second": 100.0, "achieved_gflops": 1.0, "roofline_gflops": 2.0, "roofline_fraction": 0.5}
    par = {"processes": 2, "threads_each": 1, "batch_size": 32, "molecules_per_second_total": 115.0}
    record = {"schema": 2, "results": [row], "date": "d", "cpu": "c", "torch_threads": 2, "torch": "t", "parallel": par}
    assert "2 training processes at once" in format_table(record) and "(1.15×)" in format_table(record)
