"""Influence runs of lessons 02 and 03: cached head influence (computed by :mod:`molft_utils.methods.head_influence`),
influence-based selection of external molecules and the retrains.

The method is that of Koh & Liang (2017, "Understanding black-box predictions via influence functions",
ICML): the influence of adding a candidate ``z`` on the loss of a target set is
``score(z) = ∇L_targetᵀ (H + λI)⁻¹ ∇L(z)`` (positive = helpful, see :mod:`molft_utils.methods.influence` for the
sign convention), with ``(H + λI)⁻¹ v`` estimated by LiSSA (Agarwal, Bullins & Hazan 2017, JMLR) and
checked against conjugate gradients. The protocol (score an external pool, add the top-k helpful, the top-k
harmful or k random molecules to the training set, retrain, compare test metrics) follows the influence-based
data selection study that notebook 02 reproduces; unlike that study, the target gradient is taken on the
**validation** split so that the test split stays unseen until the final evaluation.

What this module adds on top of :mod:`molft_utils.methods.influence`:

* :func:`head_influence` — influence over the regression **head** of a fine-tuned model. With the backbone
  frozen, the model is ``head(features)``, so the mean-pooled features are computed once and every
  Hessian-vector product is a cheap pass over a (n, h) matrix instead of a transformer forward pass. The
  damping is chosen from the extreme Hessian eigenvalues (Lanczos), both LiSSA and CG are run, and their
  agreement is reported. (:func:`head_problem` is mathematically identical to
  :func:`molft_utils.methods.influence.regression_loss_fn` with ``subset="head"``; the tests check it.)
* :func:`cached_head_influence` — :func:`head_influence` through the run cache (kind ``"influence_scores"``),
  keyed by the fine-tuned model's cache entry, checksums of the train / target / pool frames and the solver
  settings (:func:`influence_cache_key`). Notebook 02 computes the scores with it and notebook 03 calls it with
  the same settings (:func:`influence_settings`), so both lessons share one computation per seed.
* :func:`verify_ridge` and :func:`verify_tiny_network` — LiSSA and CG against the exact inverse-Hessian
  solution, and predicted against actually retrained changes of the target loss (Spearman).
* :func:`select_additions` and :func:`retrain_with_additions` — the top-k / random selection and a cached
  fine-tune from a given (MLM-adapted) backbone on training + added molecules; notebook 03 uses the same
  retraining function for its selection strategies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer

from molft_utils.core.records import ModelCache, to_jsonable
from molft_utils.data.loading import frame_sha256
from molft_utils.methods import influence as inf
from molft_utils.methods.head_influence import (  # re-exported: the notebooks call them as influence_runs.*
    SOLVER_DEFAULTS,
    HeadInfluence,
    HeadProblem,
    head_features,
    head_influence,
    head_problem,
    verify_ridge,
    verify_tiny_network,
)
from molft_utils.models.backbone import RegressionModel, load_backbone
from molft_utils.runs.finetune import FinetuneArtefact, code_version
from molft_utils.runs.identity import module_logic_hash
from molft_utils.training.train import FitResult, TargetScaler, TrainConfig, fit

__all__ = [
    "cached_head_influence",
    "head_features",
    "head_influence",
    "head_problem",
    "HeadInfluence",
    "HeadProblem",
    "influence_cache_key",
    "influence_settings",
    "retrain_with_additions",
    "select_additions",
    "SOLVER_DEFAULTS",
    "verify_ridge",
    "verify_tiny_network",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# head influence through the run cache (shared by notebooks 02 and 03)
# --------------------------------------------------------------------------------------------



def influence_settings(
    smoke: bool = False,
    damping_fraction: float = SOLVER_DEFAULTS["damping_fraction"],
    lissa_depth: int = SOLVER_DEFAULTS["lissa_depth"],
) -> dict[str, float | int | None]:
    """The solver settings of the lessons' influence scores (one place, so notebooks 02 and 03 agree).

    Notebook 02 passes its parameters, notebook 03 calls it with the defaults; both then hit the same
    cache entry of :func:`cached_head_influence` when the parameters are at their defaults. In smoke mode
    LiSSA runs at most 200 steps.

    Returns
    -------
    dict
        Keyword arguments for :func:`cached_head_influence`.
    """
    return SOLVER_DEFAULTS | {
        "damping_fraction": float(damping_fraction),
        "lissa_depth": int(min(lissa_depth, 200) if smoke else lissa_depth),
    }


def influence_cache_key(
    model_entry: str, train: pd.DataFrame, target: pd.DataFrame, pool: pd.DataFrame, **settings: Any
) -> dict[str, Any]:
    """Cache key of head influence scores: model entry + data checksums + solver settings + code version.

    ``model_entry`` is the name of the fine-tuned model's cache folder (``FinetuneArtefact.path.name``),
    which already hashes its task, backbone and recipe (and hence its target scaler). ``settings`` are those of
    :func:`influence_settings`; missing ones take their defaults, unknown ones raise :class:`TypeError`.
    """
    unknown = set(settings) - set(SOLVER_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown influence settings {sorted(unknown)}; known: {sorted(SOLVER_DEFAULTS)}")
    return {
        "code_version": module_logic_hash("runs.influence_runs"),  # the code that computes the scores
        "method": "head_influence",
        "finetuned_entry": str(model_entry),
        "train_sha256": frame_sha256(train),
        "target_sha256": frame_sha256(target),
        "pool_sha256": frame_sha256(pool),
        "solver": SOLVER_DEFAULTS | settings,
    }


def _solver_info_from(record: Mapping[str, Any]) -> inf.SolverInfo:
    names = {f.name for f in dataclasses.fields(inf.SolverInfo)}
    return inf.SolverInfo(**{k: v for k, v in record.items() if k in names})


def cached_head_influence(
    artefact: FinetuneArtefact,
    train: pd.DataFrame,
    target: pd.DataFrame,
    pool: pd.DataFrame,
    cache: ModelCache | None = None,
    *,
    model_entry: str | None = None,
    damping_fraction: float = SOLVER_DEFAULTS["damping_fraction"],
    lissa_depth: int = SOLVER_DEFAULTS["lissa_depth"],
    lissa_tol: float | None = SOLVER_DEFAULTS["lissa_tol"],
    cg_tol: float = SOLVER_DEFAULTS["cg_tol"],
    cg_max_iter: int = SOLVER_DEFAULTS["cg_max_iter"],
    eig_tol: float = SOLVER_DEFAULTS["eig_tol"],
    progress: bool = False,
) -> HeadInfluence:
    """:func:`head_influence` of ``pool`` on the mean ``target`` loss, computed once and cached.

    The entry (kind ``"influence_scores"``, key :func:`influence_cache_key`) holds ``scores.npy`` (columns: CG,
    LiSSA), ``inverse_hvp.npy`` and ``info.json`` (damping, eigenvalues, LiSSA-vs-CG agreement, solver
    diagnostics with their histories, timings of the computing run).

    Parameters
    ----------
    artefact
        The fine-tuned model (``model``, ``tokenizer``, ``scaler``; ``path.name`` is its cache entry), e.g. from
        :func:`molft_utils.runs.finetune.finetuned_model`.
    train, target, pool
        Frames with ``smiles`` and ``label``: the Hessian's training set, the target set and the candidates.
    cache
        Defaults to :class:`~molft_utils.core.records.ModelCache`.
    model_entry
        Overrides ``artefact.path.name`` in the key (for models that are not cache entries).
    damping_fraction, lissa_depth, lissa_tol, cg_tol, cg_max_iter, eig_tol
        Solver settings of :func:`head_influence` (part of the key); :func:`influence_settings` gives the lessons'.
    progress
        LiSSA progress bar on a cache miss.

    Returns
    -------
    HeadInfluence
        With ``cache_entry`` and ``cache_hit`` set; ``timings`` are those of the run that computed the entry.
    """
    cache = cache or ModelCache()
    settings = {
        "damping_fraction": float(damping_fraction), "lissa_depth": int(lissa_depth),
        "lissa_tol": None if lissa_tol is None else float(lissa_tol), "cg_tol": float(cg_tol),
        "cg_max_iter": int(cg_max_iter), "eig_tol": float(eig_tol),
    }
    entry = model_entry if model_entry is not None else Path(artefact.path).name
    key = influence_cache_key(entry, train, target, pool, **settings)
    hit = cache.has("influence_scores", key)

    def build(out: Path) -> None:
        res = head_influence(
            artefact.model, artefact.tokenizer, list(train.smiles), train.label, list(target.smiles), target.label,
            list(pool.smiles), pool.label, scaler=artefact.scaler, progress=progress, **settings,
        )
        np.save(out / "scores.npy", np.stack([res.scores, res.scores_lissa], axis=1).astype(np.float64))
        np.save(out / "inverse_hvp.npy", torch.as_tensor(res.inverse_hvp).detach().cpu().numpy())
        info = {f.name: getattr(res, f.name) for f in dataclasses.fields(res)}
        for name in ("scores", "scores_lissa", "inverse_hvp", "cache_entry", "cache_hit"):
            info.pop(name)
        (out / "info.json").write_text(json.dumps(to_jsonable(info), indent=2) + "\n")

    path = cache.get_or_create("influence_scores", key, build)
    scores = np.load(path / "scores.npy")
    if len(scores) != len(pool):
        raise RuntimeError(f"cached influence scores at {path} have {len(scores)} rows, pool has {len(pool)}")
    info = json.loads((path / "info.json").read_text())
    return HeadInfluence(
        scores=scores[:, 0], scores_lissa=scores[:, 1], damping=info["damping"], lambda_min=info["lambda_min"],
        lambda_max=info["lambda_max"], lissa_scale=info["lissa_scale"], rel_error=info["rel_error"],
        spearman=info["spearman"], cg_info=_solver_info_from(info["cg_info"]),
        lissa_info=_solver_info_from(info["lissa_info"]), timings=info["timings"], n_params=info["n_params"],
        inverse_hvp=torch.from_numpy(np.load(path / "inverse_hvp.npy")), cache_entry=path.name, cache_hit=hit,
    )


# --------------------------------------------------------------------------------------------
# selection and retraining
# --------------------------------------------------------------------------------------------


def select_additions(scores: np.ndarray, k: int, kind: str, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` pool molecules: ``"helpful"`` (highest scores), ``"harmful"`` (lowest) or ``"random"``.

    Ties are broken by position (stable sort); ``"random"`` draws without replacement with ``seed``.
    """
    scores = np.asarray(scores, dtype=float)
    if not 0 <= k <= len(scores):
        raise ValueError(f"k={k} outside [0, {len(scores)}]")
    if kind == "helpful":
        return np.argsort(-scores, kind="stable")[:k]
    if kind == "harmful":
        return np.argsort(scores, kind="stable")[:k]
    if kind == "random":
        return np.sort(np.random.default_rng(seed).choice(len(scores), size=k, replace=False))
    raise ValueError(f"kind must be 'helpful', 'harmful' or 'random', got {kind!r}")


