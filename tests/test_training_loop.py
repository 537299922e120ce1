"""The optimisation step shared by ``fit`` and ``train_mlm`` (:mod:`molft_utils.training.loop`)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.optimization import get_linear_schedule_with_warmup

from molft_utils.training.loop import OptimizerStep, optimizer_parameters

CPU = torch.device("cpu")


def _toy() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1), torch.randn(16, 4), 100 * torch.randn(16, 1)  # large targets: large gradients


def _sgd(model: torch.nn.Module, lr: float = 1.0) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def test_one_call_is_one_clipped_step_then_zeroed_gradients_and_the_next_learning_rate() -> None:
    model, x, y = _toy()
    optimizer, schedule = _sgd(model)
    step = OptimizerStep(optimizer, schedule, CPU, None, max_grad_norm=1e-3)
    before = _flat(model)
    expected = torch.nn.functional.mse_loss(model(x), y).item()

    loss = step(lambda: torch.nn.functional.mse_loss(model(x), y))

    assert loss == expected
    update = _flat(model) - before
    assert update.abs().max() > 0
    assert update.norm() <= 1e-3 * (1 + 1e-5)  # lr 1: the update is the clipped gradient
    assert all(p.grad is None for p in model.parameters())
    assert step.steps == 1 and schedule.last_epoch == 1
    assert schedule.get_last_lr() == [0.5]


def test_without_a_tight_clip_the_same_step_is_larger() -> None:
    model, x, y = _toy()
    optimizer, schedule = _sgd(model, lr=1e-3)
    before = _flat(model)
    OptimizerStep(optimizer, schedule, CPU, None, max_grad_norm=1e9)(lambda: torch.nn.functional.mse_loss(model(x), y))
    assert (_flat(model) - before).norm() > 1e-2


def test_after_step_sees_the_clipped_gradients_before_they_are_zeroed() -> None:
    model, x, y = _toy()
    optimizer, schedule = _sgd(model)
    seen: list[tuple[int, float]] = []

    def after_step(n: int) -> None:
        assert all(p.grad is not None for p in model.parameters())
        seen.append((n, float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())))

    step = OptimizerStep(optimizer, schedule, CPU, None, max_grad_norm=0.5, after_step=after_step)
    for _ in range(2):
        step(lambda: torch.nn.functional.mse_loss(model(x), y))
    assert [n for n, _ in seen] == [1, 2]
    assert all(norm == pytest.approx(0.5, rel=1e-5) for _, norm in seen)
    assert all(p.grad is None for p in model.parameters())


def test_the_step_equals_the_hand_written_amp_clip_step_block() -> None:
    """AdamW, a warm-up schedule, the clip on a subset of the parameters: bitwise what the loops wrote by hand."""
    model, x, y = _toy()
    twin = copy.deepcopy(model)
    runs = []
    for m in (model, twin):
        optimizer = torch.optim.AdamW(m.parameters(), lr=1e-2)
        runs.append((m, optimizer, get_linear_schedule_with_warmup(optimizer, 2, 10)))
    (m1, opt1, sched1), (m2, opt2, sched2) = runs
    step = OptimizerStep(opt1, sched1, CPU, None, max_grad_norm=1.0, parameters=[m1.weight])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(3):
        got = step(lambda: torch.nn.functional.mse_loss(m1(x), y))
        loss = torch.nn.functional.mse_loss(m2(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt2)
        torch.nn.utils.clip_grad_norm_([m2.weight], 1.0)
        scaler.step(opt2)
        scaler.update()
        opt2.zero_grad(set_to_none=True)
        sched2.step()
        assert got == loss.item()
    assert torch.equal(_flat(m1), _flat(m2))
    assert sched1.get_last_lr() == sched2.get_last_lr()


def test_the_loss_is_computed_under_autocast_with_its_arguments() -> None:
    model, x, y = _toy()
    optimizer, schedule = _sgd(model)
    step = OptimizerStep(optimizer, schedule, CPU, torch.bfloat16, max_grad_norm=1.0)
    inside: list[bool] = []

    def loss_of(inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        inside.append(torch.is_autocast_enabled("cpu"))
        return torch.nn.functional.mse_loss(model(inputs).float(), target)

    step(loss_of, x, y)
    assert inside == [True] and not torch.is_autocast_enabled("cpu")
    assert step.parameters == optimizer_parameters(optimizer) == list(model.parameters())


def test_plateau_scale_warms_up_then_halves_after_stalled_epochs() -> None:
    from molft_utils.training.loop import PlateauScale

    scale = PlateauScale(warmup_steps=4, factor=0.5, patience=2)
    assert [scale(s) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    for improved in (True, False, True, False):  # never two bad epochs in a row: no change
        scale.epoch_end(improved)
    assert scale(9) == 1.0
    scale.epoch_end(False)  # second bad epoch in a row
    assert scale(9) == 0.5
    for _ in range(2):
        scale.epoch_end(False)
    assert scale(9) == 0.25
    with pytest.raises(ValueError):
        PlateauScale(0)


def test_fit_with_the_plateau_schedule_lowers_the_rate_when_validation_stalls(tiny_mlm, tokenizer) -> None:
    from molft_utils.models.backbone import RegressionModel, random_init_like
    from molft_utils.training.train import TrainConfig, fit

    smiles = ["C" * n for n in range(1, 13)]
    y = [n / 10 for n in range(1, 13)]
    cfg = TrainConfig(epochs=6, batch_size=4, lr_backbone=1e-3, lr_head=1e-3, patience=6, mixed_precision="no",
                      schedule="plateau", plateau_patience=1, warmup_fraction=0.0)
    torch.manual_seed(0)
    res = fit(RegressionModel(random_init_like(tiny_mlm.roformer)), tokenizer, smiles, y, smiles, [0.0] * len(y),
              cfg, progress=False)  # validation labels all zero: the score soon stops improving
    rows = res.history
    improved = [i == 0 or r["valid_rmse"] < min(x["valid_rmse"] for x in rows[:i]) for i, r in enumerate(rows)]
    assert rows[0]["lr"] == pytest.approx(1e-3) and not all(improved)
    for i in range(len(rows) - 1):  # plateau_patience=1: every epoch without a better score halves the next rate
        factor = 1.0 if improved[i] else 0.5
        assert rows[i + 1]["lr"] == pytest.approx(factor * rows[i]["lr"]), (i, improved, [r["lr"] for r in rows])
