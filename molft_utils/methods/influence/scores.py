"""Influence scores of candidate molecules on a target loss, with the sign convention of the package.

``score(z) = +∇L_targetᵀ (H + λI)⁻¹ ∇L(z) = −I_up,loss(z, target)``: positive = adding ``z`` is predicted to
lower the target loss. :func:`influence_scores` runs the whole pipeline on a
:class:`~molft_utils.models.backbone.RegressionModel`; :func:`benchmark_scoring` times batched against looped
per-sample gradients; :func:`compare_solvers` sets LiSSA against CG on the real model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import PreTrainedTokenizerBase

from molft_utils.methods.influence.hessian import (
    HessianOperator,
    dense_hessian,
    full_gradient,
    hessian_matrix,
    per_sample_gradients,
    per_sample_gradients_loop,
)
from molft_utils.methods.influence.model_fn import (
    collate_smiles,
    regression_loss_fn,
    regression_sample_loss_fn,
    select_parameters,
)
from molft_utils.methods.influence.solvers import SolverInfo, conjugate_gradient, exact_inverse_hvp, lissa
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.train import TargetScaler

__all__ = ["InfluenceResult", "benchmark_scoring", "compare_solvers", "compute_influence", "influence_scores"]

log = logging.getLogger(__name__)


@dataclass
class InfluenceResult:
    """Influence scores of candidate samples.

    Attributes
    ----------
    scores
        ``score(z) = ∇L_targetᵀ (H + λI)⁻¹ ∇L(z) = −I_up,loss(z, target)``; **positive = adding z
        is predicted to lower the target loss (helpful)**. The predicted change of the mean
        target loss when z joins ``n`` training samples is ``≈ −score / n``.
    inverse_hvp
        ``(H + λI)⁻¹ ∇L_target`` (flat, over :attr:`param_names`).
    target_grad
        ``∇L_target`` (flat).
    solver
        Diagnostics of the solve.
    timings
        Seconds per stage (``target_grad``, ``solve``, ``candidate_grads``, ``scoring``; the last
        two are the same fused stage when the gradients are projected chunk by chunk).
    param_names
        The parameters the scores are taken over, in flat-vector order.
    """

    scores: np.ndarray
    inverse_hvp: torch.Tensor
    target_grad: torch.Tensor
    solver: SolverInfo
    timings: dict[str, float] = field(default_factory=dict)
    param_names: list[str] = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return int(self.inverse_hvp.numel())


def _solve(
    hessian: HessianOperator, v: torch.Tensor, solver: str, damping: float, solver_kwargs: Mapping[str, Any] | None
) -> tuple[torch.Tensor, SolverInfo]:
    kw = dict(solver_kwargs or {})
    if solver == "lissa":
        return lissa(hessian, v, damping=damping, **kw)
    if solver == "cg":
        return conjugate_gradient(hessian, v, damping=damping, **kw)
    if solver == "exact":
        t0 = time.perf_counter()
        try:  # forward-over-reverse: one pass per minibatch
            dense = hessian_matrix(hessian.loss_fn, hessian.params, hessian.collate, hessian.n, hessian.batch_size)
            calls = 0
        except (RuntimeError, NotImplementedError) as err:  # an op without forward-mode AD
            log.warning("torch.func.hessian failed (%s); building the Hessian from %d HVPs", err, hessian.dim)
            dense, calls = dense_hessian(hessian, hessian.dim), hessian.dim
        h = exact_inverse_hvp(dense, v, damping)
        return h, SolverInfo("exact", damping, hvp_calls=calls, converged=True, seconds=time.perf_counter() - t0)
    raise ValueError(f"solver must be 'lissa', 'cg' or 'exact', got {solver!r}")


def compute_influence(
    hessian: HessianOperator,
    target_grad: torch.Tensor,
    candidate_grads: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    solver: str = "cg",
    damping: float = 0.01,
    solver_kwargs: Mapping[str, Any] | None = None,
) -> InfluenceResult:
    """Generic influence scores: solve ``(H + λI) h = ∇L_target`` once, then ``scores = G h``.

    Parameters
    ----------
    hessian
        HVPs of the training objective at the trained parameters.
    target_grad
        Flat gradient of the mean target loss.
    candidate_grads
        (m, p) per-candidate gradients, or a function ``f(h) -> (m,)`` returning the candidates'
        gradients already multiplied by ``h`` (so that the (m, p) matrix need not be stored; see
        the ``project`` argument of :func:`per_sample_gradients`).
    solver
        ``"lissa"``, ``"cg"`` or ``"exact"`` (dense; small subsets only).
    damping
        ``λ``.
    solver_kwargs
        Extra arguments of the solver (``scale``, ``depth``, ``tol`` ...).

    Returns
    -------
    InfluenceResult
        With the sign convention of the module: positive score = helpful.
    """
    timings = {}
    t0 = time.perf_counter()
    h, info = _solve(hessian, target_grad, solver, damping, solver_kwargs)
    timings["solve"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if callable(candidate_grads):
        scores = candidate_grads(h).double().numpy()
        timings["candidate_grads"] = timings["scoring"] = time.perf_counter() - t0  # fused
    else:
        scores = (candidate_grads.double() @ h.double()).numpy()
        timings["candidate_grads"], timings["scoring"] = 0.0, time.perf_counter() - t0
    return InfluenceResult(scores, h, target_grad, info, timings, list(hessian.params))


class _EvalFloat:
    """Context: eval mode (dropout off), restored afterwards."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> torch.nn.Module:
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _scaled(y: Sequence[float], scaler: TargetScaler | None) -> np.ndarray:
    return np.asarray(y, dtype=float) if scaler is None else scaler.transform(y)


