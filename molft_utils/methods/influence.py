"""Influence functions for scoring candidate training molecules.

Koh & Liang (2017, "Understanding black-box predictions via influence functions", ICML) estimate
how the loss on a test point changes when a training point ``z`` is up-weighted by ``ε``:

    I_up,loss(z, z_test) = −∇θL(z_test)ᵀ H⁻¹ ∇θL(z),

where ``H`` is the Hessian of the (empirical, possibly regularised) training objective at the
trained parameters. Adding ``z`` to a training set of ``n`` molecules is (to first order) the
same as up-weighting it by ``ε = 1/n``, so the predicted change of the target loss is
``ΔL_target ≈ I_up,loss(z, target) / n``.

**Sign convention used everywhere in this module** (one convention, no exceptions)::

    score(z) = +∇L_targetᵀ (H + λI)⁻¹ ∇L(z) = −I_up,loss(z, target)

A **positive score means that adding z is predicted to lower the target loss** (a helpful
sample); a negative score flags a harmful one (for example a molecule with a wrong label). The
target loss is the mean loss over a target set (the notebook uses the validation split).

``H⁻¹ v`` is never formed for a transformer: the solvers only need Hessian-vector products
(HVPs), computed with ``torch.func`` (reverse-over-reverse: ``vjp`` of ``grad``), averaged over
the training set in minibatches. Three solvers for ``(H + λI)⁻¹ v`` are provided:

* :func:`lissa` — the stochastic Neumann-series estimator of Agarwal, Bullins & Hazan (2017,
  "Second-order stochastic optimization for machine learning in linear time", JMLR), as used by
  Koh & Liang, with a convergence monitor and divergence detection;
* :func:`conjugate_gradient` — the deterministic reference (needs ``H + λI`` positive definite);
* :func:`exact_inverse_hvp` on a dense Hessian (:func:`dense_hessian`) for small parameter
  subsets (tests, the regression head).

``H`` is positive semi-definite only at a minimum of a convex-in-θ loss; a fine-tuned network
early-stopped on validation loss is neither, so ``H`` can have negative eigenvalues. The damping
``λ`` (a stand-in for the L2/weight-decay term of the objective) shifts the spectrum and must be
large enough to make ``H + λI`` positive definite; otherwise CG breaks down and LiSSA diverges.

Per-candidate gradients are computed batched with ``torch.func.vmap(torch.func.grad(...))``;
the naive per-sample loop is kept as a reference and for the speed benchmark.

Everything is written for a generic ``loss_fn(params, batch) -> scalar mean loss`` where
``params`` is an ordered ``dict`` name → tensor, so the same solver code is tested on ridge
regression (closed form available) and used on :class:`~molft_utils.models.backbone.RegressionModel`
through :func:`regression_loss_fn`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import functional_call, grad, vjp, vmap
from transformers import PreTrainedTokenizerBase

from molft_utils.core.progress import progress_bar
from molft_utils.models.backbone import RegressionModel, mean_pool
from molft_utils.training.collate import encode
from molft_utils.training.train import TargetScaler

__all__ = [
    "HessianOperator",
    "InfluenceResult",
    "LissaDivergenceError",
    "SolverInfo",
    "benchmark_scoring",
    "collate_smiles",
    "compare_solvers",
    "compute_influence",
    "conjugate_gradient",
    "dense_hessian",
    "exact_inverse_hvp",
    "flatten",
    "extreme_eigenvalues",
    "full_gradient",
    "hessian_matrix",
    "influence_scores",
    "lissa",
    "per_sample_gradients",
    "per_sample_gradients_loop",
    "regression_loss_fn",
    "regression_sample_loss_fn",
    "select_parameters",
    "top_eigenvalue",
    "unflatten",
]

log = logging.getLogger(__name__)

Params = dict[str, torch.Tensor]
Batch = Mapping[str, torch.Tensor]
LossFn = Callable[[Params, Batch], torch.Tensor]
Collate = Callable[[np.ndarray], Batch]
HVP = Callable[[torch.Tensor], torch.Tensor]

_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


def select_parameters(
    model: torch.nn.Module, subset: str | int = "head", k: int = 1
) -> OrderedDict[str, torch.nn.Parameter]:
    """Choose the parameters whose influence is computed.

    Parameters
    ----------
    model
        A :class:`~molft_utils.models.backbone.RegressionModel` (names ``head.*`` and
        ``backbone.encoder.layer.{i}.*``).
    subset
        ``"head"`` (the regression head only), ``"last_k"`` (the last ``k`` encoder layers and the
        head), ``"last_<int>"`` such as ``"last_2"``, an ``int`` (same as ``"last_<int>"``), or
        ``"all"`` (every parameter with ``requires_grad``).
    k
        Number of encoder layers for ``subset="last_k"``.

    Returns
    -------
    OrderedDict
        Name → parameter, in ``model.named_parameters()`` order.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(subset, str) and subset.startswith("last_"):
        subset = k if subset == "last_k" else int(subset.removeprefix("last_"))
    if subset == "all":
        chosen = named
    elif subset == "head":
        chosen = [(n, p) for n, p in named if n.startswith("head.")]
    elif isinstance(subset, int) and not isinstance(subset, bool):
        layers = sorted({int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))})
        if subset < 0 or subset > len(layers):
            raise ValueError(f"cannot take the last {subset} of {len(layers)} encoder layers")
        keep = set(layers[len(layers) - subset :])
        chosen = [
            (n, p) for n, p in named if n.startswith("head.") or ((m := _LAYER.search(n)) and int(m.group(1)) in keep)
        ]
    else:
        raise ValueError(f"subset must be 'head', 'all', 'last_k', 'last_<int>' or an int, got {subset!r}")
    if not chosen:
        raise ValueError(f"subset {subset!r} selects no parameters")
    return OrderedDict(chosen)


