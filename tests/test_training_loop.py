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
