"""Parameter-efficient fine-tuning (PEFT) of the regression model with Hugging Face ``peft``.

Full fine-tuning updates every weight of the encoder. The methods here train a small fraction:

* **BitFit** (Ben Zaken et al., ACL 2022, arXiv:2106.10199) trains only the bias terms of the
  encoder (every ``*.bias``, LayerNorm biases included).
* **LoRA** (Hu et al., ICLR 2022, arXiv:2106.09685) freezes a weight ``W`` and learns a low-rank
  update ``W + (alpha / r) B A`` with ``A`` (r x in) and ``B`` (out x r, zero-initialised); here on
  the query, key and value projections of self-attention.
* **DoRA** (Liu et al., ICML 2024, arXiv:2402.09353) splits ``W`` into magnitude and direction and
  applies LoRA to the direction only (``LoraConfig(use_dora=True)``).
* **AdaLoRA** (Zhang et al., ICLR 2023, arXiv:2303.10512) parametrises the update as ``P Λ Q``
  (SVD form), scores the importance of each singular triplet during training and prunes the rank
  budget down to ``target_r`` on average; it needs the total number of optimiser steps, a call of
  ``update_and_allocate`` after every optimiser step and an orthogonality regulariser on ``P``
  and ``Q``.
* **(IA)³** (Liu et al., NeurIPS 2022, arXiv:2205.05638) learns vectors that rescale the keys, the
  values and the feed-forward intermediate activation (= the input of the FFN down-projection).

The regression head always trains. Only the encoder (``model.backbone``) is wrapped with
:func:`peft.get_peft_model`; the head stays a plain module outside it. Target modules are found
*by role* in the module tree (:func:`attention_targets`, :func:`feedforward_targets`) and passed to
``peft`` as full module names, so the same call works for the embedded RoFormer and for
MoLFormer-XL, and ``output.dense`` of the FFN is never confused with ``attention.output.dense``.

Typical use::

    setup = prepare(RegressionModel(backbone), "lora", total_steps=steps)
    result = fit(setup.model, tokenizer, ..., hooks=setup.hooks)
    merge_and_save(setup.model, out_dir)  # a plain RegressionModel checkpoint

:func:`peak_memory` and :func:`inference_seconds` are the measurements of notebook 04, which also uses
:func:`fine_tune` (fresh backbone → prepare → fit), :func:`training_memory_subprocess` (peak memory of a
method measured in a fresh process, so that run order does not matter), :func:`parameter_budget` with
:func:`encoder_without_weights` (trainable-parameter counts of a larger model, e.g. MoLFormer-XL's shape,
computed without weights) and :func:`pareto_figure`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import AdaLoraConfig, IA3Config, LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedTokenizerBase

from molft_utils.core.registry import Registry
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.train import TargetScaler, TrainHooks, predict

__all__ = [
    "METHODS",
    "AdaLoraSettings",
    "BitFitSettings",
    "DoraSettings",
    "FullSettings",
    "IA3Settings",
    "LoraSettings",
    "NoTargetModulesError",
    "PEFT_METHODS",
    "PeakMemory",
    "PeftMethod",
    "PeftSetup",
    "attention_targets",
    "default_settings",
    "encoder_without_weights",
    "feedforward_targets",
    "fine_tune",
    "inference_seconds",
    "merge_adapters",
    "merge_and_save",
    "parameter_budget",
    "pareto_figure",
    "peak_memory",
    "prepare",
    "training_memory_subprocess",
]

log = logging.getLogger(__name__)


_ATTENTION_ROLES = {"query": ("query", "q_proj"), "key": ("key", "k_proj"), "value": ("value", "v_proj")}


class NoTargetModulesError(ValueError):
    """No module of the requested role was found in the backbone."""


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


@dataclass
class FullSettings:
    """Full fine-tuning: every parameter trains (nothing to set)."""


@dataclass
class BitFitSettings:
    """BitFit: every bias of the encoder trains (plus the head).

    Attributes
    ----------
    include_layernorm
        Also train the LayerNorm biases (the BitFit paper trains all bias terms).
    """

    include_layernorm: bool = True


@dataclass
class LoraSettings:
    """LoRA on self-attention.

    Attributes
    ----------
    r, alpha, dropout
        Rank, scaling numerator (update scaled by ``alpha / r``) and dropout on the LoRA input.
    roles
        Attention projections to adapt, a subset of ``("query", "key", "value")``.
    feedforward
        Also adapt the FFN: ``"none"``, ``"up"``, ``"down"`` or ``"both"``.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    roles: tuple[str, ...] = ("query", "key", "value")
    feedforward: str = "none"


