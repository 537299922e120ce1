"""The method registries (:data:`TRAINED`, :data:`POST_HOC`, :data:`MECHANISM`) and the older step-budget protocol
(:func:`fit_steps`, :func:`train_method`, :func:`run_setting`: every method on one label setting, post-hoc methods
from Full FT). Lesson 05 now runs the epoch-budgeted protocol of :mod:`.few_label` (issue 21); the step-budget
functions stay for their tests and for reading the records they wrote."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from molft_utils.core.registry import Registry
from molft_utils.methods.robust.combine import greedy_soup, uniform_soup, wise_ft
from molft_utils.methods.robust.partial import linear_probe_hooks, surgical_hooks
from molft_utils.methods.robust.penalties import bss_hooks, feature_map_hooks, l2sp_hooks, snapshot_state
from molft_utils.methods.robust.roft_mol import fit_roft_mol
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.convergence import combine_convergence, convergence, fit_convergence
from molft_utils.training.metrics import regression_metrics
from molft_utils.training.train import FitResult, TargetScaler, TrainConfig, TrainHooks, fit, predict

__all__ = [
    "starting_model",
    "fit_steps",
    "MECHANISM",
    "MethodOptions",
    "POST_HOC",
    "POST_HOC_METHODS",
    "REGULARISED",
    "repeats_for_steps",
    "run_setting",
    "SettingResult",
    "train_method",
    "TRAINED",
    "TRAINED_METHODS",
    "TrainedMethod",
    "wise_curve",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- few-shot protocol
def repeats_for_steps(n_train: int, steps: int, batch_size: int, eval_every: int) -> tuple[int, int]:
    """How to express a budget of optimisation steps as epochs of :func:`~molft_utils.training.train.fit`.

    With few labels an epoch is a handful of steps, and validating after every one would cost more
    than training. The training set is therefore repeated ``k`` times per "epoch" so that one epoch
    has at least ``eval_every`` steps, and the number of such epochs that best matches ``steps`` is
    used (at least one). Exact repetition leaves the min-max and standard target scalers unchanged.

    Returns
    -------
    (k, epochs)
        Repeats of the training set per epoch and number of epochs.
    """
    if min(n_train, steps, batch_size, eval_every) < 1:
        raise ValueError("n_train, steps, batch_size and eval_every must be >= 1")
    k = max(1, -(-eval_every * batch_size // n_train))
    per_epoch = -(-k * n_train // batch_size)
    return k, max(1, int(round(steps / per_epoch)))


def fit_steps(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    valid_smiles: Sequence[str],
    valid_y: Sequence[float],
    steps: int,
    eval_every: int,
    config: TrainConfig,
    hooks: TrainHooks | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> FitResult:
    """:func:`~molft_utils.training.train.fit` for about ``steps`` optimisation steps, validating every ``eval_every``.

    See :func:`repeats_for_steps`; ``config.epochs`` is replaced, early stopping (``config.patience``)
    counts validations. ``FitResult.config`` records the epochs actually configured and the history
    rows count validations as epochs.
    """
    k, epochs = repeats_for_steps(len(train_smiles), steps, config.batch_size, eval_every)
    cfg = TrainConfig(**{**config.__dict__, "epochs": epochs})
    res = fit(
        model,
        tokenizer,
        list(train_smiles) * k,
        list(np.asarray(train_y, dtype=float)) * k,
        valid_smiles,
        valid_y,
        cfg,
        hooks,
        device,
        progress,
    )
    res.config |= {"repeats_per_epoch": k, "steps_per_epoch": -(-k * len(train_smiles) // config.batch_size)}
    return res


@dataclass(frozen=True)
class MethodOptions:
    """What a trained method's :attr:`TrainedMethod.build` may read (the arguments of :func:`train_method`)."""

    pretrained_backbone: PreTrainedModel
    config: TrainConfig
    strength: float | None
    surgical_group: str
    l2sp_beta: float
    lp_lr_head: float | None


