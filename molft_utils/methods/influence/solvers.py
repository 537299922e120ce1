"""Solvers for ``(H + λI)⁻¹ v`` from Hessian-vector products: LiSSA, conjugate gradients, a dense solve.

* :func:`lissa` — the stochastic Neumann-series estimator of Agarwal, Bullins & Hazan (2017, JMLR), as used by
  Koh & Liang, with a convergence monitor, its final residual and divergence detection;
* :func:`conjugate_gradient` — the deterministic reference (needs ``H + λI`` positive definite);
* :func:`exact_inverse_hvp` on a dense Hessian, for small parameter subsets.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from molft_utils.core.progress import progress_bar
from molft_utils.methods.influence.hessian import HessianOperator
from molft_utils.methods.influence.model_fn import HVP

__all__ = ["LissaDivergenceError", "SolverInfo", "conjugate_gradient", "exact_inverse_hvp", "lissa"]


class LissaDivergenceError(RuntimeError):
    """The LiSSA recursion diverged (NaN/inf or a norm growing past the bound)."""


@dataclass
class SolverInfo:
    """Diagnostics of an inverse-HVP solve.

    ``history`` holds one row per recorded step: for LiSSA ``{"repeat", "step", "rel_change",
    "norm"}`` (relative change of the current estimate since the previous record), for CG
    ``{"step", "rel_residual"}``.
    """

    solver: str
    damping: float
    iterations: int = 0
    hvp_calls: int = 0
    converged: bool = False
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _apply(
    hvp: HVP | HessianOperator, v: torch.Tensor, batch_size: int | None, rng: np.random.Generator
) -> torch.Tensor:
    if batch_size is not None:
        if not isinstance(hvp, HessianOperator):
            raise TypeError("minibatch LiSSA needs a HessianOperator (it samples the training set)")
        return hvp.sample_matvec(v, batch_size, rng)
    return hvp(v)


def lissa(
    hvp: HVP | HessianOperator,
    v: torch.Tensor,
    scale: float = 10.0,
    damping: float = 0.01,
    depth: int = 1000,
    repeats: int = 1,
    batch_size: int | None = None,
    seed: int = 0,
    record_every: int = 10,
    tol: float | None = None,
    max_growth: float = 10.0,
    progress: bool = False,
) -> tuple[torch.Tensor, SolverInfo]:
    """Estimate ``(H + λI)⁻¹ v`` with LiSSA (Agarwal, Bullins & Hazan 2017; Koh & Liang 2017).

    The recursion ``h₀ = v``, ``h_j = v + (1 − λ/scale) h_{j−1} − H h_{j−1} / scale`` is the
    truncated Neumann series of ``scale · (H + λI)⁻¹ v``; the estimate is ``h_depth / scale``.
    The series converges when all eigenvalues of ``H + λI`` lie in ``(0, 2·scale)``: ``scale``
    must exceed ``(λ_max + λ) / 2`` and ``λ`` must exceed ``−λ_min`` (see
    :func:`extreme_eigenvalues`); the error shrinks like ``(1 − (λ_min + λ)/scale)^depth``, so
    ``depth`` of a few times ``scale / (λ_min + λ)`` is needed.

    Note on conventions: Koh & Liang's code writes ``(1 − d) h`` with a "damping" ``d``; that
    solves ``(H + d·scale·I)⁻¹``. Here ``damping`` is the ``λ`` of ``(H + λI)`` directly, so
    the result is comparable with :func:`conjugate_gradient` and :func:`exact_inverse_hvp`
    at the same ``damping``.

    Parameters
    ----------
    hvp
        A :class:`HessianOperator` or any ``v -> H v`` callable on flat vectors.
    v
        Right-hand side (flat).
    scale, damping
        See above.
    depth
        Recursion steps per repeat.
    repeats
        Independent runs averaged (reduces the variance of minibatch HVPs).
    batch_size
        If given, each step uses ``H v`` on a fresh random minibatch of this size (needs a
        :class:`HessianOperator`); ``None`` uses the full-data HVP (deterministic).
    seed
        Seed of the minibatch sampler.
    record_every
        Record the relative change ``‖h_j − h_{j−r}‖ / ‖h_j‖`` every this many steps.
    tol
        Stop a repeat early once the recorded relative change falls below ``tol``.
    max_growth
        Divergence bound: with a convergent recursion ``‖h_j‖ ≤ (j+1)‖v‖``; the run is declared
        divergent when ``‖h_j‖ > max_growth · (j+1) · ‖v‖``.
    progress
        tqdm bar (``TQDM_DISABLE=1`` silences it).

    Returns
    -------
    (h, SolverInfo)
        The estimate of ``(H + λI)⁻¹ v`` and its diagnostics. ``converged`` is true when every
        repeat ended with a recorded relative change below ``tol`` (below 1e-3 if ``tol`` is
        None); with minibatch HVPs the relative change levels off at the sampling noise.

    Raises
    ------
    LissaDivergenceError
        If the iterate becomes NaN/inf or grows past the bound; the message suggests a larger
        ``scale`` or ``damping``.
    """
    if scale <= 0 or damping < 0 or depth < 1 or repeats < 1:
        raise ValueError("need scale > 0, damping >= 0, depth >= 1, repeats >= 1")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    v = v.detach().float().cpu()
    v_norm = float(v.norm())
    info = SolverInfo(
        "lissa", damping, extra={"scale": scale, "depth": depth, "repeats": repeats, "batch_size": batch_size}
    )
    if v_norm == 0:
        info.converged = True
        return torch.zeros_like(v), info
    estimates = []
    bar = progress_bar(total=depth * repeats, desc="LiSSA", progress=progress)
    for r in range(repeats):
        h = v.clone()
        last = h.clone()
        converged = False
        for j in range(1, depth + 1):
            h = v + (1.0 - damping / scale) * h - _apply(hvp, h, batch_size, rng) / scale
            info.hvp_calls += 1
            bar.update(1)
            norm = float(h.norm())
            bound = max_growth * (j + 1) * v_norm
            if not math.isfinite(norm) or norm > bound:
                bar.close()
                raise LissaDivergenceError(
                    f"LiSSA diverged at repeat {r}, step {j}: ‖h‖ = {norm:.3g} (bound {bound:.3g})."
                    f" The recursion needs the eigenvalues of H + λI in (0, 2·scale): increase `scale` (now {scale:g};"
                    f" it must exceed half the largest Hessian eigenvalue, see top_eigenvalue) or `damping` (now"
                    f" {damping:g}; it must exceed minus the most negative eigenvalue)."
                )
            if j % record_every == 0 or j == depth:
                rel = float((h - last).norm()) / max(norm, 1e-30)
                info.history.append({"repeat": r, "step": j, "rel_change": rel, "norm": norm / scale})
                last = h.clone()
                if tol is not None and rel < tol:
                    converged = True
                    break
        info.iterations += j
        estimates.append(h / scale)
        ok = converged or (tol is None and info.history[-1]["rel_change"] < 1e-3)
        info.converged = ok if r == 0 else info.converged and ok
    bar.close()
    info.seconds = time.perf_counter() - t0
    return torch.stack(estimates).mean(0), info


def conjugate_gradient(
    hvp: HVP | HessianOperator,
    v: torch.Tensor,
    damping: float = 0.01,
    tol: float = 1e-6,
    max_iter: int = 200,
    x0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SolverInfo]:
    """Solve ``(H + λI) x = v`` by conjugate gradients (the deterministic reference).

    CG requires ``H + λI`` symmetric positive definite. The Hessian of the training loss is
    positive semi-definite only near a minimum of a convex-in-θ loss; a fine-tuned network is
    usually not there, so choose ``damping`` larger than minus its most negative eigenvalue.

    Parameters
    ----------
    hvp
        ``v -> H v`` (full data, deterministic).
    v
        Right-hand side.
    damping
        ``λ``.
    tol
        Stop when ``‖r‖ ≤ tol · ‖v‖``.
    max_iter
        Iteration cap (exact arithmetic converges in ``dim`` steps).
    x0
        Optional starting point.

    Returns
    -------
    (x, SolverInfo)

    Raises
    ------
    ValueError
        On non-positive curvature ``pᵀ(H + λI)p ≤ 0`` (the damping is too small).
    """
    t0 = time.perf_counter()
    v = v.detach().double().cpu()
    b_norm = float(v.norm())
    info = SolverInfo("cg", damping, extra={"tol": tol, "max_iter": max_iter})
    if b_norm == 0:
        info.converged = True
        return torch.zeros_like(v).float(), info

    def op(x: torch.Tensor) -> torch.Tensor:
        info.hvp_calls += 1
        return hvp(x.float()).double() + damping * x

    x = torch.zeros_like(v) if x0 is None else x0.detach().double().cpu().clone()
    r = v - op(x) if x0 is not None else v.clone()
    p = r.clone()
    rs = float(r @ r)
    for it in range(1, max_iter + 1):
        ap = op(p)
        curv = float(p @ ap)
        if curv <= 0:
            raise ValueError(
                f"CG met non-positive curvature pᵀ(H + λI)p = {curv:.3g} at iteration {it}: H + λI is not positive"
                f" definite; increase `damping` (now {damping:g})."
            )
        alpha = rs / curv
        x += alpha * p
        r -= alpha * ap
        rs_new = float(r @ r)
        rel = math.sqrt(rs_new) / b_norm
        info.history.append({"step": it, "rel_residual": rel})
        info.iterations = it
        if rel <= tol:
            info.converged = True
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    info.seconds = time.perf_counter() - t0
    return x.float(), info


def exact_inverse_hvp(h_dense: torch.Tensor, v: torch.Tensor, damping: float = 0.0) -> torch.Tensor:
    """``(H + λI)⁻¹ v`` by a dense float64 solve (small parameter subsets only)."""
    h = h_dense.double()
    eye = torch.eye(h.shape[0], dtype=torch.float64, device=h.device)
    return torch.linalg.solve(h + damping * eye, v.double().to(h.device)).float().cpu()
