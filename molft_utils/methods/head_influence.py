"""Influence over the regression head on cached backbone features, and its verification on problems with a
known answer (ridge regression, a tiny network): the method that lessons 02 and 03 use."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import functional_call
from transformers import PreTrainedTokenizerBase

from molft_utils.methods import influence as inf
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.embedding import embed_smiles
from molft_utils.training.train import TargetScaler

__all__ = [
    "head_features",
    "head_influence",
    "head_problem",
    "HeadInfluence",
    "HeadProblem",
    "SOLVER_DEFAULTS",
    "verify_ridge",
    "verify_tiny_network",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# influence over the regression head, on cached features
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def head_features(
    model: RegressionModel, tokenizer: PreTrainedTokenizerBase, smiles: Sequence[str], batch_size: int = 128
) -> torch.Tensor:
    """Mean-pooled backbone features (n, h), float32, eval mode, no autocast (the model's mode is restored)."""
    with torch.autocast(device_type=next(model.parameters()).device.type, enabled=False):
        return torch.from_numpy(embed_smiles(model, tokenizer, smiles, batch_size))


@dataclass
class HeadProblem:
    """The regression head as a pure function of its parameters, on precomputed features.

    ``params`` are named ``head.*`` in ``model.named_parameters()`` order (the same flat order as
    ``influence.select_parameters(model, "head")``); batches are ``{"x": (B, h), "y": (B,)}``.
    """

    params: OrderedDict[str, torch.Tensor]
    loss_fn: inf.LossFn
    sample_loss_fn: inf.LossFn

    @staticmethod
    def collate(features: torch.Tensor, y_scaled: Sequence[float]) -> inf.Collate:
        """``collate(indices) -> {"x", "y"}`` over features and scaled labels."""
        y = torch.as_tensor(np.asarray(y_scaled, dtype=np.float32))
        if len(y) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(y)} labels")
        return lambda idx: {"x": features[torch.as_tensor(idx, dtype=torch.long)], "y": y[torch.as_tensor(idx)]}


def head_problem(model: RegressionModel) -> HeadProblem:
    """Squared-error loss of ``model.head`` on features (the model's head-subset loss with the backbone frozen)."""
    params = OrderedDict((n, p.detach()) for n, p in inf.select_parameters(model, "head").items())
    head = model.head

    def sample_loss(p: inf.Params, batch: inf.Batch) -> torch.Tensor:
        pred = functional_call(head, {n.removeprefix("head."): v for n, v in p.items()}, (batch["x"],)).squeeze(-1)
        return (pred - batch["y"]) ** 2

    return HeadProblem(params, lambda p, b: sample_loss(p, b).mean(), sample_loss)


@dataclass
class HeadInfluence:
    """Influence scores of a pool over the head, with LiSSA-vs-CG diagnostics.

    Attributes
    ----------
    scores
        CG scores (the reference), positive = adding the molecule is predicted to lower the target loss.
    scores_lissa
        The same with LiSSA's inverse HVP.
    damping, lambda_min, lambda_max, lissa_scale
        ``λ`` of ``(H + λI)``, the extreme eigenvalues of ``H`` and LiSSA's scale.
    rel_error
        ``‖h_LiSSA − h_CG‖ / ‖h_CG‖``.
    spearman
        Spearman correlation of the LiSSA and CG scores.
    cg_info, lissa_info
        Solver diagnostics.
    timings
        Seconds per stage.
    n_params
        Parameters the influence is taken over.
    inverse_hvp
        CG's ``(H + λI)⁻¹ ∇L_target`` over the head (flat, ``select_parameters(model, "head")`` order).
    cache_entry, cache_hit
        Set by :func:`cached_head_influence`: the ``influence_scores`` cache folder name and whether it existed.
    """

    scores: np.ndarray
    scores_lissa: np.ndarray
    damping: float
    lambda_min: float
    lambda_max: float
    lissa_scale: float
    rel_error: float
    spearman: float
    cg_info: inf.SolverInfo
    lissa_info: inf.SolverInfo
    timings: dict[str, float] = field(default_factory=dict)
    n_params: int = 0
    inverse_hvp: torch.Tensor | None = None
    cache_entry: str | None = None
    cache_hit: bool | None = None

    def diagnostics(self) -> dict[str, float]:
        """Flat numbers for the run record."""
        return {
            "influence params": float(self.n_params),
            "hessian lambda_min": self.lambda_min,
            "hessian lambda_max": self.lambda_max,
            "damping": self.damping,
            "lissa scale": self.lissa_scale,
            "lissa depth run": float(self.lissa_info.iterations),
            "cg iterations": float(self.cg_info.iterations),
            "real model LiSSA vs CG rel error": self.rel_error,
            "lissa rel residual": float(self.lissa_info.extra.get("rel_residual", float("nan"))),
            "lissa converged": float(self.lissa_info.converged),
            "real model LiSSA vs CG score spearman": self.spearman,
            **{f"seconds {k}": v for k, v in self.timings.items()},
        }


