"""The shared experiment pipeline: cached fine-tuned, MLM-adapted and descriptor-adapted models.

Every notebook starts from the same few artefacts, so they are built once and reused through
:class:`~molft_utils.core.records.ModelCache`, keyed by everything that determines them (data checksum,
split, backbone weights, hyper-parameters, seed, the logic of the code that builds them and the precision it
trains in, :func:`code_version`):

* :func:`load_task` — the run's data (defined in :mod:`molft_utils.runs.tasks`, re-exported here, where the
  lessons call it);
* :func:`mlm_adapted_backbone` — the backbone after domain-adaptive MLM on the training SMILES plus the
  pool's SMILES (no labels; never validation or test SMILES);
* :func:`finetuned_model` — a :class:`~molft_utils.models.backbone.RegressionModel` fine-tuned with the
  notebook-01 recipe from random initialisation, the pretrained or the MLM-adapted backbone.

Smoke mode (``MOLFT_SMOKE=1``, used by the tests and CI) shrinks every part of the data so that each
notebook executes in seconds; its cache entries have different keys from the real ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from molft_utils.core.device import autocast_dtype, get_device
from molft_utils.core.records import ModelCache, to_jsonable
from molft_utils.data.descriptors import DESCRIPTOR_NAMES, DescriptorScaler, rdkit_descriptors
from molft_utils.models.backbone import (
    DEFAULT_BACKBONE,
    MOLFORMER_ID,
    MOLFORMER_REVISION,
    RegressionModel,
    load_backbone,
    random_init_like,
    resolve_backbone,
)
from molft_utils.pretraining.corpus import sha256
from molft_utils.runs.identity import module_logic_hash
from molft_utils.runs.tasks import POOL_FRACTION, SMOKE_SIZES, Task, load_task, resolve_smoke  # re-exported
from molft_utils.training import convergence as _convergence
from molft_utils.training.metrics import regression_metrics
from molft_utils.training.mlm import MLMConfig, MLMHistory, train_mlm
from molft_utils.training.train import FitResult, TargetScaler, TrainConfig, fit, predict

__all__ = [
    "POOL_FRACTION",
    "SMOKE_SIZES",
    "FinetuneArtefact",
    "Task",
    "backbone_identity",
    "code_version",
    "convergence",
    "evaluate",
    "finetuned_model",
    "descriptor_adapted_backbone",
    "descriptor_adaptation_config",
    "INITS",
    "load_masked_lm",
    "load_task",
    "RECIPE",
    "recipe_configs",
    "mlm_adapted_backbone",
    "resolve_smoke",
]

log = logging.getLogger(__name__)

def code_version(mixed_precision: str, module: str = "runs.finetune") -> dict[str, str]:
    """The code and arithmetic behind a cached artefact: part of every cache key of this module (and of
    :mod:`~molft_utils.runs.influence_runs`, which passes its own ``module``).

    ``code_version`` is the logic hash of ``module`` and everything it imports from the package
    (:func:`~molft_utils.runs.identity.module_logic_hash`), so an edit of the code that builds a model rebuilds it
    (an edit of comments or docstrings does not). ``device`` and ``autocast`` are what ``mixed_precision`` resolves
    to on this machine (``"auto"`` is bf16 on a CPU with native bf16, fp32 on one without), because the same
    recipe trains a different model in another precision.
    """
    device = get_device()
    return {
        "code_version": module_logic_hash(module),
        "device": device.type,
        "autocast": str(autocast_dtype(device, mixed_precision)),
    }


#: The notebook-01 fine-tuning recipe. Notebook 01 states the same values in its parameters cell (a test
#: checks they agree); later notebooks build their configurations with :func:`recipe_configs`, so they
#: reuse notebook 01's cached models.
RECIPE = {
    "epochs": 30,
    "patience": 5,
    "batch_size": 32,
    "lr_backbone": 1e-4,
    "lr_head": 1e-3,
    "mlm_epochs": 10,
    "mlm_lr": 1e-4,
    "mlm_batch_size": 64,
    # warm-up, then halve the rate after 2 epochs without a better validation RMSE (early stopping still decides):
    # a linear decay over the epoch ceiling stopped on validation noise near the peak rate
    # (reports/benchmark/schedule_probe/README.md)
    "schedule": "plateau",
    "plateau_patience": 2,
}


def recipe_configs(seed: int, smoke: bool = False, **overrides: float | str) -> tuple[TrainConfig, MLMConfig]:
    """Fine-tuning and MLM configurations of the notebook-01 recipe (``overrides`` replace RECIPE keys).

    Smoke mode trains one epoch and half an MLM epoch.
    """
    r = RECIPE | overrides
    train = TrainConfig(
        epochs=1 if smoke else int(r["epochs"]),
        patience=int(r["patience"]),
        batch_size=int(r["batch_size"]),
        lr_backbone=float(r["lr_backbone"]),
        lr_head=float(r["lr_head"]),
        schedule=str(r["schedule"]),
        plateau_patience=int(r["plateau_patience"]),
        seed=seed,
    )
    mlm = MLMConfig(
        epochs=0.5 if smoke else float(r["mlm_epochs"]),
        lr=float(r["mlm_lr"]),
        batch_size=int(r["mlm_batch_size"]),
        seed=seed,
        eval_every=0 if smoke else 50,
    )
    return train, mlm


def backbone_identity(model: str | Path | None = None) -> dict:
    """A cache-key description of a backbone: Hub id + revision, or a local folder's weight hash."""
    name = str(resolve_backbone(model))
    path = Path(name)
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        digest = hashlib.sha256("".join(sha256(w) for w in weights).encode()).hexdigest()[:16]
        label = "default" if path.resolve() == DEFAULT_BACKBONE.resolve() else path.name
        return {"backbone": label, "weights_sha256": digest}
    return {"backbone": name, "revision": MOLFORMER_REVISION if name == MOLFORMER_ID else None}