@dataclass
class DoraSettings(LoraSettings):
    """DoRA: LoRA on the direction of the weight plus a trainable magnitude vector."""


@dataclass
class AdaLoraSettings:
    """AdaLoRA on self-attention.

    Attributes
    ----------
    init_r, target_r
        Initial rank of every adapted matrix and the average rank left after budget pruning.
    alpha, dropout
        As for LoRA.
    warmup_fraction, final_fraction
        ``tinit`` and ``tfinal`` of AdaLoRA as fractions of the total steps: steps before the
        first pruning and steps at the end with a frozen rank pattern.
    delta_t
        Steps between two budget allocations.
    beta1, beta2
        EMA coefficients of the importance score and of its uncertainty.
    orth_reg_weight
        Weight of the orthogonality regulariser ``||P^T P - I||_F + ||Q Q^T - I||_F``.
    roles
        Attention projections to adapt.
    """

    init_r: int = 12
    target_r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    warmup_fraction: float = 0.1
    final_fraction: float = 0.2
    delta_t: int = 10
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    roles: tuple[str, ...] = ("query", "key", "value")


@dataclass
class IA3Settings:
    """(IA)³: learned rescaling of keys, values and the FFN intermediate activation.

    Attributes
    ----------
    roles
        Attention projections whose output is rescaled (the paper: key and value).
    feedforward
        Which FFN projection to adapt; ``"down"`` rescales its input, i.e. the intermediate
        activation, as in the paper. ``"up"`` rescales the up-projection's output, ``"both"`` does
        both.
    """

    roles: tuple[str, ...] = ("key", "value")
    feedforward: str = "down"


Settings = FullSettings | BitFitSettings | LoraSettings | DoraSettings | AdaLoraSettings | IA3Settings

def default_settings(method: str) -> Settings:
    """The default settings dataclass of ``method``."""
    return PEFT_METHODS[method].settings()


# ---------------------------------------------------------------------------------------------
# target modules by role
# ---------------------------------------------------------------------------------------------


def _linear_children(module: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in module.named_children() if isinstance(m, nn.Linear)}


def attention_targets(backbone: nn.Module, roles: Sequence[str] = ("query", "key", "value")) -> list[str]:
    """Full names of the self-attention projections of ``backbone``.

    A module whose linear children are named ``query``/``key``/``value`` (BERT, RoFormer,
    MoLFormer: ``encoder.layer.{i}.attention.self.query``) or ``q_proj``/``k_proj``/``v_proj`` is a
    self-attention block; the requested projections of every such block are returned.

    Parameters
    ----------
    backbone
        The encoder (not wrapped by peft).
    roles
        Any of ``"query"``, ``"key"``, ``"value"``.

    Raises
    ------
    NoTargetModulesError
        When no self-attention projection is found.
    """
    unknown = set(roles) - set(_ATTENTION_ROLES)
    if unknown or not roles:
        raise ValueError(f"roles must be a non-empty subset of {tuple(_ATTENTION_ROLES)}, got {tuple(roles)}")
    found: list[str] = []
    for name, module in backbone.named_modules():
        linears = _linear_children(module)
        for spelling in range(2):
            names = {role: _ATTENTION_ROLES[role][spelling] for role in _ATTENTION_ROLES}
            if all(n in linears for n in names.values()):
                found += [f"{name}.{names[role]}" if name else names[role] for role in roles]
    if not found:
        raise NoTargetModulesError(
            f"no self-attention projections (query/key/value or q_proj/k_proj/v_proj linear layers) found in "
            f"{type(backbone).__name__}"
        )
    return found


def feedforward_targets(backbone: nn.Module, part: str = "both") -> list[str]:
    """Full names of the feed-forward projections of every transformer layer of ``backbone``.

    A transformer layer is recognised as a module with an ``intermediate`` child holding a linear
    ``dense`` (the up-projection, hidden → intermediate) and an ``output`` child holding a linear
    ``dense`` (the down-projection, intermediate → hidden). The attention output projection
    (``attention.output.dense``) lives one level deeper, under ``attention``, and is therefore never
    returned.

    Parameters
    ----------
    backbone
        The encoder (not wrapped by peft).
    part
        ``"up"`` (``intermediate.dense``), ``"down"`` (the layer's ``output.dense``) or ``"both"``.

    Raises
    ------
    NoTargetModulesError
        When no feed-forward block is found.
    """
    if part not in ("up", "down", "both"):
        raise ValueError(f"part must be 'up', 'down' or 'both', got {part!r}")
    found: list[str] = []
    for name, module in backbone.named_modules():
        children = dict(module.named_children())
        up = children.get("intermediate")
        down = children.get("output")
        if up is None or down is None:
            continue
        up_dense, down_dense = getattr(up, "dense", None), getattr(down, "dense", None)
        if not (isinstance(up_dense, nn.Linear) and isinstance(down_dense, nn.Linear)):
            continue
        if up_dense.out_features != down_dense.in_features:
            continue
        prefix = f"{name}." if name else ""
        if part in ("up", "both"):
            found.append(f"{prefix}intermediate.dense")
        if part in ("down", "both"):
            found.append(f"{prefix}output.dense")
    if not found:
        raise NoTargetModulesError(
            "no feed-forward block (intermediate.dense + output.dense linear layers) found in "
            f"{type(backbone).__name__}"
        )
    return found