def influence_scores(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    target_smiles: Sequence[str],
    target_y: Sequence[float],
    pool_smiles: Sequence[str],
    pool_y: Sequence[float],
    scaler: TargetScaler | None = None,
    subset: str | int = "head",
    solver: str = "cg",
    damping: float = 0.01,
    solver_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    chunk_size: int = 32,
    progress: bool = True,
) -> InfluenceResult:
    """Influence of each pool molecule on the mean target-set loss of a fine-tuned model.

    ``s = ∇θ L_target`` (mean squared error on the target set, on the scaled target) is computed
    once, ``(H + λI)⁻¹ s`` is solved once (``H``: Hessian of the mean training MSE over
    ``train_smiles``), and each pool molecule gets ``score(z) = ∇L(z)ᵀ (H + λI)⁻¹ s``.
    Positive score = adding the molecule is predicted to **lower** the target loss (helpful),
    i.e. ``score = −I_up,loss(z, target)`` of Koh & Liang; adding one molecule to ``n`` training
    molecules is up-weighting it by ``1/n``, so ``ΔL_target ≈ −score / n``.

    Parameters
    ----------
    model
        The fine-tuned model (evaluated in eval mode, float32; its mode is restored).
    tokenizer
        Its tokenizer.
    train_smiles, train_y
        The training set defining the Hessian.
    target_smiles, target_y
        The target set (the notebook uses the validation split).
    pool_smiles, pool_y
        Candidates to score.
    scaler
        The :class:`~molft_utils.training.train.TargetScaler` of the fit (labels in original units);
        ``None`` if the labels are already scaled.
    subset
        Parameters, see :func:`select_parameters`.
    solver, damping, solver_kwargs
        See :func:`compute_influence`.
    batch_size
        Minibatch for gradients and HVPs over the training/target sets.
    chunk_size
        vmap chunk for the per-candidate gradients.
    progress
        tqdm bars (``TQDM_DISABLE=1`` silences them).

    Returns
    -------
    InfluenceResult
    """
    device = next(model.parameters()).device
    with _EvalFloat(model):
        params = select_parameters(model, subset)
        sample_loss = regression_sample_loss_fn(model, params)
        loss_fn = regression_loss_fn(model, params)
        train = collate_smiles(tokenizer, train_smiles, _scaled(train_y, scaler), device)
        target = collate_smiles(tokenizer, target_smiles, _scaled(target_y, scaler), device)
        pool = collate_smiles(tokenizer, pool_smiles, _scaled(pool_y, scaler), device)
        hessian = HessianOperator(loss_fn, params, train, len(train_smiles), batch_size)
        t0 = time.perf_counter()
        s = full_gradient(loss_fn, params, target, len(target_smiles), batch_size)
        t_grad = time.perf_counter() - t0
        kw = dict(solver_kwargs or {})
        if solver == "lissa":
            kw.setdefault("progress", progress)
        result = compute_influence(
            hessian,
            s,
            lambda h: per_sample_gradients(
                sample_loss, params, pool, len(pool_smiles), chunk_size, progress, project=h
            ),
            solver=solver,
            damping=damping,
            solver_kwargs=kw,
        )
    result.timings["target_grad"] = t_grad
    log.info("influence over %d parameters (%s): %s", result.n_params, subset, result.timings)
    return result