def flatten(tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors (dict values in order, or a sequence) into one flat vector."""
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    return torch.cat([t.reshape(-1) for t in values])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    """Split a flat vector into tensors shaped like ``like`` (inverse of :func:`flatten`)."""
    out, start = {}, 0
    for name, t in like.items():
        out[name] = vector[start : start + t.numel()].view_as(t)
        start += t.numel()
    if start != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, parameters need {start}")
    return out


def _detached(params: Mapping[str, torch.Tensor]) -> Params:
    return {n: p.detach() for n, p in params.items()}


# --------------------------------------------------------------------------------------------
# the regression model as a function of a parameter subset
# --------------------------------------------------------------------------------------------


def _additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A ready 4D additive mask: transformers returns it as-is, which skips its data-dependent
    # "is there any padding?" check that vmap cannot trace (RoFormer uses eager attention).
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def regression_sample_loss_fn(model: RegressionModel, params: Mapping[str, torch.Tensor]) -> LossFn:
    """Per-batch squared error of ``model`` as a pure function of the chosen parameters.

    The returned ``loss_fn(params, batch)`` evaluates the model with
    :func:`torch.func.functional_call` (parameters not in ``params`` stay fixed, detached), in
    float32 without autocast, and returns the **per-sample** losses ``(pred − y)²``, shape (B,).
    ``batch`` has ``input_ids``, ``attention_mask`` (B, T) and ``y`` (B,) on the scaled target.
    The model must be in eval mode when the function runs (dropout off); the public functions
    of this module take care of that.

    The backbone gets a ready 4D additive attention mask (``0`` / ``finfo.min``), which the
    project's RoFormer (eager attention) uses as-is; a 2D mask would make transformers check the
    mask's values in Python, which ``vmap`` cannot trace. Backbones with their own masking (the
    MoLFormer remote code) would need another adapter.
    """
    names = set(params)
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    buffers = dict(model.named_buffers())

    def per_sample(p: Params, batch: Batch) -> torch.Tensor:
        full = {**frozen, **buffers, **p}
        backbone = {n.removeprefix("backbone."): v for n, v in full.items() if n.startswith("backbone.")}
        head = {n.removeprefix("head."): v for n, v in full.items() if n.startswith("head.")}
        mask = batch["attention_mask"]
        with torch.autocast(device_type=mask.device.type, enabled=False):
            hidden = functional_call(
                model.backbone,
                backbone,
                args=(),
                kwargs={"input_ids": batch["input_ids"], "attention_mask": _additive_mask(mask, torch.float32)},
            ).last_hidden_state
            pred = functional_call(model.head, head, (mean_pool(hidden.float(), mask),)).squeeze(-1)
            return (pred - batch["y"]) ** 2

    return per_sample


def regression_loss_fn(model: RegressionModel, params: Mapping[str, torch.Tensor]) -> LossFn:
    """Mean squared error (the fine-tuning loss) of ``model`` as ``loss_fn(params, batch)``.

    See :func:`regression_sample_loss_fn`; this is its batch mean (a scalar).
    """
    per_sample = regression_sample_loss_fn(model, params)
    return lambda p, batch: per_sample(p, batch).mean()


def collate_smiles(
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    y_scaled: Sequence[float],
    device: torch.device | str = "cpu",
) -> Collate:
    """A ``collate(indices) -> batch`` over tokenised SMILES with scaled labels (dynamic padding)."""
    ids = encode(tokenizer, smiles)
    y = torch.as_tensor(np.asarray(y_scaled, dtype=np.float32))
    if len(ids) != len(y):
        raise ValueError(f"{len(ids)} SMILES but {len(y)} labels")

    def collate(idx: np.ndarray) -> Batch:
        padded = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
        return {
            "input_ids": padded["input_ids"].to(device),
            "attention_mask": padded["attention_mask"].to(device),
            "y": y[torch.as_tensor(np.asarray(idx), dtype=torch.long)].to(device),
        }

    collate.lengths = np.array([len(x) for x in ids])  # type: ignore[attr-defined]
    return collate


def _chunks(n: int, size: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    order = np.argsort(lengths, kind="stable") if lengths is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]


# --------------------------------------------------------------------------------------------
# gradients and Hessian-vector products
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# solvers for (H + λI)⁻¹ v
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# influence scores
# --------------------------------------------------------------------------------------------


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
