"""Tests of the notebook-04 helpers of molft_utils.methods.peft_methods: budgets, subprocess memory, Pareto figure."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

from molft_utils.methods.peft_methods import (
    encoder_without_weights,
    parameter_budget,
    training_memory_subprocess,
)
from molft_utils.runs.plotting import pareto_figure

matplotlib.use("Agg")
torch.set_num_threads(1)


def test_budget_on_weightless_encoder_matches_formulas() -> None:
    layers, hidden, inter = 2, 64, 128
    bb = encoder_without_weights(num_layers=layers, hidden=hidden, heads=4, intermediate=inter, vocab_size=50,
                                 max_positions=32)
    assert next(bb.parameters()).device.type == "meta"
    flags = [p.requires_grad for p in bb.parameters()]
    rows = {r["method"]: r for r in parameter_budget(bb, ("full", "lora", "ia3", "bitfit"))}
    assert rows["full"]["n_trainable_backbone"] == rows["full"]["n_backbone"]
    # LoRA r=8 on q, k, v: r * (in + out) per matrix
    assert rows["lora"]["n_trainable_backbone"] == layers * 3 * 8 * (hidden + hidden)
    # IA3: key and value outputs (hidden each) + input of the FFN down-projection (intermediate)
    assert rows["ia3"]["n_trainable_backbone"] == layers * (2 * hidden + inter)
    # BitFit: every bias of the encoder, LayerNorm biases included
    n_bias = sum(p.numel() for n, p in bb.named_parameters() if n.endswith("bias"))
    assert rows["bitfit"]["n_trainable_backbone"] == n_bias
    head = hidden * hidden + hidden + hidden + 1
    assert all(r["n_head"] == head for r in rows.values())
    lora = rows["lora"]
    assert lora["percent_backbone"] == pytest.approx(100 * lora["n_trainable_backbone"] / lora["n_backbone"])
    # the template is not modified
    assert [p.requires_grad for p in bb.parameters()] == flags
    assert not any(n.startswith("base_model") for n, _ in bb.named_parameters())


@pytest.mark.integration
def test_memory_subprocess_reports_numbers(tiny_mlm, tokenizer, tmp_path) -> None:
    tiny_mlm.roformer.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    smiles = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "OCCO"]
    out = training_memory_subprocess(tmp_path, "lora", smiles, [0.1, 0.5, 0.2, 0.9, 0.3, 0.4], batch_size=2)
    assert out["error"] is None, out["error"]
    assert math.isfinite(out["peak_mib"]) and out["peak_mib"] >= 0
    assert out["baseline_mib"] > 10 and out["maxrss_mib"] >= out["baseline_mib"] * 0.5
    assert out["steps"] == 3


def test_pareto_figure_front() -> None:
    rows = [
        {"method": "full", "n_trainable_backbone": 1000, "test_rmse": 0.7, "seconds_per_epoch": 10},
        {"method": "lora", "n_trainable_backbone": 100, "test_rmse": 0.8, "seconds_per_epoch": 8},
        {"method": "bad", "n_trainable_backbone": 500, "test_rmse": 0.9, "seconds_per_epoch": 8},
    ]
    fig = pareto_figure(rows)
    ax = fig.axes[0]
    front = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    assert len(front) == 1
    xs = list(front[0].get_xdata())
    assert 500 not in xs and 100 in xs and 1000 in xs


def test_adalora_needs_two_steps(tokenizer, tiny_mlm) -> None:
    from molft_utils.methods.peft_methods import prepare
    from molft_utils.models.backbone import RegressionModel

    with pytest.raises(ValueError, match="at least 2"):
        prepare(RegressionModel(tiny_mlm.roformer), "adalora", total_steps=1)
