"""The optimisation step shared by every training loop.

:func:`molft_utils.training.train.fit` (fine-tuning, and through its hooks the PEFT and robust methods) and
:func:`molft_utils.training.mlm.train_mlm` (MLM and descriptor pretraining) differ in how they batch the data and
what loss they compute, not in how they take a step. Each builds one :class:`OptimizerStep` and calls it with a
function that computes the loss of a batch::

    optimizer_step = OptimizerStep(optimizer, schedule, device, dtype, max_grad_norm=1.0)
    for batch in batches:
        loss = optimizer_step(loss_of, batch)

A call runs the forward under autocast, then backward through the gradient scaler, unscales, clips the gradient
norm, steps the optimiser, updates the scaler, calls the ``after_step`` hook (the gradients are still there),
zeroes the gradients and advances the learning-rate schedule: the order both loops have always used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from molft_utils.core.device import autocast, grad_scaler

__all__ = ["OptimizerStep", "PlateauScale", "optimizer_parameters"]


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """Every parameter of ``optimizer``, group by group, in the order the groups list them."""
    return [p for group in optimizer.param_groups for p in group["params"]]


class OptimizerStep:
    """One optimisation step per call: autocast forward, scaled backward, clip, step, schedule.

    Parameters
    ----------
    optimizer
        The optimiser (e.g. :func:`molft_utils.training.train.make_adamw`).
    schedule
        The learning-rate schedule, advanced once per step after the gradients are zeroed.
    device
        Device of the model, for autocast and the default gradient scaler.
    dtype
        Autocast dtype, or ``None`` for full precision
        (:func:`molft_utils.core.device.autocast_dtype`).
    max_grad_norm
        The total gradient norm is clipped to this value.
    parameters
        The parameters whose gradient norm is clipped; default: every parameter of ``optimizer``
        (:func:`optimizer_parameters`).
    scaler
        The gradient scaler; default :func:`molft_utils.core.device.grad_scaler` (active only for fp16 on CUDA).
    after_step
        ``f(step)`` right after ``optimizer.step()``, before the gradients are zeroed; ``step`` counts the calls
        from 1 (AdaLoRA's rank allocation needs the gradients).

    Attributes
    ----------
    steps
        Steps taken by this object so far.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        device: torch.device,
        dtype: torch.dtype | None,
        max_grad_norm: float,
        parameters: Iterable[torch.nn.Parameter] | None = None,
        scaler: torch.amp.GradScaler | None = None,
        after_step: Callable[[int], None] | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.device = device
        self.dtype = dtype
        self.max_grad_norm = max_grad_norm
        self.parameters = list(parameters) if parameters is not None else optimizer_parameters(optimizer)
        self.scaler = scaler if scaler is not None else grad_scaler(device, dtype)
        self.after_step = after_step
        self.steps = 0

    def __call__(self, compute_loss: Callable[..., torch.Tensor], *args: Any) -> float:
        """Take one step on the loss that ``compute_loss(*args)`` returns (called under autocast).

        Returns
        -------
        float
            The loss of this step (``loss.item()``).
        """
        with autocast(self.device, self.dtype):
            loss = compute_loss(*args)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps += 1
        if self.after_step is not None:
            self.after_step(self.steps)
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return loss.item()


class PlateauScale:
    """The learning-rate multiplier of the ``"plateau"`` schedule, for :class:`torch.optim.lr_scheduler.LambdaLR`.

    A linear warm-up over ``warmup_steps``, then a constant rate that is multiplied by ``factor`` whenever
    ``patience`` epochs in a row ended without a better validation score (:meth:`epoch_end`). With early stopping
    this anneals the rate when progress stalls, instead of stopping on validation noise while a decay spread over
    a long epoch ceiling still holds the rate near its peak.
    """

    def __init__(self, warmup_steps: int, factor: float = 0.5, patience: int = 2) -> None:
        if warmup_steps < 1 or not 0 < factor < 1 or patience < 1:
            raise ValueError("need warmup_steps >= 1, 0 < factor < 1 and patience >= 1")
        self.warmup_steps, self.factor, self.patience = warmup_steps, factor, patience
        self.scale, self.stall = 1.0, 0

    def __call__(self, step: int) -> float:
        return min(1.0, step / self.warmup_steps) * self.scale

    def epoch_end(self, improved: bool) -> None:
        """Record one epoch: a better validation score resets the count, ``patience`` worse ones lower the scale."""
        self.stall = 0 if improved else self.stall + 1
        if self.stall >= self.patience:
            self.scale *= self.factor
            self.stall = 0
