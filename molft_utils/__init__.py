"""molft_utils: the package shared by the molft notebooks, in layers (each imports only from layers below it).

===============  =====================================================================================
``core``         settings read once from the environment, device / precision / seeding, progress bars,
                 run records and the model cache
``data``         loading and validation, the data-set registry, fixed splits and leakage checks
``models``       the SMILES tokenizer, backbones and the regression model, the model card
``training``     batching and collation, the fine-tuning loop, MLM training, metrics, throughput benchmark
``methods``      ECFP4 + RF baseline, influence functions, data selection, PEFT, robust fine-tuning
``pretraining``  the embedded backbone: corpus, pretraining, quality gate
``runs``         the lessons' cached fine-tunes and influence runs, notebook helpers, plotting, verdicts,
                 the batch runner and its cache jobs, the report
``teaching``     the student edition (nbgrader)
===============  =====================================================================================

Notebooks import in the style of d2l, from the top level: ``from molft_utils import finetune, notebook, fit``.
The names below are resolved lazily (PEP 562), so ``import molft_utils`` stays cheap and a command line such as
``python -m molft_utils.runs.batch`` imports only what it uses.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__version__ = "0.1.0"

#: The layers, lowest first; a module may import only from its own layer or the ones before it
#: (checked by tests/test_layout.py).
LAYERS = ("core", "data", "models", "training", "methods", "pretraining", "runs", "teaching")

#: Modules reachable as ``molft_utils.<name>`` (``from molft_utils import finetune``).
MODULES = {
    "settings": "core.settings",
    "device": "core.device",
    "progress": "core.progress",
    "records": "core.records",
    "loading": "data.loading",
    "datasets": "data.datasets",
    "splits": "data.splits",
    "descriptors": "data.descriptors",
    "tokenizer": "models.tokenizer",
    "backbone": "models.backbone",
    "model_card": "models.model_card",
    "batching": "training.batching",
    "collate": "training.collate",
    "train": "training.train",
    "mlm": "training.mlm",
    "metrics": "training.metrics",
    "convergence": "training.convergence",
    "benchmark": "training.benchmark",
    "baselines": "methods.baselines",
    "influence": "methods.influence",
    "head_influence": "methods.head_influence",
    "selection": "methods.selection",
    "probe": "methods.probe",
    "selection_profile": "methods.selection_profile",
    "peft_methods": "methods.peft_methods",
    "robust": "methods.robust",
    "corpus": "pretraining.corpus",
    "pretrain": "pretraining.pretrain",
    "quality_gate": "pretraining.quality_gate",
    "ablation": "pretraining.ablation",
    "finetune": "runs.finetune",
    "influence_runs": "runs.influence_runs",
    "notebook": "runs.notebook",
    "plotting": "runs.plotting",
    "verdicts": "runs.verdicts",
    "findings": "runs.findings",
    "report": "runs.report",
    "batch": "runs.batch",
    "cache_jobs": "runs.cache_jobs",
    "student": "teaching.student",
}

#: Functions and classes the notebooks use, by the module that defines them.
NAMES = {
    "ModelCache": "core.records",
    "write_result": "core.records",
    "load_results": "core.records",
    "leakage_report": "data.splits",
    "get_split": "data.splits",
    "split_smiles": "models.tokenizer",
    "unknown_token_rate": "models.tokenizer",
    "DEFAULT_BACKBONE": "models.backbone",
    "RegressionModel": "models.backbone",
    "count_parameters": "models.backbone",
    "load_backbone": "models.backbone",
    "TrainConfig": "training.train",
    "fit": "training.train",
    "predict": "training.train",
    "regression_metrics": "training.metrics",
    "random_forest_baseline": "methods.baselines",
    "PALETTE": "runs.plotting",
    "findings_for": "runs.findings",
}

__all__ = ["LAYERS", "MODULES", "NAMES", "__version__", *MODULES, *(n for n in NAMES if n not in MODULES)]


def __getattr__(name: str) -> Any:
    """Import a module of :data:`MODULES` or a name of :data:`NAMES` on first use."""
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{MODULES[name]}")
    if name in NAMES:
        return getattr(importlib.import_module(f"{__name__}.{NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(MODULES) | set(NAMES))


# Warnings a learner cannot act on, filtered here at the source rather than in every notebook:
# peft reads `model.is_gradient_checkpointing`, which transformers 5 deprecates (their problem, not ours).
# (tqdm's "IProgress not found" is gone because ipywidgets is a dependency.)
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