#: The one set of solver defaults of the lessons' influence scores: :func:`head_influence`,
#: :func:`cached_head_influence` (the entry point the notebooks use) and :func:`influence_settings` all take
#: their defaults from here, and :func:`influence_cache_key` keys on them.
SOLVER_DEFAULTS: dict[str, float | int | None] = {
    "damping_fraction": 0.01,
    "lissa_depth": 1000,
    "lissa_tol": 1e-6,
    "cg_tol": 1e-8,
    "cg_max_iter": 500,
    "eig_tol": 1e-2,
}


def head_influence(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    target_smiles: Sequence[str],
    target_y: Sequence[float],
    pool_smiles: Sequence[str],
    pool_y: Sequence[float],
    scaler: TargetScaler | None = None,
    damping_fraction: float = SOLVER_DEFAULTS["damping_fraction"],
    lissa_depth: int = SOLVER_DEFAULTS["lissa_depth"],
    lissa_tol: float | None = SOLVER_DEFAULTS["lissa_tol"],
    cg_tol: float = SOLVER_DEFAULTS["cg_tol"],
    cg_max_iter: int = SOLVER_DEFAULTS["cg_max_iter"],
    batch_size: int = 1024,
    eig_tol: float = SOLVER_DEFAULTS["eig_tol"],
    progress: bool = False,
) -> HeadInfluence:
    """Score ``pool`` by its influence on the mean target loss, over the head of a fine-tuned model.

    The damping is ``λ = max(0, −λ_min) + damping_fraction · λ_max`` (so ``H + λI`` is positive definite
    with condition number at most about ``1/damping_fraction``), LiSSA uses ``scale = λ_max + λ`` and
    full-data HVPs, CG is the reference; labels are scaled with ``scaler`` as in training. The eigenvalues
    only set the damping and LiSSA's scale, so a loose Lanczos tolerance ``eig_tol`` suffices.

    Returns
    -------
    HeadInfluence
    """
    timings: dict[str, float] = {}

    def scaled(y: Sequence[float]) -> np.ndarray:
        return np.asarray(y, dtype=float) if scaler is None else scaler.transform(y)

    t0 = time.perf_counter()
    f_train = head_features(model, tokenizer, train_smiles)
    f_target = head_features(model, tokenizer, target_smiles)
    f_pool = head_features(model, tokenizer, pool_smiles)
    timings["features"] = time.perf_counter() - t0
    prob = head_problem(model)
    train = HeadProblem.collate(f_train, scaled(train_y))
    hess = inf.HessianOperator(prob.loss_fn, prob.params, train, len(f_train), batch_size)
    t0 = time.perf_counter()
    lam_min, lam_max = inf.extreme_eigenvalues(hess, hess.dim, tol=eig_tol)
    timings["eigenvalues"] = time.perf_counter() - t0
    damping = max(0.0, -lam_min) + damping_fraction * max(lam_max, 1e-12)
    scale = lam_max + damping
    t0 = time.perf_counter()
    s = inf.full_gradient(
        prob.loss_fn, prob.params, HeadProblem.collate(f_target, scaled(target_y)), len(f_target), batch_size
    )
    timings["target_grad"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    h_cg, info_cg = inf.conjugate_gradient(hess, s, damping=damping, tol=cg_tol, max_iter=cg_max_iter)
    timings["cg"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    h_l, info_l = inf.lissa(
        hess, s, scale=scale, damping=damping, depth=lissa_depth, tol=lissa_tol, record_every=20, progress=progress
    )
    timings["lissa"] = time.perf_counter() - t0
    # LiSSA's own accuracy: the relative residual of (H + λI) h = s, one more HVP
    info_l.extra["rel_residual"] = float((hess.matvec(h_l) + damping * h_l - s).norm() / s.norm())
    t0 = time.perf_counter()
    both = torch.stack([h_cg, h_l], dim=1)
    # one matmul per solution (influence.head_projected_grads; equal to vmap(grad) and the loop, see the tests)
    y_pool = torch.as_tensor(scaled(pool_y), dtype=torch.float32)
    sc = inf.head_projected_grads(model.head, f_pool, y_pool, both)  # closed form: dropout off
    timings["pool_scoring"] = time.perf_counter() - t0
    rel = float((h_l.double() - h_cg.double()).norm() / h_cg.double().norm())
    rho = float(spearmanr(sc[:, 0], sc[:, 1]).statistic) if len(sc) > 2 else float("nan")
    return HeadInfluence(
        sc[:, 0].numpy(), sc[:, 1].numpy(), damping, lam_min, lam_max, scale, rel, rho, info_cg, info_l, timings,
        hess.dim, h_cg,
    )


# --------------------------------------------------------------------------------------------
# verification on problems with a known answer
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    # the verification problems are tiny: thread synchronisation would cost more than the arithmetic
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def _verify_ridge(
    seed: int = 0, n: int = 200, d: int = 8, n_target: int = 60, n_cand: int = 30, damping: float = 0.1
) -> dict[str, Any]:
    """Ridge regression, where the exact inverse Hessian and exact retraining are available.

    Objective ``J(w) = (1/n) Σ ½(xᵢ·w − yᵢ)² + (λ/2)‖w‖²``; adding a candidate ``z`` = adding ``½(x_z·w − y_z)²/n``
    (up-weighting by ``1/n``), whose first-order effect on the mean target loss is ``−score(z)/n``. Half the
    candidates get corrupted labels. Returns relative errors of LiSSA and CG against the exact solve, the
    Spearman correlation of ``−score/n`` with the exactly retrained change, and both vectors.
    """
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=d)

    def draw(m: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(m, d))
        return x, x @ w_true + noise * rng.normal(size=m)

    X, y = draw(n, 1.0)
    Xt, yt = draw(n_target, 0.1)
    Xc, yc = draw(n_cand, 0.1)
    yc[::2] += rng.choice([-1.0, 1.0], size=len(yc[::2])) * rng.uniform(0.5, 2.0, size=len(yc[::2]))

    def fit_w(extra: tuple[np.ndarray, float] | None = None) -> np.ndarray:
        A, b = X.T @ X, X.T @ y
        if extra is not None:
            A, b = A + np.outer(extra[0], extra[0]), b + extra[0] * extra[1]
        return np.linalg.solve(A / n + damping * np.eye(d), b / n)

    def target_loss(w: np.ndarray) -> float:
        return float(0.5 * np.mean((Xt @ w - yt) ** 2))

    def loss(p: inf.Params, batch: inf.Batch) -> torch.Tensor:
        return 0.5 * ((batch["x"] @ p["w"] - batch["y"]) ** 2).mean()

    def sample_loss(p: inf.Params, batch: inf.Batch) -> torch.Tensor:
        return 0.5 * (batch["x"] @ p["w"] - batch["y"]) ** 2

    w = fit_w()
    params = {"w": torch.tensor(w, dtype=torch.float32)}
    coll = HeadProblem.collate(torch.tensor(X, dtype=torch.float32), y)
    hess = inf.HessianOperator(loss, params, coll, n, batch_size=n)
    s = inf.full_gradient(loss, params, HeadProblem.collate(torch.tensor(Xt, dtype=torch.float32), yt), n_target)
    exact = inf.exact_inverse_hvp(torch.tensor(X.T @ X / n), s, damping)
    lam_max = float(np.linalg.eigvalsh(X.T @ X / n).max())
    h_cg, _ = inf.conjugate_gradient(hess, s, damping=damping, tol=1e-10)
    h_l, info_l = inf.lissa(hess, s, scale=lam_max + damping, damping=damping, depth=3000, tol=1e-9)
    cand = HeadProblem.collate(torch.tensor(Xc, dtype=torch.float32), yc)
    grads = inf.per_sample_gradients(sample_loss, params, cand, n_cand)
    predicted = -(grads.double() @ exact.double()).numpy() / n
    base = target_loss(w)
    actual = np.array([target_loss(fit_w((Xc[i], yc[i]))) - base for i in range(n_cand)])
    return {
        "lissa_rel_error": _rel(h_l, exact),
        "cg_rel_error": _rel(h_cg, exact),
        "lissa_steps": info_l.iterations,
        "spearman_vs_retraining": _spearman(predicted, actual),
        "predicted": predicted,
        "actual": actual,
    }


def _verify_tiny_network(
    seed: int = 0, n: int = 80, d: int = 4, hidden: int = 6, n_target: int = 40, n_cand: int = 20,
    damping: float = 0.2,
) -> dict[str, Any]:
    """A tiny tanh network (non-convex), exact Hessian by ``torch.func.hessian``, exact retraining by L-BFGS.

    The network is trained to convergence on ``J(θ) = mean loss + (λ/2)‖θ‖²``, so the Hessian of ``J`` is
    ``H_loss + λI`` — the damped Hessian of the solvers with ``damping = λ`` (positive definite at a
    minimum of ``J``). Each candidate is then added with weight ``1/n`` and the network retrained, warm-started
    from the optimum (as in Koh & Liang's verification), to convergence in float64.
    Returns the same keys as :func:`verify_ridge`.
    """
    gen = torch.Generator().manual_seed(seed)
    w_true = torch.randn(d, 1, generator=gen, dtype=torch.float64)

    def draw(m: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(m, d, generator=gen, dtype=torch.float64)
        return x, (torch.tanh(x @ w_true).squeeze(-1) + noise * torch.randn(m, generator=gen, dtype=torch.float64))

    X, y = draw(n, 0.3)
    Xt, yt = draw(n_target, 0.05)
    Xc, yc = draw(n_cand, 0.05)
    yc[::2] += torch.where(torch.rand(len(yc[::2]), generator=gen) < 0.5, -1.0, 1.0).double()
    shapes = OrderedDict([("w1", (d, hidden)), ("b1", (hidden,)), ("w2", (hidden,)), ("b2", ())])

    def sample_loss(p: inf.Params, batch: inf.Batch) -> torch.Tensor:
        pred = torch.tanh(batch["x"] @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return 0.5 * (pred - batch["y"]) ** 2

    def loss(p: inf.Params, batch: inf.Batch) -> torch.Tensor:
        return sample_loss(p, batch).mean()

    def train(theta0: torch.Tensor, extra: int | None = None) -> torch.Tensor:
        theta = theta0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                                history_size=50, line_search_fn="strong_wolfe")
        batch = {"x": X, "y": y}

        def closure() -> torch.Tensor:
            opt.zero_grad()
            p = inf.unflatten(theta, {k: torch.empty(s) for k, s in shapes.items()})
            obj = sample_loss(p, batch).sum()
            if extra is not None:
                obj = obj + sample_loss(p, {"x": Xc[extra : extra + 1], "y": yc[extra : extra + 1]}).sum()
            obj = obj / n + 0.5 * damping * (theta**2).sum()
            obj.backward()
            return obj

        for _ in range(5):
            opt.step(closure)
        return theta.detach()

    dim = sum(int(np.prod(s)) for s in shapes.values())
    theta = train(0.5 * torch.randn(dim, generator=gen, dtype=torch.float64))
    like = {k: torch.empty(s) for k, s in shapes.items()}

    def target_loss(th: torch.Tensor) -> float:
        return float(loss(inf.unflatten(th, like), {"x": Xt, "y": yt}))

    params = {k: v.float() for k, v in inf.unflatten(theta, like).items()}
    f32 = {"x": X.float(), "y": y.float()}
    coll = lambda idx: {k: v[torch.as_tensor(idx)] for k, v in f32.items()}  # noqa: E731
    hess = inf.HessianOperator(loss, params, coll, n, batch_size=n)
    s = inf.full_gradient(loss, params, lambda idx: {"x": Xt.float()[idx], "y": yt.float()[idx]}, n_target, n_target)
    dense = inf.hessian_matrix(loss, params, coll, n, n)
    exact = inf.exact_inverse_hvp(dense, s, damping)
    eig = torch.linalg.eigvalsh(dense)
    h_cg, _ = inf.conjugate_gradient(hess, s, damping=damping, tol=1e-8)
    scale = float(eig.max()) + damping
    h_l, info_l = inf.lissa(hess, s, scale=scale, damping=damping, depth=3000, tol=1e-8)
    cand = lambda idx: {"x": Xc.float()[idx], "y": yc.float()[idx]}  # noqa: E731
    grads = inf.per_sample_gradients(sample_loss, params, cand, n_cand)
    predicted = -(grads.double() @ exact.double()).numpy() / n
    base = target_loss(theta)
    actual = np.array([target_loss(train(theta, i)) - base for i in range(n_cand)])
    return {
        "lissa_rel_error": _rel(h_l, exact),
        "cg_rel_error": _rel(h_cg, exact),
        "lissa_steps": info_l.iterations,
        "hessian_min_eigenvalue": float(eig.min()),
        "spearman_vs_retraining": _spearman(predicted, actual),
        "predicted": predicted,
        "actual": actual,
    }


def verify_ridge(seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Ridge-regression verification (see :func:`_verify_ridge` for the keyword arguments), single-threaded."""
    with _single_thread():
        return _verify_ridge(seed, **kwargs)


def verify_tiny_network(seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Tiny-network verification (see :func:`_verify_tiny_network` for the keyword arguments), single-threaded."""
    with _single_thread():
        return _verify_tiny_network(seed, **kwargs)


