"""Gradients, Hessian-vector products and per-sample gradients of a ``loss_fn(params, batch)``.

HVPs are reverse-over-reverse (``vjp`` of ``grad``), averaged over the training set in minibatches; per-sample
gradients are batched with ``vmap(grad(...))`` (the naive loop is kept as the reference); small parameter subsets
get a dense Hessian (two independent ways) and the extreme eigenvalues (Lanczos on HVPs).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.func import grad, vjp, vmap

from molft_utils.core.progress import progress_bar
from molft_utils.methods.influence.model_fn import (
    HVP,
    Batch,
    Collate,
    LossFn,
    Params,
    _chunks,
    _detached,
    flatten,
    unflatten,
)

__all__ = [
    "HessianOperator",
    "dense_hessian",
    "extreme_eigenvalues",
    "full_gradient",
    "hessian_matrix",
    "per_sample_gradients",
    "per_sample_gradients_loop",
    "top_eigenvalue",
]


def full_gradient(
    loss_fn: LossFn, params: Mapping[str, torch.Tensor], collate: Collate, n: int, batch_size: int = 64
) -> torch.Tensor:
    """Flat gradient of the mean loss over ``n`` samples, accumulated in minibatches."""
    p = _detached(params)
    total = torch.zeros(sum(t.numel() for t in p.values()), dtype=torch.float32)
    for idx in _chunks(n, batch_size, getattr(collate, "lengths", None)):
        g = grad(loss_fn)(p, collate(idx))
        total += flatten(g).float().cpu() * (len(idx) / n)
    return total


class HessianOperator:
    """Hessian-vector products of the mean training loss, on flat vectors.

    Parameters
    ----------
    loss_fn
        ``loss_fn(params, batch) -> scalar`` mean loss of a batch.
    params
        The parameters (name → tensor) at which the Hessian is taken; only these vary.
    collate
        ``collate(indices) -> batch`` over the training set.
    n
        Training set size.
    batch_size
        Minibatch size for the full-data average in :meth:`matvec`.

    Notes
    -----
    ``H v = d/dθ (∇θL · v)`` is computed reverse-over-reverse (``vjp`` of ``grad``), which also
    works for losses whose forward-mode derivative PyTorch lacks. Damping is not added here; the
    solvers add ``λ v``.
    """

    def __init__(
        self, loss_fn: LossFn, params: Mapping[str, torch.Tensor], collate: Collate, n: int, batch_size: int = 64
    ) -> None:
        self.loss_fn = loss_fn
        self.params = _detached(params)
        self.collate = collate
        self.n = n
        self.batch_size = batch_size
        self.dim = sum(t.numel() for t in self.params.values())
        self.calls = 0
        self._grad = grad(loss_fn)

    def batch_matvec(self, v: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``H_B v`` for the mean loss of one batch."""
        self.calls += 1
        _, vjp_fn = vjp(lambda p: self._grad(p, batch), self.params)
        like = self.params
        (hv,) = vjp_fn(unflatten(v.to(next(iter(like.values())).device), like))
        return flatten(hv).float().cpu()

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` averaged over the whole training set (minibatches weighted by their size)."""
        out = torch.zeros_like(v, dtype=torch.float32)
        for idx in _chunks(self.n, self.batch_size, getattr(self.collate, "lengths", None)):
            out += self.batch_matvec(v, self.collate(idx)) * (len(idx) / self.n)
        return out

    def sample_matvec(self, v: torch.Tensor, batch_size: int, rng: np.random.Generator) -> torch.Tensor:
        """``H v`` on a freshly sampled minibatch (without replacement) — LiSSA's stochastic HVP."""
        idx = rng.choice(self.n, size=min(batch_size, self.n), replace=False)
        return self.batch_matvec(v, self.collate(idx))

    __call__ = matvec


def _project(g: torch.Tensor, project: torch.Tensor | None) -> torch.Tensor:
    g = g.float().cpu()
    return g if project is None else (g.double() @ project).float()


def per_sample_gradients(
    sample_loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    collate: Collate,
    n: int,
    chunk_size: int = 32,
    progress: bool = False,
    project: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample gradients, batched with ``vmap(grad(...))``: an (n, p) float32 matrix.

    ``sample_loss_fn(params, batch)`` returns per-sample losses (B,) (see
    :func:`regression_sample_loss_fn`); each sample is evaluated as a batch of one with its own
    attention mask under ``vmap``, so padding to the chunk's longest sequence does not change
    it. Chunks are sorted by length to keep padding small.

    With ``project`` ((p,) or (p, k)) the gradients of each chunk are multiplied by it at once
    and only the (n,) or (n, k) products are kept: scoring 300 molecules over all 3.4 M
    parameters would otherwise need a 4 GB matrix.
    """
    p = _detached(params)

    def one(pp: Params, sample: Batch) -> torch.Tensor:
        return sample_loss_fn(pp, {k: v.unsqueeze(0) for k, v in sample.items()}).sum()

    batched = vmap(grad(one), in_dims=(None, 0))
    dim = sum(t.numel() for t in p.values())
    proj = None if project is None else project.detach().double().cpu()
    out = torch.empty((n, dim) if proj is None else (n, *proj.shape[1:]), dtype=torch.float32)
    for idx in progress_bar(_chunks(n, chunk_size, getattr(collate, "lengths", None)), desc="grads", progress=progress):
        g = batched(p, collate(idx))
        flat = torch.cat([t.reshape(len(idx), -1) for t in g.values()], dim=1)
        out[torch.as_tensor(idx, dtype=torch.long)] = _project(flat, proj)
    return out


def per_sample_gradients_loop(
    sample_loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    collate: Collate,
    n: int,
    progress: bool = False,
    project: torch.Tensor | None = None,
) -> torch.Tensor:
    """The naive reference: one forward/backward per sample (batch size 1), plain autograd.

    Same output as :func:`per_sample_gradients` (including ``project``).
    """
    names = list(params)
    dim = sum(t.numel() for t in params.values())
    proj = None if project is None else project.detach().double().cpu()
    out = torch.empty((n, dim) if proj is None else (n, *proj.shape[1:]), dtype=torch.float32)
    for i in progress_bar(range(n), desc="grads (loop)", progress=progress):
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        loss = sample_loss_fn(p, collate(np.array([i]))).sum()
        grads = torch.autograd.grad(loss, [p[k] for k in names], allow_unused=True)
        # unused parameters (the RoFormer's fixed sinusoidal table) get zeros, as under torch.func
        grads = [torch.zeros_like(p[k]) if g is None else g for k, g in zip(names, grads, strict=True)]
        out[i] = _project(flatten(grads)[None], proj)[0]
    return out


def dense_hessian(hvp: HVP, dim: int) -> torch.Tensor:
    """Dense (dim, dim) Hessian from ``dim`` HVPs with unit vectors, symmetrised (small subsets only)."""
    if dim > 5000:
        raise ValueError(f"dense Hessian of {dim} parameters is too large; use a smaller subset")
    cols = [hvp(torch.nn.functional.one_hot(torch.tensor(j), dim).float()) for j in range(dim)]
    h = torch.stack(cols, dim=1).double()
    return 0.5 * (h + h.T)


def hessian_matrix(
    loss_fn: LossFn, params: Mapping[str, torch.Tensor], collate: Collate, n: int, batch_size: int = 64
) -> torch.Tensor:
    """Dense Hessian of the mean loss over ``n`` samples with ``torch.func.hessian`` (float64, small subsets).

    Independent of :class:`HessianOperator` (forward-over-reverse instead of reverse-over-reverse),
    so it serves as a reference for the HVPs.
    """
    p = _detached(params)
    names = list(p)
    dim = sum(t.numel() for t in p.values())
    if dim > 5000:
        raise ValueError(f"dense Hessian of {dim} parameters is too large; use a smaller subset")
    total = torch.zeros(dim, dim, dtype=torch.float64)
    for idx in _chunks(n, batch_size, getattr(collate, "lengths", None)):
        h = torch.func.hessian(loss_fn)(p, collate(idx))
        rows = [torch.cat([h[a][b].reshape(p[a].numel(), p[b].numel()) for b in names], dim=1) for a in names]
        total += torch.cat(rows, dim=0).double().cpu() * (len(idx) / n)
    return 0.5 * (total + total.T)


def extreme_eigenvalues(hvp: HVP, dim: int, tol: float = 1e-3, maxiter: int | None = None) -> tuple[float, float]:
    """Smallest and largest eigenvalue of H by Lanczos (``scipy.sparse.linalg.eigsh`` on HVPs).

    Use them to set the solvers: ``damping > −λ_min`` makes ``H + λI`` positive definite, and
    LiSSA needs ``scale > (λ_max + damping) / 2`` (``scale ≈ λ_max + damping`` is safe).
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    def mv(x: np.ndarray) -> np.ndarray:
        return hvp(torch.as_tensor(np.asarray(x).reshape(-1), dtype=torch.float32)).double().numpy()

    op = LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
    lo = eigsh(op, k=1, which="SA", tol=tol, maxiter=maxiter, return_eigenvectors=False)
    hi = eigsh(op, k=1, which="LA", tol=tol, maxiter=maxiter, return_eigenvectors=False)
    return float(lo[0]), float(hi[0])


def top_eigenvalue(hvp: HVP, dim: int, iters: int = 30, seed: int = 0) -> float:
    """Largest-magnitude eigenvalue of H by power iteration (to choose LiSSA's ``scale``)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=gen)
    v /= v.norm()
    lam = 0.0
    for _ in range(iters):
        hv = hvp(v)
        lam = float(v @ hv)
        norm = hv.norm()
        if norm == 0:
            return 0.0
        v = hv / norm
    return lam
