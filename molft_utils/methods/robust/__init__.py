"""Robust fine-tuning under scarce labels: partial, representation-based and weight-based methods, and RoFt-Mol.

RoFt-Mol (Liu, Zou, Shoghi, Fung, Liu & Li, "RoFt-Mol: Benchmarking Robust Fine-Tuning with Molecular
Graph Foundation Models", NeurIPS 2025 Datasets & Benchmarks, arXiv:2509.00614; an earlier version called
the method DWiSE-FT) sorts eight fine-tuning methods into three mechanisms and benchmarks them on
molecular foundation models with few labels. This module implements one representative of each for a
:class:`~molft_utils.models.backbone.RegressionModel`; everything plugs
into :func:`molft_utils.training.train.fit` through
:class:`~molft_utils.training.train.TrainHooks`.

Partial fine-tuning (``TrainHooks.trainable``)
    * linear probing (:func:`linear_probe_hooks`): only the head trains;
    * surgical fine-tuning (:func:`surgical_hooks`, Lee et al. 2023, "Surgical fine-tuning improves
      adaptation to distribution shifts"): one coarse group of the backbone + the head;
    * LP-FT (:func:`lp_ft`, Kumar et al. 2022, "Fine-tuning can distort pretrained features"): linear
      probing first, then full fine-tuning starting from the probed head.

Representation-based (``TrainHooks.extra_loss``)
    * feature-map regularisation (:func:`feature_map_hooks`): ``δ/2 · mean_batch ‖f_ft(x) − f_pt(x)‖²``
      on the mean-pooled features, against a frozen copy of the pretrained backbone. This is DELTA
      (Li et al. 2019) *without* its attention weights over channels, i.e. plain feature-map L2;
    * batch spectral shrinkage (:func:`bss_hooks`, Chen et al. 2019, "Catastrophic forgetting meets
      negative transfer: batch spectral shrinkage for safe transfer learning"): ``δ Σ_{i≤k} σ_{-i}²``,
      the k smallest squared singular values of the batch's pooled feature matrix.

Weight-based
    * L2-SP (:func:`l2sp_hooks`, Li, Grandvalet & Davoine 2018): ``α/2 ‖w − w_pt‖²`` on the backbone
      plus ``β/2 ‖w‖²`` on the new head;
    * WiSE-FT (:func:`wise_ft`, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"):
      ``θ(α) = (1 − α) θ_pt + α θ_ft`` for the backbone, head from fine-tuning;
    * model soups (:func:`uniform_soup`, :func:`greedy_soup`, Wortsman et al. 2022, "Model soups").

RoFt-Mol (:class:`LayerwiseInterpolation`, :func:`fit_roft_mol`)
    WiSE-FT with one interpolation coefficient per layer group (the embeddings and every encoder
    layer), learned by gradient descent on held-out labelled data while the head stays the fine-tuned
    one. What was checked against the authors' public training script (a Mole-BERT/GIN code base,
    ``GNN_interpolate``): one α per group (input embedding + each GNN layer), all initialised to 0.9 by
    default (``--alphas 0.9_0.9_...``), Adam with lr 1e-3 and no weight decay on the α only (the
    classifier head is frozen when the fine-tuned head exists), regression loss ``sqrt(MSE)``, 100 epochs
    over the *validation* loader, best epoch chosen on that same validation loader. In that script a
    ``clamp_(0, 1)`` of α after each step is commented out, so α there appears to be unconstrained;
    the model file that defines ``GNN_interpolate`` could not be inspected, so whether it applies a
    sigmoid or clamp internally is **not verified**. Here ``parameterisation="clamp"`` (default;
    projected gradient descent onto [0, 1]), ``"sigmoid"`` (α = sigmoid(a)) and ``"none"`` are offered.

    Deliberate differences from that script: α are fitted on one part of the validation data and the
    step is selected on the *other* part (fitting and selecting on the same molecules overstates the
    gain); the loss is MSE on the scaled targets (same minimiser as sqrt(MSE)); dropout is off while α
    are fitted (eval mode), so the objective is deterministic; the default learning rate is 1e-2 for a
    few hundred steps instead of 1e-3 for 100 epochs. The fine-tuned end point may be any
    :class:`RegressionModel` with the same architecture, for example a soup.

Modules (methods apart from the benchmark protocol)
    ``groups`` (layer and coarse groups), ``partial`` (trainable sets, LP-FT, and linear probing on frozen
    features: :func:`pooled_features` once per split, :func:`linear_probe` / :func:`fit_head` per budget, a
    shared start for LP-FT, soups and WiSE-FT), ``penalties`` (feature-map, BSS, L2-SP), ``combine`` (WiSE-FT,
    :func:`interpolate_models`, soups), ``roft_mol``; the protocol: ``budgets`` (nested label subsets,
    :func:`epoch_budget` per label budget, :func:`split_validation` into a model-selection half and a post-hoc
    half) and ``protocol`` (the registries, :func:`train_method`, :func:`run_setting`).

Few-label protocol of lesson 05 (``few_label``, issue 21)
    Nested label subsets (:func:`label_subset`); epoch ceilings and patience per label budget
    (:func:`epoch_budget`) with early stopping on the *selection* half of validation (:func:`split_validation`,
    :func:`fine_tune`); linear probing on frozen features; LP-FT, the soup ingredients and WiSE-FT's fine-tuned end
    all start from the same linear-probed model; the post-hoc choices (WiSE-FT's α, the greedy soup, RoFt-Mol) on
    the other half; :class:`SettingRecord` keeps every model's numbers and convergence. The lesson writes its
    benchmark loop from these pieces. The older step-budget protocol (:func:`run_setting`, :func:`fit_steps`) is
    kept for its tests and old records.

Parameter names follow ``RegressionModel.named_parameters()`` (``backbone.…``, ``head.…``); "pretrained
state" arguments are a backbone ``state_dict`` (keys with or without the ``backbone.`` prefix), e.g.
:func:`snapshot_state` of the backbone taken before fine-tuning.
"""

from molft_utils.methods.robust import budgets, combine, few_label, groups, partial, penalties, protocol, roft_mol
from molft_utils.methods.robust.budgets import *  # noqa: F403
from molft_utils.methods.robust.combine import *  # noqa: F403
from molft_utils.methods.robust.few_label import *  # noqa: F403
from molft_utils.methods.robust.groups import *  # noqa: F403
from molft_utils.methods.robust.partial import *  # noqa: F403
from molft_utils.methods.robust.penalties import *  # noqa: F403
from molft_utils.methods.robust.protocol import *  # noqa: F403
from molft_utils.methods.robust.roft_mol import *  # noqa: F403

__all__ = [
    *groups.__all__, *partial.__all__, *penalties.__all__, *combine.__all__, *roft_mol.__all__, *budgets.__all__,
    *protocol.__all__, *few_label.__all__,
]  # fmt: skip