@dataclass(frozen=True)
class TrainedMethod:
    """A method trained by gradient descent from the pretrained backbone.

    Attributes
    ----------
    mechanism
        Its mechanism in RoFt-Mol's taxonomy: ``"reference"``, ``"partial"``, ``"representation"``, ``"weight"``.
    build
        ``build(options) -> (train_config, hooks)`` for :func:`fit` (``hooks`` ``None`` for plain fine-tuning).
    strength
        What the strength swept on validation is (``"delta"``, ``"alpha"``), or ``None`` if nothing is swept.
    """

    mechanism: str
    build: Callable[[MethodOptions], tuple[TrainConfig, TrainHooks | None]]
    strength: str | None = None


#: Trained methods by name; :func:`train_method` and :func:`run_setting` dispatch on it. A new method is one
#: registration (plus its test)::
#:
#:     TRAINED.register("My-reg", TrainedMethod("weight", lambda o: (o.config, my_hooks(o.strength)), "alpha"))
#:
#: after which ``run_setting(..., methods=("Full FT", "My-reg"))`` trains, sweeps and reports it.
TRAINED: Registry[TrainedMethod] = Registry("trained robust method")
TRAINED.register("Full FT", TrainedMethod("reference", lambda o: (o.config, None)))
TRAINED.register(
    "LP",
    TrainedMethod(
        "partial",
        lambda o: (
            o.config if o.lp_lr_head is None else TrainConfig(**{**o.config.__dict__, "lr_head": o.lp_lr_head}),
            linear_probe_hooks(),
        ),
    ),
)
TRAINED.register("Surgical", TrainedMethod("partial", lambda o: (o.config, surgical_hooks(o.surgical_group))))
TRAINED.register("LP-FT", TrainedMethod("partial", lambda o: (o.config, None)))  # full FT from the probed model
TRAINED.register(
    "Feature-map",
    TrainedMethod(
        "representation", lambda o: (o.config, feature_map_hooks(o.pretrained_backbone, float(o.strength))), "delta"
    ),
)
TRAINED.register(
    "BSS", TrainedMethod("representation", lambda o: (o.config, bss_hooks(float(o.strength), k=1)), "delta")
)
TRAINED.register(
    "L2-SP",
    TrainedMethod(
        "weight",
        lambda o: (
            TrainConfig(**{**o.config.__dict__, "weight_decay": 0.0}),  # AdamW's decoupled decay off
            l2sp_hooks(snapshot_state(o.pretrained_backbone), float(o.strength), o.l2sp_beta),
        ),
        "alpha",
    ),
)

#: Post-hoc weight-space methods built from fine-tuned models, name → mechanism (built in :func:`run_setting`).
POST_HOC: Registry[str] = Registry("post-hoc robust method")
for _name in ("WiSE-FT", "Uniform soup", "Greedy soup", "RoFt-Mol"):
    POST_HOC.register(_name, "weight")

#: The built-in names, in the lesson's order (views of the registries as they are at import).
TRAINED_METHODS = TRAINED.names()
POST_HOC_METHODS = POST_HOC.names()
#: Method → mechanism in RoFt-Mol's taxonomy ("reference" for full fine-tuning).
MECHANISM = {**{n: m.mechanism for n, m in TRAINED.items()}, **dict(POST_HOC.items())}
#: Methods whose strength is swept on validation (name → what the strength is).
REGULARISED = {n: m.strength for n, m in TRAINED.items() if m.strength is not None}


def starting_model(start: RegressionModel | None, pretrained_backbone: PreTrainedModel, seed: int) -> RegressionModel:
    """A copy of ``start`` (e.g. the probed model LP-FT continues), else the backbone with a head seeded by ``seed``."""
    if start is not None:
        return copy.deepcopy(start)
    torch.manual_seed(seed)
    return RegressionModel(copy.deepcopy(pretrained_backbone))