def _lora_targets(backbone: nn.Module, settings: LoraSettings | AdaLoraSettings) -> list[str]:
    targets = attention_targets(backbone, settings.roles)
    ff = getattr(settings, "feedforward", "none")
    if ff != "none":
        targets += feedforward_targets(backbone, ff)
    return targets


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
        targets = _lora_targets(model.backbone, settings)
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
    targets = _lora_targets(model.backbone, settings)
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
    targets = spec.setup(model, settings, hooks, total_steps)

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


# ---------------------------------------------------------------------------------------------
# merge and save
# ---------------------------------------------------------------------------------------------


def merge_adapters(model: RegressionModel) -> RegressionModel:
    """Fold LoRA/DoRA/AdaLoRA/IA3 adapters into the base weights, in place.

    After merging ``model.backbone`` is the plain encoder again (``merge_and_unload``); for full
    fine-tuning and BitFit (no wrapper) the model is returned unchanged.
    """
    if isinstance(model.backbone, PeftModel):
        model.backbone = model.backbone.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def merge_and_save(model: RegressionModel, path: str | Path, extra: dict | None = None) -> Path:
    """Merge the adapters into the backbone and save a plain :class:`RegressionModel` checkpoint.

    The result loads with :meth:`RegressionModel.load` without ``peft``. ``model`` itself is merged
    in place (its backbone is no longer a ``PeftModel`` afterwards).

    Parameters
    ----------
    model
        A model prepared by :func:`prepare` (any method) and trained.
    path
        Output folder.
    extra
        Metadata stored in ``regression.json`` next to ``{"merged_from": <peft type or None>}``.
    """
    peft_type = None
    if isinstance(model.backbone, PeftModel):
        peft_type = str(model.backbone.peft_config[model.backbone.active_adapter].peft_type.value)
    merge_adapters(model)
    return model.save(path, {"merged_from": peft_type} | (extra or {}))


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------


def _rss_bytes() -> int | None:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return None
    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class PeakMemory:
    """Result of :func:`peak_memory`: peak memory increase in MiB while the block ran.

    Attributes
    ----------
    peak_mib
        Peak increase over the level at entry (``nan`` when not measurable).
    baseline_mib
        The level at entry (CUDA: allocated tensors; CPU: process resident set size).
    source
        ``"cuda"``, ``"rss"`` or ``"unavailable"``.
    samples
        Number of RSS samples taken (CPU only).
    """

    peak_mib: float = float("nan")
    baseline_mib: float = float("nan")
    source: str = "unavailable"
    samples: int = 0


@contextlib.contextmanager
def peak_memory(device: torch.device | str | None = None, interval: float = 0.005) -> Iterator[PeakMemory]:
    """Measure the peak memory increase of the ``with`` block.

    On CUDA the peak is ``torch.cuda.max_memory_allocated`` (exact, tensors only). On CPU a
    background thread samples the resident set size from ``/proc/self/statm`` every ``interval``
    seconds and the peak increase over the value at entry is reported.

    Limitations of the CPU number: it is the whole process (other threads, Python objects, the
    allocator's caches), it can miss spikes shorter than ``interval``, and memory freed before the
    block but still held by the allocator makes the increase look smaller; compare methods in
    fresh processes, or at least in the same order, for a fair comparison. Linux only (``nan``
    elsewhere).

    Examples
    --------
    >>> with peak_memory() as mem:          # doctest: +SKIP
    ...     fit(setup.model, tokenizer, ...)
    >>> mem.peak_mib                       # doctest: +SKIP
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    result = PeakMemory()
    mib = 1024.0**2
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result.baseline_mib, result.source = base / mib, "cuda"
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result.peak_mib = (torch.cuda.max_memory_allocated(device) - base) / mib
        return
    base = _rss_bytes()
    if base is None:
        log.warning("peak_memory: /proc/self/statm not available, CPU memory not measured")
        yield result
        return
    result.baseline_mib, result.source = base / mib, "rss"
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = _rss_bytes() or 0
            peak[0] = max(peak[0], rss)
            result.samples += 1
            stop.wait(interval)

    thread = threading.Thread(target=sample, name="peak_memory", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes() or 0)
        result.peak_mib = (peak[0] - base) / mib


def inference_seconds(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    batch_size: int = 128,
    repeats: int = 3,
    mixed_precision: str = "auto",
) -> float:
    """Median wall time in seconds to predict ``smiles`` (tokenisation included), after one warm-up.

    Use it to compare an adapter model before and after :func:`merge_adapters` (unmerged LoRA adds
    two small matrix products per adapted layer; merged it costs the same as the base model).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    scaler = TargetScaler("none")
    predict(model, tokenizer, smiles[: min(len(smiles), batch_size)], scaler, batch_size, mixed_precision)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(model, tokenizer, smiles, scaler, batch_size, mixed_precision)
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


