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

The code lives in four modules, re-exported here (``from molft_utils.methods import influence as inf``):
:mod:`.model_fn` (parameter subsets, flat vectors, the model as a function of its parameters),
:mod:`.hessian` (gradients, HVPs, per-sample gradients, dense Hessians, eigenvalues), :mod:`.solvers`
(LiSSA, CG, dense solve) and :mod:`.scores` (influence scores, the speed benchmark, LiSSA vs CG); the
checks with a known answer on the head's output layer: :mod:`.output_layer` (exact refits),
:mod:`.noise` (planted label noise) and
:mod:`.head_grads` (per-sample head gradients: loop, ``vmap``, one matmul).
"""

from __future__ import annotations

from molft_utils.methods.influence.head_grads import benchmark_head_scoring, head_projected_grads
from molft_utils.methods.influence.hessian import (
    HessianOperator,
    dense_hessian,
    extreme_eigenvalues,
    full_gradient,
    hessian_matrix,
    per_sample_gradients,
    per_sample_gradients_loop,
    top_eigenvalue,
)
from molft_utils.methods.influence.model_fn import (
    HVP,
    Batch,
    Collate,
    LossFn,
    Params,
    collate_smiles,
    flatten,
    regression_loss_fn,
    regression_sample_loss_fn,
    select_parameters,
    unflatten,
)
from molft_utils.methods.influence.noise import RANKERS, corrupt_labels, detection_metrics, planted_noise, rankings
from molft_utils.methods.influence.output_layer import (
    OutputLayer,
    exact_addition_effects,
    fit_output_layer,
    output_layer_theta,
    penultimate_features,
    ridge_damping,
)
from molft_utils.methods.influence.scores import (
    InfluenceResult,
    benchmark_scoring,
    compare_solvers,
    compute_influence,
    influence_scores,
)
from molft_utils.methods.influence.solvers import (
    LissaDivergenceError,
    SolverInfo,
    conjugate_gradient,
    exact_inverse_hvp,
    lissa,
)

__all__ = [
    "Batch",
    "Collate",
    "HVP",
    "LossFn",
    "Params",
    "HessianOperator",
    "InfluenceResult",
    "OutputLayer",
    "RANKERS",
    "benchmark_head_scoring",
    "corrupt_labels",
    "detection_metrics",
    "exact_addition_effects",
    "fit_output_layer",
    "head_projected_grads",
    "output_layer_theta",
    "penultimate_features",
    "planted_noise",
    "rankings",
    "ridge_damping",
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
