"""PEFT set-up: the method registry, :func:`prepare` (trainable-parameter selection and counts) and
:func:`fine_tune`. Settings live in :mod:`.settings`, target modules by role in :mod:`.targets`, merging in
:mod:`.merge` (re-exported here, so ``from molft_utils.methods.peft_methods.setup import LoraSettings`` keeps
working)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import AdaLoraConfig, IA3Config, LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedTokenizerBase

from molft_utils.core.registry import Registry
from molft_utils.methods.peft_methods.merge import merge_adapters, merge_and_save
from molft_utils.methods.peft_methods.settings import (
    AdaLoraSettings,
    BitFitSettings,
    DoraSettings,
    FullSettings,
    IA3Settings,
    LoraSettings,
    Settings,
)
from molft_utils.methods.peft_methods.targets import (
    NoTargetModulesError,
    attention_targets,
    feedforward_targets,
    lora_targets,
)
from molft_utils.models.backbone import FastDropout, RegressionModel, speed_up_backbone
from molft_utils.training.train import TargetScaler, TrainHooks, predict

__all__ = [
    "AdaLoraSettings",
    "attention_targets",
    "BitFitSettings",
    "default_settings",
    "DoraSettings",
    "feedforward_targets",
    "fine_tune",
    "FullSettings",
    "IA3Settings",
    "LoraSettings",
    "merge_adapters",
    "merge_and_save",
    "METHODS",
    "monitor_hook",
    "NoTargetModulesError",
    "PEFT_METHODS",
    "PeftMethod",
    "PeftSetup",
    "prepare",
]

log = logging.getLogger(__name__)


def default_settings(method: str) -> Settings:
    """The default settings dataclass of ``method``."""
    return PEFT_METHODS[method].settings()


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


@dataclass
class PeftSetup:
    """A model ready for :func:`~molft_utils.training.train.fit` with one fine-tuning method.

    Attributes
    ----------
    model
        The regression model; for adapter methods ``model.backbone`` is a ``peft.PeftModel``.
    hooks
        Pass to ``fit(..., hooks=setup.hooks)``: selects the trainable parameters (and, for
        AdaLoRA, adds the orthogonality regulariser and reallocates the rank budget).
    method
        One of :data:`METHODS`.
    settings
        The settings used.
    n_trainable, n_total, percent_trainable
        Trainable parameters (head included), all parameters of the prepared model (adapter
        parameters included, as ``peft``'s ``print_trainable_parameters`` counts) and their ratio
        in percent.
    n_trainable_backbone
        Trainable parameters without the head.
    target_modules
        Module names (relative to the backbone) that carry adapters; empty for full and BitFit.
    """

    model: RegressionModel
    hooks: TrainHooks
    method: str
    settings: Settings
    n_trainable: int
    n_total: int
    percent_trainable: float
    n_trainable_backbone: int
    target_modules: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """One flat row for a results table."""
        return {
            "method": self.method,
            "n_trainable": self.n_trainable,
            "n_trainable_backbone": self.n_trainable_backbone,
            "n_total": self.n_total,
            "percent_trainable": self.percent_trainable,
            "settings": asdict(self.settings),
        }


def _selector(predicate: Callable[[str], bool]) -> Callable[[nn.Module], list[tuple[str, nn.Parameter]]]:
    """A ``trainable`` hook: the head plus the parameters whose name satisfies ``predicate``.

    Selection is by name, not by ``requires_grad``, because ``fit`` switches ``requires_grad`` on
    for every parameter when it finishes.
    """

    def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if n.startswith("head.") or predicate(n)]

    return trainable


def _is_bias(include_layernorm: bool) -> Callable[[str], bool]:
    def predicate(name: str) -> bool:
        if not name.endswith("bias"):
            return False
        return include_layernorm or "layernorm" not in name.lower()

    return predicate


def _is_adapter(adapter: str, kinds: Sequence[str]) -> Callable[[str], bool]:
    def predicate(name: str) -> bool:
        parts = name.split(".")
        return name.startswith("backbone.") and adapter in parts and any(k in parts for k in kinds)

    return predicate


def _adalora_orthogonal_penalty(backbone: PeftModel, adapter: str) -> torch.Tensor:
    """AdaLoRA's regulariser: mean over adapted matrices of ``||P^T P - I||_F`` / ``||Q Q^T - I||_F``.

    Same computation as ``peft.tuners.adalora.AdaLoraModel.forward``, which only adds it when the
    wrapped model returns a ``loss`` (our encoder has no labels and returns none).
    """
    terms = []
    for name, p in backbone.named_parameters():
        parts = name.split(".")
        if adapter not in parts or not ({"lora_A", "lora_B"} & set(parts)):
            continue
        cov = p @ p.T if "lora_A" in parts else p.T @ p
        eye = torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)
        terms.append(torch.linalg.matrix_norm(cov - eye, ord="fro"))
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean()


@dataclass(frozen=True)
class PeftMethod:
    """A fine-tuning method :func:`prepare` can set up.

    Attributes
    ----------
    settings
        Its settings dataclass (defaults: ``settings()``).
    setup
        ``setup(model, settings, hooks, total_steps) -> target module names``: wraps ``model.backbone`` if the
        method needs it and fills ``hooks`` (at least ``hooks.trainable``); :func:`prepare` does the checks, the
        parameter counts and ``requires_grad``.
    accepts
        The settings type it accepts (default ``settings``; DoRA takes any :class:`LoraSettings`).
    """

    settings: type
    setup: Callable[[RegressionModel, Any, TrainHooks, int | None], list[str]]
    accepts: type | None = None

    def __post_init__(self) -> None:
        if self.accepts is None:
            object.__setattr__(self, "accepts", self.settings)


#: Fine-tuning methods by name; :func:`prepare`, :func:`default_settings` and :data:`METHODS` read it. A new
#: method is one registration (plus its test)::
#:
#:     @dataclass
#:     class HeadOnlySettings:
#:         pass
#:
#:     def _head_only(model, settings, hooks, total_steps):
#:         hooks.trainable = _selector(lambda name: name.startswith("head."))
#:         return []  # no target modules
#:
#:     PEFT_METHODS.register("head-only", PeftMethod(HeadOnlySettings, _head_only))
PEFT_METHODS: Registry[PeftMethod] = Registry("fine-tuning method")
_ADAPTER = "default"


def _setup_full(model: RegressionModel, settings: FullSettings, hooks: TrainHooks, total_steps: int | None) -> list:
    hooks.trainable = _selector(lambda name: True)
    return []


def _setup_bitfit(model: RegressionModel, settings: BitFitSettings, hooks: TrainHooks, total_steps: int | None) -> list:
    is_bias = _is_bias(settings.include_layernorm)
    hooks.trainable = _selector(lambda name: name.startswith("backbone.") and is_bias(name))
    return []


def _lora_setup(dora: bool) -> Callable[[RegressionModel, LoraSettings, TrainHooks, int | None], list[str]]:
    def setup(model: RegressionModel, settings: LoraSettings, hooks: TrainHooks, total_steps: int | None) -> list:
        targets = lora_targets(model.backbone, settings)
        config = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=targets,
            bias="none",
            use_dora=dora,
        )
        model.backbone = get_peft_model(model.backbone, config, adapter_name=_ADAPTER)
        kinds = ("lora_A", "lora_B") + (("lora_magnitude_vector",) if dora else ())
        hooks.trainable = _selector(_is_adapter(_ADAPTER, kinds))
        return targets

    return setup


def _setup_ia3(model: RegressionModel, settings: IA3Settings, hooks: TrainHooks, total_steps: int | None) -> list:
    targets = attention_targets(model.backbone, settings.roles)
    ff = feedforward_targets(model.backbone, settings.feedforward)
    targets += ff
    # for feed-forward modules IA3 rescales the input (the intermediate activation for the
    # down-projection), for the others the output
    config = IA3Config(target_modules=targets, feedforward_modules=ff)
    model.backbone = get_peft_model(model.backbone, config, adapter_name=_ADAPTER)
    hooks.trainable = _selector(_is_adapter(_ADAPTER, ("ia3_l",)))
    return targets


def _setup_adalora(
    model: RegressionModel, settings: AdaLoraSettings, hooks: TrainHooks, total_steps: int | None
) -> list[str]:
    if not total_steps or total_steps <= 0:
        raise ValueError("AdaLoRA needs total_steps (number of optimiser steps of the run)")
    if total_steps < 2:
        # peft's final budget allocation reads importance scores gathered in earlier steps
        raise ValueError("AdaLoRA needs at least 2 optimiser steps (total_steps >= 2)")
    targets = lora_targets(model.backbone, settings)
    tinit = int(settings.warmup_fraction * total_steps)
    tfinal = int(settings.final_fraction * total_steps)
    if tinit >= total_steps - tfinal:
        tinit, tfinal = 0, 0
        log.warning("AdaLoRA: %d steps too few for warm-up/final phases; both set to 0", total_steps)
    config = AdaLoraConfig(
        init_r=settings.init_r,
        target_r=settings.target_r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=settings.delta_t,
        beta1=settings.beta1,
        beta2=settings.beta2,
        orth_reg_weight=settings.orth_reg_weight,
        total_step=total_steps,
        target_modules=targets,
    )
    model.backbone = get_peft_model(model.backbone, config, adapter_name=_ADAPTER)
    hooks.trainable = _selector(_is_adapter(_ADAPTER, ("lora_A", "lora_B", "lora_E")))
    weight = settings.orth_reg_weight

    def extra_loss(m: RegressionModel, batch: dict, pred: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return weight * _adalora_orthogonal_penalty(m.backbone, _ADAPTER).to(pred.device)

    def after_optimizer_step(m: RegressionModel, global_step: int) -> None:
        m.backbone.base_model.update_and_allocate(global_step)

    hooks.extra_loss = extra_loss if weight > 0 else None
    hooks.after_optimizer_step = after_optimizer_step
    return targets


PEFT_METHODS.register("full", PeftMethod(FullSettings, _setup_full))
PEFT_METHODS.register("bitfit", PeftMethod(BitFitSettings, _setup_bitfit))
PEFT_METHODS.register("lora", PeftMethod(LoraSettings, _lora_setup(dora=False)))
PEFT_METHODS.register("ia3", PeftMethod(IA3Settings, _setup_ia3))
PEFT_METHODS.register("adalora", PeftMethod(AdaLoraSettings, _setup_adalora))
PEFT_METHODS.register("dora", PeftMethod(DoraSettings, _lora_setup(dora=True), accepts=LoraSettings))
#: The built-in methods, in the lesson's order (a view of :data:`PEFT_METHODS` at import).
METHODS = PEFT_METHODS.names()


def prepare(
    model: RegressionModel,
    method: str,
    settings: Settings | None = None,
    total_steps: int | None = None,
) -> PeftSetup:
    """Set up ``model`` for fine-tuning with ``method``.

    Parameters
    ----------
    model
        A fresh :class:`~molft_utils.models.backbone.RegressionModel` (its backbone not yet wrapped). For
        adapter methods the backbone is replaced in place by the ``peft`` wrapper.
    method
        One of :data:`METHODS`.
    settings
        The method's settings dataclass; defaults from :func:`default_settings`.
    total_steps
        Number of optimiser steps of the run (``epochs * ceil(n_train / batch_size)``); required
        by AdaLoRA, ignored otherwise.

    Returns
    -------
    PeftSetup
        The model, the :class:`~molft_utils.training.train.TrainHooks` for ``fit`` and parameter counts.
    """
    spec = PEFT_METHODS[method]
    settings = settings if settings is not None else spec.settings()
    if not isinstance(settings, spec.accepts):
        raise TypeError(f"{method} needs {spec.accepts.__name__}, got {type(settings).__name__}")
    if isinstance(model.backbone, PeftModel):
        raise ValueError("the backbone is already wrapped by peft; build a fresh RegressionModel")
    hooks = TrainHooks()
    fast = any(isinstance(m, FastDropout) for m in model.backbone.modules())
    targets = spec.setup(model, settings, hooks, total_steps)
    if fast:
        # peft adds plain nn.Dropout modules (lora_dropout: three per layer for LoRA, DoRA and AdaLoRA); their
        # bernoulli_ masks took 16 % of a LoRA training step (torch.profiler, fp32, 2 threads) and made LoRA's step
        # as long as full fine-tuning's. The model's fast path draws them like its other dropout (same p).
        speed_up_backbone(model.backbone, attention="eager", dropout="fast")

    chosen = hooks.trainable(model)
    if isinstance(model.backbone, PeftModel):
        # peft marks its adapter parameters trainable; the selection by name must agree with it
        by_peft = {f"backbone.{n}" for n, p in model.backbone.named_parameters() if p.requires_grad}
        by_name = {n for n, _ in chosen if not n.startswith("head.")}
        if by_peft != by_name:
            raise RuntimeError(
                f"{method}: trainable-parameter selection disagrees with peft "
                f"(only peft: {sorted(by_peft - by_name)[:3]}, only here: {sorted(by_name - by_peft)[:3]})"
            )
    n_trainable = sum(p.numel() for _, p in chosen)
    n_head = sum(p.numel() for n, p in chosen if n.startswith("head."))
    n_total = sum(p.numel() for p in model.parameters())
    # mirror what fit() will do, so that requires_grad is meaningful before training too
    chosen_ids = {id(p) for _, p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen_ids)
    setup = PeftSetup(
        model=model,
        hooks=hooks,
        method=method,
        settings=settings,
        n_trainable=n_trainable,
        n_total=n_total,
        percent_trainable=100.0 * n_trainable / n_total,
        n_trainable_backbone=n_trainable - n_head,
        target_modules=targets,
    )
    log.info(
        "%s: %d of %d parameters trainable (%.2f %%, %d in the backbone)",
        method,
        n_trainable,
        n_total,
        setup.percent_trainable,
        setup.n_trainable_backbone,
    )
    return setup


def fine_tune(
    backbone: str | Path | None,
    method: str,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    valid_smiles: Sequence[str],
    valid_y: Sequence[float],
    config: Any,
    settings: Settings | None = None,
    progress: bool = False,
    monitor: tuple[Sequence[str], Sequence[float]] | None = None,
) -> tuple[PeftSetup, Any, PreTrainedTokenizerBase]:
    """Load ``backbone`` afresh, prepare ``method`` and train it with :func:`~molft_utils.training.train.fit`.

    Every call starts from the same weights (``torch.manual_seed(config.seed)`` before the head is
    built), so methods and learning rates are compared from an identical start.

    Parameters
    ----------
    backbone
        Folder or name for :func:`~molft_utils.models.backbone.load_backbone` (``None``: embedded default).
    method
        One of :data:`METHODS`.
    train_smiles, train_y, valid_smiles, valid_y
        Data; the validation part drives early stopping.
    config
        A :class:`~molft_utils.training.train.TrainConfig`; ``lr_backbone`` is the rate of every trainable
        encoder parameter, adapters included.
    settings
        Method settings (defaults from :func:`default_settings`).
    monitor
        ``(smiles, labels)`` evaluated after every epoch; its RMSE is stored as ``test_rmse`` in the epoch's
        history row (for :func:`~molft_utils.methods.peft_methods.budget.equal_budget`, which cuts a run at a
        budget and needs the test RMSE of the restored epoch). Monitoring never selects anything (early
        stopping and the restored epoch use validation) and does not change training (no random numbers are
        drawn, the weights are untouched).

    Returns
    -------
    tuple
        The :class:`PeftSetup` (its model trained, best epoch restored), the
        :class:`~molft_utils.training.train.FitResult` and the tokenizer.
    """
    from molft_utils.models.backbone import load_backbone
    from molft_utils.training.train import fit

    encoder, tokenizer = load_backbone(backbone)
    torch.manual_seed(config.seed)
    model = RegressionModel(encoder)
    total_steps = config.epochs * -(-len(train_smiles) // config.batch_size)
    setup = prepare(model, method, settings, total_steps=total_steps)
    if monitor is not None:
        setup.hooks.on_epoch_end = monitor_hook(tokenizer, monitor[0], monitor[1], train_y, config,
                                                setup.hooks.on_epoch_end)
    result = fit(
        setup.model, tokenizer, list(train_smiles), list(train_y), list(valid_smiles), list(valid_y), config,
        hooks=setup.hooks, progress=progress,
    )
    return setup, result, tokenizer


def monitor_hook(
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    labels: Sequence[float],
    train_y: Sequence[float],
    config: Any,
    previous: Callable[[RegressionModel, int, dict], None] | None = None,
    key: str = "test_rmse",
) -> Callable[[RegressionModel, int, dict], None]:
    """An ``on_epoch_end`` hook that stores the RMSE on ``(smiles, labels)`` in each epoch's history row.

    The label scaler is rebuilt from ``train_y`` exactly as :func:`~molft_utils.training.train.fit` builds it
    (``config.target_scaling``), so the RMSE is in label units. ``previous`` (an existing hook) runs first.
    """
    scaler = TargetScaler(config.target_scaling).fit(train_y)
    smiles, y = list(smiles), np.asarray(labels, dtype=float)

    def hook(model: RegressionModel, epoch: int, row: dict) -> None:
        if previous is not None:
            previous(model, epoch, row)
        pred = predict(model, tokenizer, smiles, scaler, config.eval_batch_size, config.mixed_precision)
        row[key] = float(np.sqrt(np.mean((pred - y) ** 2)))

    return hook