# ---------------------------------------------------------------------------------------------
# parameter budgets without weights, memory in a fresh process, Pareto figure (notebook 04)
# ---------------------------------------------------------------------------------------------


def encoder_without_weights(
    num_layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    intermediate: int = 3072,
    vocab_size: int = 2362,
    max_positions: int = 512,
) -> nn.Module:
    """A RoFormer encoder with the given shapes on the ``meta`` device (no weights).

    Used to *compute* (not measure) parameter budgets of a larger model, e.g. MoLFormer-XL's
    published shape (12 layers, hidden 768, 12 heads). Module names match MoLFormer's
    (``encoder.layer.{i}.attention.self.{query,key,value}``, ``intermediate.dense``, ``output.dense``),
    so :func:`prepare` targets the same projections. MoLFormer's linear attention adds only small
    feature-map parameters, which this stand-in does not have.
    """
    from transformers import RoFormerConfig, RoFormerModel

    config = RoFormerConfig(
        vocab_size=vocab_size,
        embedding_size=hidden,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
    )
    with torch.device("meta"):
        return RoFormerModel(config)


def parameter_budget(
    backbone: nn.Module,
    methods: Sequence[str] = METHODS,
    settings: dict[str, Settings] | None = None,
    total_steps: int = 1000,
) -> list[dict[str, Any]]:
    """Trainable-parameter counts of every method for ``backbone`` (which is not modified).

    Each method is applied to a deep copy of ``backbone`` inside a fresh
    :class:`~molft_utils.models.backbone.RegressionModel`; works on ``meta``-device encoders from
    :func:`encoder_without_weights`.

    Returns
    -------
    list of dict
        Per method: ``n_trainable``, ``n_trainable_backbone``, ``n_total``, ``n_head``,
        ``n_backbone`` (base encoder parameters, adapters excluded), ``percent_trainable`` (of
        everything, head included, as peft counts) and ``percent_backbone`` (trainable encoder
        parameters relative to the base encoder).
    """
    import copy

    settings = settings or {}
    rows = []
    n_backbone = sum(p.numel() for p in backbone.parameters())
    on_meta = next(backbone.parameters()).device.type == "meta"
    for method in methods:
        encoder = copy.deepcopy(backbone)
        if on_meta:
            # peft treats meta tensors specially (e.g. AdaLoRA's ranknum becomes trainable); uninitialised
            # CPU memory is allocated instead, which is fast and enough for counting
            encoder = encoder.to_empty(device="cpu")
        reg = RegressionModel(encoder)
        setup = prepare(reg, method, settings.get(method), total_steps=total_steps)
        n_head = setup.n_trainable - setup.n_trainable_backbone
        rows.append(
            {
                "method": method,
                "n_trainable": setup.n_trainable,
                "n_trainable_backbone": setup.n_trainable_backbone,
                "n_head": n_head,
                "n_backbone": n_backbone,
                "n_total": setup.n_total,
                "percent_trainable": setup.percent_trainable,
                "percent_backbone": 100.0 * setup.n_trainable_backbone / n_backbone,
            }
        )
    return rows