def _digest(smiles: Sequence[str], labels: Sequence[float]) -> str:
    text = "\n".join(f"{s}\t{float(v):.6g}" for s, v in zip(smiles, labels, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()


def retrain_with_additions(
    backbone_path: str | Path,
    train: pd.DataFrame,
    additions: pd.DataFrame,
    valid: pd.DataFrame,
    config: TrainConfig,
    cache: ModelCache | None = None,
    key_extra: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> FinetuneArtefact:
    """Fine-tune a fresh head on ``backbone_path`` (e.g. the MLM-adapted backbone) with train + additions.

    Every retrain starts from the same backbone weights and the same head initialisation
    (``torch.manual_seed(config.seed)``, as in :func:`molft_utils.runs.finetune.finetuned_model`), so runs that differ
    only in their added rows are paired; it early-stops on ``valid`` and is cached (kind ``"influence_retrain"``,
    the name kept from notebook 02 so that existing entries stay valid) by backbone folder, data and
    configuration. Notebook 02 (top-k helpful / harmful / random) and notebook 03 (selection strategies) both
    retrain through this function.

    Parameters
    ----------
    backbone_path
        Folder loadable by :func:`molft_utils.models.backbone.load_backbone`.
    train, additions, valid
        Frames with ``smiles`` and ``label`` (additions use their own — external — labels).
    config
        Fine-tuning configuration.
    cache
        Defaults to :class:`~molft_utils.core.records.ModelCache`.
    key_extra
        Anything else that identifies the run (stored in the key).

    Returns
    -------
    FinetuneArtefact
        ``init`` is ``"mlm+additions"``.
    """
    cache = cache or ModelCache()
    smiles = list(train.smiles) + list(additions.smiles)
    labels = list(train.label) + list(additions.label)
    key = {
        **code_version(config.mixed_precision, "runs.influence_runs"),  # this module's code (and all it imports)
        "backbone": Path(backbone_path).name,
        "train_data": _digest(smiles, labels),
        "valid_data": _digest(list(valid.smiles), list(valid.label)),
        "train": dataclasses.asdict(config),
        **dict(key_extra or {}),
    }
    hit = cache.has("influence_retrain", key)

    def build(out: Path) -> None:
        backbone, tokenizer = load_backbone(backbone_path)
        torch.manual_seed(config.seed)
        reg = RegressionModel(backbone)
        res = fit(reg, tokenizer, smiles, labels, list(valid.smiles), list(valid.label), config, progress=progress)
        reg.save(out / "model", extra={"scaler": res.scaler.to_dict()})
        tokenizer.save_pretrained(out / "model")
        record = {k: v for k, v in dataclasses.asdict(res).items() if k != "scaler"}
        (out / "fit.json").write_text(json.dumps(to_jsonable(record), indent=2) + "\n")

    path = cache.get_or_create("influence_retrain", key, build)
    reg, meta = RegressionModel.load(path / "model")
    tokenizer = AutoTokenizer.from_pretrained(path / "model")
    scaler = TargetScaler.from_dict(meta["scaler"])
    record = json.loads((path / "fit.json").read_text())
    return FinetuneArtefact(reg, tokenizer, scaler, FitResult(**record, scaler=scaler), path, hit, "mlm+additions", key)
