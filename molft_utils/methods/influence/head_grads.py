"""Per-sample gradients of the regression head on frozen features: a loop, ``vmap``, and one matmul.

For the head ``f(x) = w₂ᵀ ReLU(W₁x + b₁) + b₂`` (``Linear → ReLU → Dropout → Linear``, dropout off in eval) and
the loss ``ℓ = (f − y)²`` the per-sample gradient is ``2r ∇f`` with ``r = f − y`` and

    ∂f/∂W₁ = δ xᵀ,  ∂f/∂b₁ = δ,  ∂f/∂w₂ = a,  ∂f/∂b₂ = 1,   a = ReLU(W₁x + b₁),  δ = w₂ ⊙ 1[W₁x + b₁ > 0].

Scoring needs only ``∇ℓ(z)ᵀh`` for a fixed ``h`` (the inverse HVP), so the (m, p) gradient matrix is never
formed: ``∇ℓᵀh = 2r (δᵀH_{W₁}x + δᵀh_{b₁} + aᵀh_{w₂} + h_{b₂})`` for all molecules at once is one (m, d) × (d, d)
matmul. :func:`benchmark_head_scoring` times the three ways on the same features and ``h`` and checks that they
give the same scores.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch
from torch.func import functional_call

from molft_utils.methods.influence.hessian import per_sample_gradients, per_sample_gradients_loop
from molft_utils.methods.influence.model_fn import Batch, Params

__all__ = ["benchmark_head_scoring", "head_projected_grads"]


def _layers(head: torch.nn.Module) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    kinds = [type(m).__name__ for m in head]
    if len(linears) != 2 or kinds[1] != "ReLU" or linears[1].out_features != 1:
        raise ValueError(f"expected Linear → ReLU → (Dropout) → Linear(·, 1), got {kinds}")
    return linears[0], linears[1]


@torch.no_grad()
def head_projected_grads(
    head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, project: torch.Tensor
) -> torch.Tensor:
    """``G h`` for the per-sample gradients ``G`` of ``(head(x) − y)²`` over the head's parameters, in closed form.

    Parameters
    ----------
    head
        ``Linear(d, d) → ReLU → Dropout → Linear(d, 1)`` (its parameters in ``named_parameters`` order are the
        flat order of ``project``, the same as ``influence.select_parameters(model, "head")``).
    x, y
        Features (m, d) and scaled labels (m,).
    project
        (p,) or (p, k) vectors to project on.

    Returns
    -------
    torch.Tensor
        (m,) or (m, k), float64.
    """
    first, last = _layers(head)
    d_out, d_in = first.weight.shape
    x, y = x.double(), y.double()
    w1, b1, w2, b2 = (t.double() for t in (first.weight, first.bias, last.weight[0], last.bias))
    pre = x @ w1.T + b1
    a = pre.clamp_min(0)
    delta = w2 * (pre > 0)
    r = a @ w2 + b2 - y
    h = project.double()
    cols = h.reshape(h.shape[0], -1)
    out = []
    for j in range(cols.shape[1]):
        c = cols[:, j]
        i = 0
        h_w1 = c[i : i + d_out * d_in].view(d_out, d_in)
        i += d_out * d_in
        h_b1 = c[i : i + d_out]
        i += d_out
        h_w2 = c[i : i + d_out]
        h_b2 = c[i + d_out]
        out.append(2.0 * r * (((delta @ h_w1) * x).sum(1) + delta @ h_b1 + a @ h_w2 + h_b2))
    res = torch.stack(out, dim=1)
    return res[:, 0] if h.dim() == 1 else res


def benchmark_head_scoring(
    head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, project: torch.Tensor, chunk_size: int = 256
) -> dict[str, float]:
    """Time ``∇ℓ(z)ᵀh`` for every row of ``x``: a per-sample autograd loop, ``vmap(grad)``, one matmul.

    All three use the same head (eval mode), features, labels and ``h``. Returns seconds of each, the speed-ups
    of ``vmap`` and of the matmul over the loop, and the largest absolute difference of each from the loop's
    scores (with the largest |score| for scale).
    """
    was = head.training
    head.eval()
    params: Params = OrderedDict((n, p.detach()) for n, p in head.named_parameters())

    def sample_loss(p: Params, batch: Batch) -> torch.Tensor:
        return (functional_call(head, p, (batch["x"],)).squeeze(-1) - batch["y"]) ** 2

    def collate(idx: np.ndarray) -> Batch:
        i = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return {"x": x[i], "y": y[i]}

    m = len(x)
    try:
        t0 = time.perf_counter()
        looped = per_sample_gradients_loop(sample_loss, params, collate, m, project=project).double()
        t_loop = time.perf_counter() - t0
        t0 = time.perf_counter()
        vmapped = per_sample_gradients(sample_loss, params, collate, m, chunk_size, project=project).double()
        t_vmap = time.perf_counter() - t0
        t0 = time.perf_counter()
        matmul = head_projected_grads(head, x, y, project)
        t_mm = time.perf_counter() - t0
    finally:
        head.train(was)
    return {
        "loop_seconds": t_loop,
        "vmap_seconds": t_vmap,
        "matmul_seconds": t_mm,
        "speedup_vmap": t_loop / t_vmap if t_vmap > 0 else float("nan"),
        "speedup_matmul": t_loop / t_mm if t_mm > 0 else float("nan"),
        "max_abs_diff_vmap": float((vmapped - looped).abs().max()),
        "max_abs_diff_matmul": float((matmul - looped).abs().max()),
        "max_abs_score": float(looped.abs().max()),
        "n": float(m),
    }