def _memory_child(queue: Any, job: dict[str, Any]) -> None:  # pragma: no cover - runs in a subprocess
    """Subprocess body of :func:`training_memory_subprocess`."""
    import resource

    from transformers.utils import logging as hf_logging

    from molft_utils.models.backbone import load_backbone
    from molft_utils.training.train import TrainConfig, fit

    hf_logging.disable_progress_bar()  # the child's stderr lands in the notebook: no "Loading weights" bars
    try:
        torch.set_num_threads(job["threads"])
        torch.manual_seed(job["seed"])
        backbone, tokenizer = load_backbone(job["backbone"])
        model = RegressionModel(backbone)
        steps_per_epoch = -(-len(job["smiles"]) // job["batch_size"])
        setup = prepare(model, job["method"], total_steps=steps_per_epoch)
        config = TrainConfig(
            epochs=1, batch_size=job["batch_size"], lr_backbone=job["lr"], patience=1, seed=job["seed"]
        )
        n_valid = min(len(job["smiles"]), job["batch_size"])
        with peak_memory("cpu", interval=0.002) as mem:
            fit(
                setup.model, tokenizer, job["smiles"], job["labels"], job["smiles"][:n_valid],
                job["labels"][:n_valid], config, hooks=setup.hooks, progress=False,
            )
        maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
        queue.put({"peak_mib": mem.peak_mib, "baseline_mib": mem.baseline_mib, "maxrss_mib": maxrss_mib,
                   "samples": mem.samples, "steps": steps_per_epoch, "error": None})
    except Exception as exc:  # report instead of hanging the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def training_memory_subprocess(
    backbone: str | Path,
    method: str,
    smiles: Sequence[str],
    labels: Sequence[float],
    lr: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    threads: int = 1,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Peak CPU memory of one short training epoch of ``method``, measured in a fresh process.

    In one long-lived process the resident set size depends on what ran before (the allocator keeps
    freed memory), so :func:`peak_memory` numbers are order-dependent. Here every method starts in a
    new ``spawn``-ed interpreter: it loads ``backbone`` (a folder for
    :func:`~molft_utils.models.backbone.load_backbone`), prepares ``method`` and trains one epoch on
    ``smiles``; the peak RSS increase over the level after loading is reported (sampled every 2 ms,
    so it can still miss very short spikes), together with the process's lifetime ``maxrss``.

    Returns
    -------
    dict
        ``peak_mib`` (increase during training), ``baseline_mib`` (RSS after loading),
        ``maxrss_mib``, ``samples``, ``steps``; ``error`` is None or the child's exception.
    """
    import multiprocessing as mp

    PEFT_METHODS.check(method)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    job = {
        "backbone": str(backbone), "method": method, "smiles": list(smiles), "labels": [float(y) for y in labels],
        "lr": float(lr), "batch_size": int(batch_size), "seed": int(seed), "threads": int(threads),
    }
    proc = ctx.Process(target=_memory_child, args=(queue, job), daemon=True)
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception as exc:  # queue.Empty on timeout
        result = {"error": f"no result from the measuring process ({type(exc).__name__})"}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    if result.get("error"):
        log.warning("memory measurement of %s failed: %s", method, result["error"])
        result.setdefault("peak_mib", float("nan"))
    return result


def pareto_figure(rows: Sequence[dict[str, Any]], x: str = "n_trainable_backbone", y: str = "test_rmse",
                  size: str = "seconds_per_epoch", title: str = "", unit: str = "logD") -> Any:
    """Test RMSE (``unit`` on the axis) against trainable parameters (log scale), marker area ∝ ``size``.

    The Pareto front (no other method has both fewer trainable parameters and a lower RMSE) is
    drawn as a step line. ``rows`` are dicts with ``method`` and the three keys.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    sizes = [float(r[size]) for r in rows]
    scale = 400.0 / max(max(sizes), 1e-9)
    for i, r in enumerate(rows):
        ax.scatter(max(r[x], 1), r[y], s=max(scale * float(r[size]), 15.0), alpha=0.6, color=f"C{i % 10}",
                   edgecolor="k", label=f"{r['method']} ({float(r[size]):.1f} s/epoch)")
        ax.annotate(r["method"], (max(r[x], 1), r[y]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    front = sorted(rows, key=lambda r: (r[x], r[y]))
    best, pts = float("inf"), []
    for r in front:
        if r[y] < best:
            best = r[y]
            pts.append((max(r[x], 1), r[y]))
    if len(pts) > 1:
        ax.step(*zip(*pts, strict=True), where="post", color="grey", lw=1, ls="--", label="Pareto front")
    ax.set(xscale="log", xlabel=f"trainable parameters ({x.replace('_', ' ')}, log scale)",
           ylabel=f"test RMSE ({unit})", title=title)
    ax.legend(frameon=False, fontsize=7, loc="best")
    fig.tight_layout()
    return fig


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
    result = fit(
        setup.model, tokenizer, list(train_smiles), list(train_y), list(valid_smiles), list(valid_y), config,
        hooks=setup.hooks, progress=progress,
    )
    return setup, result, tokenizer