def train_method(
    method: str,
    pretrained_backbone: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    valid_smiles: Sequence[str],
    valid_y: Sequence[float],
    config: TrainConfig,
    steps: int,
    eval_every: int,
    strength: float | None = None,
    surgical_group: str = "late",
    l2sp_beta: float = 0.01,
    lp_lr_head: float | None = None,
    start: RegressionModel | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> tuple[RegressionModel, FitResult]:
    """Fine-tune a fresh :class:`RegressionModel` on the pretrained backbone with one of :data:`TRAINED_METHODS`.

    Parameters
    ----------
    method
        ``"Full FT"``, ``"LP"`` (head only, learning rate ``lp_lr_head``), ``"Surgical"`` (``surgical_group``
        + head), ``"LP-FT"`` (full fine-tuning starting from ``start``, the linear-probed model; probed here
        first when ``start`` is None), ``"Feature-map"`` (δ = ``strength``), ``"BSS"`` (δ = ``strength``, k = 1)
        or ``"L2-SP"`` (α = ``strength``, β = ``l2sp_beta``; AdamW's decoupled weight decay is switched off).
    pretrained_backbone
        Copied, never modified.
    config
        Batch size, learning rates, seed, …; the number of epochs comes from ``steps`` / ``eval_every``.

    Returns
    -------
    (model, fit_result)
        For LP-FT the result of the second stage.
    """
    spec = TRAINED[method]
    if spec.strength is not None and strength is None:
        raise ValueError(f"{method} needs a strength")
    data = (tokenizer, train_smiles, train_y, valid_smiles, valid_y)
    if method == "LP-FT" and start is None:
        start, _ = train_method("LP", pretrained_backbone, *data, config, steps, eval_every, lp_lr_head=lp_lr_head,
                                device=device, progress=progress)  # fmt: skip
    model = starting_model(start, pretrained_backbone, config.seed)
    cfg, hooks = spec.build(MethodOptions(pretrained_backbone, config, strength, surgical_group, l2sp_beta, lp_lr_head))
    res = fit_steps(model, *data, steps, eval_every, cfg, hooks, device, progress)
    return model, res


def wise_curve(
    pretrained_state: Mapping[str, torch.Tensor],
    finetuned_model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    scaler: TargetScaler,
    alphas: Sequence[float],
    parts: Mapping[str, tuple[Sequence[str], Sequence[float]]],
) -> list[dict]:
    """RMSE of the WiSE-FT model at each α on each named part (e.g. valid and test).

    Returns one row per α: ``{"alpha": α, "<part>_rmse": …}``.
    """
    rows = []
    for a in alphas:
        model = wise_ft(pretrained_state, finetuned_model, float(a))
        row: dict = {"alpha": float(a)}
        for name, (smiles, y) in parts.items():
            row[f"{name}_rmse"] = regression_metrics(np.asarray(y, float), predict(model, tokenizer, smiles, scaler))[
                "rmse"
            ]
        rows.append(row)
    return rows


@dataclass
class SettingResult:
    """Everything :func:`run_setting` measured in one (split, label budget) setting.

    Attributes
    ----------
    test_metrics
        Method → :func:`~molft_utils.training.metrics.regression_metrics` on the test part.
    valid_rmse
        Method → validation RMSE of the kept model (RoFt-Mol: on the selection half only).
    sweep
        Regularised method → {strength: best validation RMSE}; ``chosen`` holds the selected strength.
    wise
        WiSE-FT curve rows (``alpha``, ``valid_rmse``, ``test_rmse``); ``wise_alpha`` the α chosen on validation.
    roft_alphas, roft_history, roft_best_step
        Learned α per layer group and the fitting history of RoFt-Mol.
    soup
        ``{"ingredients": [...], "rows": [...]}`` of the greedy soup (indices into ``soup_members``).
    histories, seconds
        Training history and wall seconds per method.
    convergence
        Method → :func:`.convergence` of its kept model (``best_epoch``, ``epochs_run`` in
        validations, ``patience``, ``converged``, ...). WiSE-FT and the soups are built from Full FT models and
        RoFt-Mol also from its α fit: theirs is :func:`.combine_convergence` of those parts.
    sweep_convergence
        Regularised method → {strength: convergence} of every candidate of its strength sweep.
    """

    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    valid_rmse: dict[str, float] = field(default_factory=dict)
    sweep: dict[str, dict[float, float]] = field(default_factory=dict)
    chosen: dict[str, float] = field(default_factory=dict)
    wise: list[dict] = field(default_factory=list)
    wise_alpha: float = float("nan")
    roft_alphas: dict[str, float] = field(default_factory=dict)
    roft_history: list[dict] = field(default_factory=list)
    roft_best_step: int = 0
    soup: dict = field(default_factory=dict)
    soup_members: list[str] = field(default_factory=list)
    histories: dict[str, list[dict]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    convergence: dict[str, dict] = field(default_factory=dict)
    sweep_convergence: dict[str, dict[float, dict]] = field(default_factory=dict)


def run_setting(
    pretrained_backbone: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: tuple[Sequence[str], Sequence[float]],
    valid: tuple[Sequence[str], Sequence[float]],
    test: tuple[Sequence[str], Sequence[float]],
    config: TrainConfig,
    methods: Sequence[str],
    steps: int,
    eval_every: int,
    strengths: Mapping[str, Sequence[float]] | None = None,
    surgical_group: str = "late",
    l2sp_beta: float = 0.01,
    lp_lr_head: float | None = None,
    soup_lr_factors: Sequence[float] = (0.5, 2.0),
    wise_alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0),
    roft_steps: int = 60,
    roft_lr: float = 1e-2,
    full_ft: tuple[RegressionModel, FitResult] | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> SettingResult:
    """Run the robust fine-tuning benchmark in one setting: every method from the same pretrained backbone.

    Protocol: every trained method gets the same step budget (:func:`fit_steps`) and early stopping on the
    same validation part; a regularised method with several strengths is trained once per strength and
    the one with the lowest validation RMSE is kept; WiSE-FT's α is chosen on validation from
    ``wise_alphas``; the soups mix the Full FT model with one model per ``soup_lr_factors`` (learning
    rates multiplied, seed + i); RoFt-Mol fits α on one random half of validation and selects the step on
    the other (:func:`fit_roft_mol`), starting from the Full FT model. The test part is only predicted.

    Parameters
    ----------
    train, valid, test
        (SMILES, labels) of each part; ``train`` is already the label subset.
    methods
        Any of :data:`TRAINED_METHODS` and :data:`POST_HOC_METHODS`; post-hoc methods need ``"Full FT"``
        (trained here unless ``full_ft`` is given, e.g. notebook 01's cached model for all labels).
    strengths
        Regularised method → strengths to sweep (one value: no sweep).
    """
    unknown = set(methods) - set(TRAINED) - set(POST_HOC)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}")
    strengths = dict(strengths or {})
    out = SettingResult()
    pt_state = snapshot_state(pretrained_backbone)
    data = (tokenizer, train[0], train[1], valid[0], valid[1])
    models: dict[str, tuple[RegressionModel, TargetScaler]] = {}

    def record(name: str, model: RegressionModel, scaler: TargetScaler, valid_rmse: float) -> None:
        models[name] = (model, scaler)
        out.valid_rmse[name] = float(valid_rmse)
        pred = predict(model, tokenizer, test[0], scaler)
        out.test_metrics[name] = regression_metrics(np.asarray(test[1], float), pred)

    def valid_rmse_of(model: RegressionModel, scaler: TargetScaler) -> float:
        return regression_metrics(np.asarray(valid[1], float), predict(model, tokenizer, valid[0], scaler))["rmse"]

    def train(method: str, **kw) -> tuple[RegressionModel, FitResult]:
        t0 = time.perf_counter()
        model, res = train_method(
            method, pretrained_backbone, *data, kw.pop("config", config), steps, eval_every,
            surgical_group=surgical_group, l2sp_beta=l2sp_beta, lp_lr_head=lp_lr_head, device=device,
            progress=progress, **kw,
        )  # fmt: skip
        out.seconds[method] = out.seconds.get(method, 0.0) + time.perf_counter() - t0
        return model, res

    needs_full = any(m in POST_HOC for m in methods) or "Full FT" in methods
    if needs_full:
        if full_ft is not None:
            model, res = full_ft
        else:
            model, res = train("Full FT")
        out.histories["Full FT"] = res.history
        out.convergence["Full FT"] = fit_convergence(res)
        record("Full FT", model, res.scaler, res.best_valid_rmse)
    for method in [m for m in TRAINED if m in methods and m != "Full FT"]:
        if method == "LP-FT":
            start = models["LP"][0] if "LP" in models else None
            model, res = train("LP-FT", start=start)
        elif TRAINED[method].strength is not None:
            values = list(strengths.get(method, ()))
            if not values:
                raise ValueError(f"no strength given for {method}")
            trained = {}
            for v in values:
                trained[float(v)] = train(method, strength=float(v))
            out.sweep[method] = {v: r.best_valid_rmse for v, (_, r) in trained.items()}
            out.sweep_convergence[method] = {v: fit_convergence(r) for v, (_, r) in trained.items()}
            out.chosen[method] = min(out.sweep[method], key=out.sweep[method].get)
            model, res = trained[out.chosen[method]]
        else:
            model, res = train(method)
        out.histories[method] = res.history
        out.convergence[method] = fit_convergence(res)
        record(method, model, res.scaler, res.best_valid_rmse)

    if not any(m in POST_HOC for m in methods):
        return out
    ft_model, ft_scaler = models["Full FT"]
    if "WiSE-FT" in methods:
        t0 = time.perf_counter()
        out.wise = wise_curve(pt_state, ft_model, tokenizer, ft_scaler, wise_alphas, {"valid": valid, "test": test})
        best = min(out.wise, key=lambda r: r["valid_rmse"])
        out.wise_alpha = best["alpha"]
        record("WiSE-FT", wise_ft(pt_state, ft_model, out.wise_alpha), ft_scaler, best["valid_rmse"])
        out.convergence["WiSE-FT"] = combine_convergence({"Full FT": out.convergence["Full FT"]}, "built from Full FT")
        out.seconds["WiSE-FT"] = time.perf_counter() - t0
    if "Uniform soup" in methods or "Greedy soup" in methods:
        t0 = time.perf_counter()
        members, out.soup_members = [ft_model], ["Full FT"]
        for i, factor in enumerate(soup_lr_factors, start=1):
            scaled = {"lr_backbone": config.lr_backbone * factor, "lr_head": config.lr_head * factor}
            cfg = TrainConfig(**{**config.__dict__, "seed": config.seed + i, **scaled})
            model, res = train("Full FT", config=cfg)
            members.append(model)
            out.soup_members.append(f"Full FT (lr x{factor}, seed +{i})")
            out.histories[out.soup_members[-1]] = res.history
            out.convergence[out.soup_members[-1]] = fit_convergence(res)
        # the soup members share the Full FT scaler: same training labels, hence identical min-max scaling
        if "Uniform soup" in methods:
            soup = uniform_soup(members)
            record("Uniform soup", soup, ft_scaler, valid_rmse_of(soup, ft_scaler))
        if "Greedy soup" in methods:
            soup, ingredients, rows = greedy_soup(members, lambda m: valid_rmse_of(m, ft_scaler))
            out.soup = {"ingredients": ingredients, "rows": rows}
            record("Greedy soup", soup, ft_scaler, min(r["soup_score"] for r in rows if r["accepted"]))
        parts = {m: out.convergence[m] for m in out.soup_members}
        for soup_name in ("Uniform soup", "Greedy soup"):
            if soup_name in out.test_metrics:
                out.convergence[soup_name] = combine_convergence(parts, "built from the Full FT soup members")
        out.seconds["soups"] = time.perf_counter() - t0
    if "RoFt-Mol" in methods:
        t0 = time.perf_counter()
        roft = fit_roft_mol(
            pt_state, ft_model, tokenizer, valid[0], valid[1], ft_scaler, steps=roft_steps, lr=roft_lr,
            batch_size=max(8, config.batch_size), eval_every=max(1, roft_steps // 6), patience=3, seed=config.seed,
            device=device, progress=progress,
        )  # fmt: skip
        out.roft_alphas, out.roft_history, out.roft_best_step = roft.alphas, roft.history, roft.best_step
        alpha_fit = convergence(roft.history, patience=3, key="select_rmse")  # the patience passed above
        out.convergence["RoFt-Mol"] = combine_convergence(
            {"Full FT": out.convergence["Full FT"], "α fit": alpha_fit}, "built from Full FT and its α fit"
        )
        record("RoFt-Mol", roft.model, ft_scaler, roft.best_select_rmse)
        out.seconds["RoFt-Mol"] = time.perf_counter() - t0
    order = [m for m in (*TRAINED, *POST_HOC) if m in out.test_metrics]
    out.test_metrics = {m: out.test_metrics[m] for m in order}
    return out