def benchmark_scoring(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    pool_smiles: Sequence[str],
    pool_y: Sequence[float],
    inverse_hvp: torch.Tensor,
    scaler: TargetScaler | None = None,
    subset: str | int = "head",
    chunk_size: int = 32,
    progress: bool = False,
) -> dict[str, float]:
    """Time per-candidate gradients + scoring: batched ``vmap`` vs the naive per-sample loop.

    Both use the same model, parameters and ``inverse_hvp`` (over the same ``subset``).

    Returns
    -------
    dict
        ``batched_seconds``, ``loop_seconds``, ``speedup`` (loop / batched), ``max_abs_diff``
        between the two score vectors and ``max_abs_score`` for scale.
    """
    device = next(model.parameters()).device
    with _EvalFloat(model):
        params = select_parameters(model, subset)
        sample_loss = regression_sample_loss_fn(model, params)
        pool = collate_smiles(tokenizer, pool_smiles, _scaled(pool_y, scaler), device)
        h = inverse_hvp.double()
        t0 = time.perf_counter()
        m = len(pool_smiles)
        batched = per_sample_gradients(sample_loss, params, pool, m, chunk_size, progress, project=h).double()
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        looped = per_sample_gradients_loop(sample_loss, params, pool, m, progress, project=h).double()
        t_loop = time.perf_counter() - t0
    return {
        "batched_seconds": t_batched,
        "loop_seconds": t_loop,
        "speedup": t_loop / t_batched if t_batched > 0 else float("nan"),
        "max_abs_diff": float((batched - looped).abs().max()),
        "max_abs_score": float(looped.abs().max()),
    }


def compare_solvers(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    target_smiles: Sequence[str],
    target_y: Sequence[float],
    pool_smiles: Sequence[str],
    pool_y: Sequence[float],
    scaler: TargetScaler | None = None,
    subset: str | int = "head",
    damping: float = 0.01,
    lissa_kwargs: Mapping[str, Any] | None = None,
    cg_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    chunk_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """LiSSA vs CG on the real model: relative error of the inverse HVP and Spearman of the scores.

    Both solvers use the same HVPs; the pool gradients are computed once and scored with both
    solutions. ``lissa_kwargs`` must give a ``scale`` above half the largest Hessian eigenvalue
    (see :func:`top_eigenvalue`).

    Returns
    -------
    dict
        ``rel_error`` = ‖h_lissa − h_cg‖ / ‖h_cg‖, ``spearman`` of the two score vectors,
        ``scores_lissa``, ``scores_cg``, ``lissa_info``, ``cg_info``.
    """
    device = next(model.parameters()).device
    with _EvalFloat(model):
        params = select_parameters(model, subset)
        loss_fn = regression_loss_fn(model, params)
        train = collate_smiles(tokenizer, train_smiles, _scaled(train_y, scaler), device)
        target = collate_smiles(tokenizer, target_smiles, _scaled(target_y, scaler), device)
        pool = collate_smiles(tokenizer, pool_smiles, _scaled(pool_y, scaler), device)
        hessian = HessianOperator(loss_fn, params, train, len(train_smiles), batch_size)
        s = full_gradient(loss_fn, params, target, len(target_smiles), batch_size)
        h_l, info_l = _solve(hessian, s, "lissa", damping, lissa_kwargs)
        h_c, info_c = _solve(hessian, s, "cg", damping, cg_kwargs)
        both = torch.stack([h_l, h_c], dim=1)  # one pass over the pool for both solutions
        scores = per_sample_gradients(
            regression_sample_loss_fn(model, params), params, pool, len(pool_smiles), chunk_size, progress, both
        ).double()
    h_c = h_c.double()
    return {
        "rel_error": float((h_l.double() - h_c).norm() / h_c.norm()),
        "spearman": float(spearmanr(scores[:, 0], scores[:, 1]).statistic),
        "scores_lissa": scores[:, 0].numpy(),
        "scores_cg": scores[:, 1].numpy(),
        "lissa_info": info_l,
        "cg_info": info_c,
    }
