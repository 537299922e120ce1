"""Influence where it can be checked exactly: the regression head's output layer on frozen features.

The head of :class:`~molft_utils.models.backbone.RegressionModel` is ``Linear → ReLU → Dropout → Linear``. With
the backbone *and* the head's hidden layer frozen, the model is linear in its output layer:
``f(x) = θᵀφ̃(x)`` with ``φ̃ = [ReLU(W₁x + b₁), 1]`` (the penultimate features plus a bias entry). Its
training objective with the damping as an L2 term,

    J(θ) = (1/n) Σᵢ (θᵀφ̃ᵢ − yᵢ)² + (λ/2)‖θ‖²,        ∇²J = H + λI,   H = (2/n) Φ̃ᵀΦ̃,

is a ridge regression: its minimiser, the influence of each candidate (the package's sign convention,
``score(z) = ∇L_targetᵀ (H + λI)⁻¹ ∇ℓ(z)``, positive = adding ``z`` is predicted to lower the target loss) and
the **exact** effect of actually adding ``z`` (weight ``1/n``, as in the influence derivation) or removing a
training point all have closed forms (Sherman–Morrison), computed here for every candidate at once. That is
Koh & Liang's Figure 2 without an approximate retrain: predicted ``−score/n`` against the actual change.

The functions take features and *scaled* labels (the fine-tune's :class:`~molft_utils.training.train.TargetScaler`)
as float64 arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from molft_utils.models.backbone import RegressionModel

__all__ = [
    "OutputLayer",
    "exact_addition_effects",
    "fit_output_layer",
    "output_layer_theta",
    "penultimate_features",
    "ridge_damping",
]


@torch.no_grad()
def penultimate_features(model: RegressionModel, pooled: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[ReLU(W₁x + b₁), 1]`` of the model's head for mean-pooled backbone features ``pooled`` (n, h), float64.

    Dropout is the identity in eval mode, so ``head(x) = θᵀ[ReLU(W₁x + b₁), 1]`` with ``θ = [w₂, b₂]``.
    """
    first, act = model.head[0], model.head[1]
    x = torch.as_tensor(np.asarray(pooled), dtype=torch.float32).to(first.weight.device)
    phi = act(first(x)).double().cpu().numpy()
    return np.hstack([phi, np.ones((len(phi), 1))])


def output_layer_theta(model: RegressionModel) -> np.ndarray:
    """The model's trained output layer ``[w₂, b₂]`` (float64), for comparison with the ridge refit."""
    last = model.head[-1]
    w, b = (t.detach().double().cpu().numpy().ravel() for t in (last.weight, last.bias))
    return np.concatenate([w, b])


def ridge_damping(phi: np.ndarray, fraction: float = 0.01) -> float:
    """``λ = fraction · λ_max(H)`` with ``H = (2/n) Φ̃ᵀΦ̃`` (positive semi-definite, so no shift is needed).

    The same rule as the head influence's damping (``max(0, −λ_min) + fraction · λ_max``) for a convex problem.
    """
    h = 2.0 * phi.T @ phi / len(phi)
    return float(fraction * np.linalg.eigvalsh(h).max())


@dataclass
class OutputLayer:
    """A fitted output layer: ``θ`` minimises ``J`` on ``(phi, y)``; ``a_inv`` is ``(H + λI)⁻¹``."""

    theta: np.ndarray
    a_inv: np.ndarray
    damping: float
    n: int

    def predict(self, phi: np.ndarray) -> np.ndarray:
        """``θᵀφ̃`` for rows of ``phi``."""
        return phi @ self.theta

    def mse(self, phi: np.ndarray, y: np.ndarray) -> float:
        """Mean squared error (the per-sample loss ``(f − y)²`` averaged), on the scaled labels."""
        return float(np.mean((self.predict(phi) - y) ** 2))

    def sample_grads(self, phi: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample gradients ``∇θ (θᵀφ̃ − y)² = 2 (θᵀφ̃ − y) φ̃`` as one (m, p) array (one matmul, no loop)."""
        return 2.0 * (self.predict(phi) - y)[:, None] * phi

    def target_grad(self, phi: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the mean target loss."""
        return self.sample_grads(phi, y).mean(axis=0)

    def scores(self, phi_target: np.ndarray, y_target: np.ndarray, phi: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Influence scores ``∇L_targetᵀ (H + λI)⁻¹ ∇ℓ(z)`` of the rows of ``(phi, y)``; positive = helpful."""
        return self.sample_grads(phi, y) @ (self.a_inv @ self.target_grad(phi_target, y_target))

    def self_influence(self, phi: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``∇ℓ(z)ᵀ (H + λI)⁻¹ ∇ℓ(z)`` per row (Koh & Liang §5.4: large for points the fit finds hard to explain)."""
        g = self.sample_grads(phi, y)
        return np.einsum("ij,jk,ik->i", g, self.a_inv, g)


def fit_output_layer(phi: np.ndarray, y: Sequence[float], damping: float) -> OutputLayer:
    """Minimise ``J(θ) = mean (θᵀφ̃ − y)² + (λ/2)‖θ‖²`` exactly: ``((2/n)Φ̃ᵀΦ̃ + λI) θ = (2/n) Φ̃ᵀy``."""
    phi = np.asarray(phi, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(phi) != len(y):
        raise ValueError(f"{len(phi)} feature rows but {len(y)} labels")
    n, p = phi.shape
    a = 2.0 * phi.T @ phi / n + damping * np.eye(p)
    a_inv = np.linalg.inv(a)
    a_inv = 0.5 * (a_inv + a_inv.T)
    theta = np.linalg.solve(a, 2.0 * phi.T @ y / n)
    return OutputLayer(theta, a_inv, float(damping), n)


def exact_addition_effects(
    layer: OutputLayer, phi_target: np.ndarray, y_target: np.ndarray, phi: np.ndarray, y: np.ndarray
) -> dict[str, np.ndarray | float]:
    """Predicted and exact change of the mean target loss when each candidate is added with weight ``1/n``.

    Adding ``z`` changes the objective to ``J + (1/n) ℓ(z)``, whose minimiser moves by exactly
    ``Δθ = (2/n) r A⁻¹φ̃ / (1 + (2/n) φ̃ᵀA⁻¹φ̃)`` with ``r = y_z − θᵀφ̃_z`` and ``A = H + λI``
    (Sherman–Morrison); the first-order influence drops the denominator. Both are evaluated for all candidates
    in a few matrix products.

    Returns
    -------
    dict
        ``predicted`` (``−score/n``), ``actual`` (exact refit), ``scores``, ``pearson``, ``spearman``.
    """
    n = layer.n
    resid = y - layer.predict(phi)
    a_phi = phi @ layer.a_inv  # (m, p), rows A⁻¹φ̃ (A symmetric)
    lev = np.einsum("ij,ij->i", a_phi, phi)
    coef = (2.0 / n) * resid / (1.0 + (2.0 / n) * lev)
    d_pred = (phi_target @ a_phi.T) * coef[None, :]  # (n_target, m): change of each target prediction
    err = layer.predict(phi_target) - y_target
    actual = np.mean(2.0 * err[:, None] * d_pred + d_pred**2, axis=0)
    scores = layer.scores(phi_target, y_target, phi, y)
    predicted = -scores / n
    ok = len(actual) > 2 and np.std(actual) > 0 and np.std(predicted) > 0
    return {
        "predicted": predicted,
        "actual": actual,
        "scores": scores,
        "pearson": float(pearsonr(predicted, actual).statistic) if ok else float("nan"),
        "spearman": float(spearmanr(predicted, actual).statistic) if ok else float("nan"),
    }