def load_masked_lm(model: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The backbone with its masked-language-model head (for domain-adaptive MLM)."""
    _, tokenizer = load_backbone(model)
    name = str(resolve_backbone(model))
    kwargs: dict = {}
    if name == MOLFORMER_ID:
        kwargs = {"trust_remote_code": True, "revision": MOLFORMER_REVISION, "deterministic_eval": True}
    return AutoModelForMaskedLM.from_pretrained(name, **kwargs), tokenizer


def _encoder_of(masked_lm: PreTrainedModel) -> PreTrainedModel:
    return getattr(masked_lm, masked_lm.base_model_prefix)


def mlm_adapted_backbone(
    task: Task,
    model: str | Path | None = None,
    config: MLMConfig | None = None,
    cache: ModelCache | None = None,
    progress: bool = True,
) -> tuple[Path, MLMHistory]:
    """Domain-adaptive MLM on the task's training SMILES plus the pool's SMILES, cached.

    The held-out MLM loss is measured on the validation SMILES (monitoring only; they are never
    trained on). Returns the cache folder (loadable with :func:`molft_utils.models.backbone.load_backbone`)
    and the MLM history.
    """
    cfg = config or MLMConfig()
    cache = cache or ModelCache()
    corpus = list(task.train.smiles) + list(task.pool.smiles)
    key = {
        **code_version(cfg.mixed_precision),
        "task": task.key,
        "corpus_sha256": hashlib.sha256("\n".join(corpus).encode()).hexdigest(),
        **backbone_identity(model),
        "mlm": asdict(cfg),
    }

    def build(out: Path) -> None:
        masked_lm, tokenizer = load_masked_lm(model)
        history = train_mlm(masked_lm, tokenizer, corpus, list(task.valid.smiles), cfg, progress=progress)
        masked_lm.save_pretrained(out / "masked_lm", safe_serialization=True)
        _encoder_of(masked_lm).save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / "mlm_history.json").write_text(json.dumps(to_jsonable(history.to_dict()), indent=2) + "\n")

    path = cache.get_or_create("mlm_adapted", key, build)
    history = MLMHistory(**json.loads((path / "mlm_history.json").read_text()))
    return path, history


def descriptor_adaptation_config(mlm_config: MLMConfig) -> MLMConfig:
    """The descriptor domain-adaptation configuration beside a domain-adaptive MLM one: the same epochs,
    learning rate, batch and seed, with the loss switched from MLM to descriptor regression (no masking)."""
    return MLMConfig(**{**asdict(mlm_config), "mlm_weight": 0.0, "descriptor_weight": 1.0})


def descriptor_adapted_backbone(
    task: Task,
    model: str | Path | None = None,
    config: MLMConfig | None = None,
    cache: ModelCache | None = None,
    progress: bool = True,
) -> tuple[Path, MLMHistory]:
    """Descriptor domain adaptation (Sultan et al., 2025): multi-task regression of standardised RDKit
    descriptors on the task's training plus pool SMILES, cached.

    The descriptors are computed from the structures only (never the labels) and standardised on the same
    molecules; a fresh linear head predicts them from the mean-pooled representation and is discarded
    afterwards. ``config`` defaults to :func:`descriptor_adaptation_config` of the recipe's MLM settings;
    the held-out descriptor R² is measured on the validation SMILES (monitoring only). Returns the cache
    folder (loadable with :func:`~molft_utils.models.backbone.load_backbone`) and the history.
    """
    cfg = config or descriptor_adaptation_config(MLMConfig())
    if cfg.descriptor_weight <= 0:
        raise ValueError("descriptor adaptation needs descriptor_weight > 0")
    cache = cache or ModelCache()
    corpus = list(task.train.smiles) + list(task.pool.smiles)
    key = {
        **code_version(cfg.mixed_precision),
        "task": task.key,
        "corpus_sha256": hashlib.sha256("\n".join(corpus).encode()).hexdigest(),
        "descriptors": list(DESCRIPTOR_NAMES),
        **backbone_identity(model),
        "mlm": asdict(cfg),
    }

    def build(out: Path) -> None:
        masked_lm, tokenizer = load_masked_lm(model)
        raw = rdkit_descriptors(corpus)
        scaler = DescriptorScaler.fit(raw)
        valid = list(task.valid.smiles)
        history = train_mlm(
            masked_lm, tokenizer, corpus, valid, cfg, progress=progress, descriptors=scaler.transform(raw),
            valid_descriptors=scaler.transform(rdkit_descriptors(valid)),
        )  # fmt: skip
        _encoder_of(masked_lm).save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        scaler.save(out / "descriptor_scaler.json")
        (out / "mlm_history.json").write_text(json.dumps(to_jsonable(history.to_dict()), indent=2) + "\n")

    path = cache.get_or_create("descriptor_adapted", key, build)
    history = MLMHistory(**json.loads((path / "mlm_history.json").read_text()))
    return path, history


#: Starting points of :func:`finetuned_model`.
INITS = ("pretrained", "random", "mlm", "descriptors")


@dataclass
class FinetuneArtefact:
    """A cached fine-tuned model and how it was trained."""

    model: RegressionModel
    tokenizer: PreTrainedTokenizerBase
    scaler: TargetScaler
    fit: FitResult
    path: Path
    cache_hit: bool
    init: str
    key: dict = field(default_factory=dict)


def finetuned_model(
    task: Task,
    init: str = "pretrained",
    model: str | Path | None = None,
    train_config: TrainConfig | None = None,
    mlm_config: MLMConfig | None = None,
    cache: ModelCache | None = None,
    progress: bool = True,
) -> FinetuneArtefact:
    """Fine-tune (or load from the cache) a regression model with the notebook-01 recipe.

    Parameters
    ----------
    task
        Data (train / valid parts are used).
    init
        ``"pretrained"`` (the backbone as shipped), ``"random"`` (same architecture, random weights,
        seeded by ``train_config.seed``), ``"mlm"`` (after :func:`mlm_adapted_backbone`) or ``"descriptors"``
        (after :func:`descriptor_adapted_backbone`, configured from ``mlm_config``).
    model
        Backbone: ``None`` for the embedded default, a folder, or a Hub id.
    train_config, mlm_config
        Hyper-parameters; ``mlm_config`` only matters for ``init="mlm"``.
    cache
        Defaults to :class:`~molft_utils.core.records.ModelCache` (``$MOLFT_CACHE`` or ``<repo>/cache``).

    Returns
    -------
    FinetuneArtefact
        The model in eval mode with its target scaler and training history.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    tcfg = train_config or TrainConfig()
    cache = cache or ModelCache()
    key = {
        **code_version(tcfg.mixed_precision),
        "task": task.key,
        **backbone_identity(model),
        "init": init,
        "train": asdict(tcfg),
    }
    mlm_path = None
    if init == "mlm":
        mlm_cfg = mlm_config or MLMConfig()
        mlm_path, _ = mlm_adapted_backbone(task, model, mlm_cfg, cache, progress)
        key["mlm"] = {"config": asdict(mlm_cfg), "entry": mlm_path.name}
    elif init == "descriptors":
        desc_cfg = descriptor_adaptation_config(mlm_config or MLMConfig())
        mlm_path, _ = descriptor_adapted_backbone(task, model, desc_cfg, cache, progress)
        key["descriptor_adaptation"] = {"config": asdict(desc_cfg), "entry": mlm_path.name}
    hit = cache.has("finetuned", key)

    def build(out: Path) -> None:
        backbone, tokenizer = load_backbone(mlm_path if mlm_path is not None else model)
        if init == "random":
            torch.manual_seed(tcfg.seed)
            backbone = random_init_like(backbone)
        torch.manual_seed(tcfg.seed)
        reg = RegressionModel(backbone)
        res = fit(
            reg,
            tokenizer,
            list(task.train.smiles),
            list(task.train.label),
            list(task.valid.smiles),
            list(task.valid.label),
            tcfg,
            progress=progress,
        )
        reg.save(out / "model", extra={"scaler": res.scaler.to_dict()})
        tokenizer.save_pretrained(out / "model")
        fit_record = {k: v for k, v in asdict(res).items() if k != "scaler"} | {"scaler": res.scaler.to_dict()}
        (out / "fit.json").write_text(json.dumps(to_jsonable(fit_record), indent=2) + "\n")

    path = cache.get_or_create("finetuned", key, build)
    reg, meta = RegressionModel.load(path / "model")
    tokenizer = AutoTokenizer.from_pretrained(path / "model")
    record = json.loads((path / "fit.json").read_text())
    scaler = TargetScaler.from_dict(meta["scaler"])
    fit_result = FitResult(**{k: v for k, v in record.items() if k != "scaler"}, scaler=scaler)
    return FinetuneArtefact(reg, tokenizer, scaler, fit_result, path, hit, init, key)


def evaluate(artefact: FinetuneArtefact, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, float]]:
    """Predictions (label units) and :func:`~molft_utils.training.metrics.regression_metrics` on ``frame``."""
    pred = predict(artefact.model, artefact.tokenizer, list(frame.smiles), artefact.scaler)
    return pred, regression_metrics(frame.label.to_numpy(), pred)


def convergence(
    history: list[dict],
    patience: int | None = None,
    window: int = _convergence.CONVERGENCE_WINDOW,
    threshold: float = _convergence.CONVERGENCE_THRESHOLD,
) -> dict[str, float | int | bool | str | None]:
    """How settled a fine-tuning run was when it ended (see :func:`molft_utils.training.convergence.convergence`).

    Returns ``epochs_run``, ``best_epoch``, ``patience``, ``stopped_early`` (validation did not improve in the
    last ``patience`` epochs, which is when :func:`~molft_utils.training.train.fit` stops), ``last_window_gain``
    (relative improvement of the best validation RMSE of the last ``window`` epochs over the best before them;
    NaN for ≤ ``window`` epochs), ``window``, ``threshold``, ``converged`` (stopped early, or gain below
    ``threshold``) and ``reason``.
    """
    return _convergence.convergence(history, patience=patience, window=window, threshold=threshold)
