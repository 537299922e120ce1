"""Build lesson 01's cached models as jobs of their own (the workflow runs them before notebooks 02–05).

::

    python -m molft_utils.runs.cache_jobs mlm --seed 0 --split random --marker m.json
    python -m molft_utils.runs.cache_jobs finetuned --init mlm --seed 0 --split random --marker f.json
    python -m molft_utils.runs.cache_jobs finetuned --init pretrained --seed 0 --split scaffold --smoke -p model=ibm/...

Each command builds (or finds) one entry of the model cache (``$MOLFT_CACHE`` or ``<repo>/cache``) with
exactly the calls and the recipe (:func:`molft_utils.runs.finetune.recipe_configs`) that the notebooks make,
so a notebook that runs afterwards gets a cache hit. ``--marker`` writes a small JSON file (entry path,
cache key, hit or build, seconds) that the Snakemake workflow uses as the job's output.

``-p KEY=VALUE`` takes the run's notebook parameters: ``model`` selects the backbone, every parameter that
:func:`molft_utils.runs.finetune.load_task` accepts (other than ``split``, ``seed`` and ``smoke``) is passed to
it, e.g. a dataset choice, ``profile`` selects the recipe (:func:`molft_utils.runs.profiles.recipe_overrides`)
and ``random_init_epochs`` the epoch ceiling of the model trained from random initialisation (default: lesson
01's parameter; the quick profile uses its own ceiling for every arm, as the notebook does). Other parameters do
not change these models and are ignored.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from molft_utils.core.records import write_json_atomic
from molft_utils.runs.batch import parse_override

if TYPE_CHECKING:
    from molft_utils.training.mlm import MLMConfig
    from molft_utils.training.train import TrainConfig

__all__ = [
    "KINDS",
    "RECIPE_OPTIONS",
    "build",
    "job_configs",
    "lesson01_random_init_epochs",
    "main",
    "relevant_options",
    "task_option_names",
]

log = logging.getLogger(__name__)

#: The cache entries a job can build: ``mlm`` (domain-adapted backbone) and the three fine-tunes.
KINDS = ("mlm", "finetuned-random", "finetuned-pretrained", "finetuned-mlm")
_PIPELINE = Path(__file__).resolve().parent / "tasks.py"  # where load_task is defined
_LESSON01 = Path(__file__).resolve().parents[2] / "notebooks" / "01_finetune_and_mlm.ipynb"
_FIXED = ("split", "seed", "smoke")
#: Notebook parameters that change the recipe of the cached models.
RECIPE_OPTIONS = ("profile", "random_init_epochs")


def task_option_names(pipeline_source: Path = _PIPELINE) -> tuple[str, ...]:
    """Keyword arguments of ``tasks.load_task`` other than split/seed/smoke (read from the source, no import)."""
    tree = ast.parse(pipeline_source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "load_task":
            args = node.args.args + node.args.kwonlyargs
            return tuple(a.arg for a in args if a.arg not in _FIXED)
    raise RuntimeError(f"{pipeline_source} defines no load_task")


def relevant_options(parameters: dict) -> dict:
    """The parameters that change the cached models: ``model``, :data:`RECIPE_OPTIONS`, :func:`task_option_names`."""
    names = {"model", *RECIPE_OPTIONS, *task_option_names()}
    return {k: v for k, v in sorted(parameters.items()) if k in names}


def lesson01_random_init_epochs(notebook: Path = _LESSON01) -> int:
    """The default of lesson 01's ``random_init_epochs`` parameter (read from its parameters cell)."""
    from molft_utils.runs.identity import notebook_defaults

    value = notebook_defaults(notebook).get("random_init_epochs")
    if not isinstance(value, int):
        raise RuntimeError(f"{notebook}: no integer parameter random_init_epochs in its parameters cell")
    return value


def job_configs(
    kind: str, seed: int, smoke: bool, profile: str = "full", random_init_epochs: int | None = None
) -> tuple[TrainConfig, MLMConfig]:
    """The fine-tuning and MLM configurations lesson 01 uses for ``kind`` (the recipe of ``profile``).

    The model trained from random initialisation gets lesson 01's own epoch ceiling (``random_init_epochs``,
    default: the notebook's parameter) in the full profile; in the quick profile and in smoke mode every arm
    shares the recipe's ceiling, as in the notebook.
    """
    from molft_utils.runs import finetune as pipeline
    from molft_utils.runs.profiles import recipe_overrides

    train_config, mlm_config = pipeline.recipe_configs(seed, smoke, **recipe_overrides(profile))
    if kind == "finetuned-random" and not smoke and profile == "full":
        epochs = random_init_epochs if random_init_epochs is not None else lesson01_random_init_epochs()
        train_config = dataclasses.replace(train_config, epochs=int(epochs))
    return train_config, mlm_config


def build(kind: str, seed: int, split: str, smoke: bool, options: dict | None = None) -> dict:
    """Build or find one cache entry; returns the marker record.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    seed, split, smoke
        As in the notebooks' parameters.
    options
        ``model`` and extra ``load_task`` keyword arguments (see :func:`relevant_options`).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    from molft_utils.core.records import ModelCache
    from molft_utils.runs import finetune as pipeline

    options = relevant_options(dict(options or {}))
    model = options.pop("model", None)
    profile = str(options.pop("profile", "full"))
    train_config, mlm_config = job_configs(kind, seed, smoke, profile, options.pop("random_init_epochs", None))
    t0 = time.perf_counter()
    task = pipeline.load_task(split, seed, smoke=smoke, **options)
    cache = ModelCache()
    if kind == "mlm":
        path, _ = pipeline.mlm_adapted_backbone(task, model, mlm_config, cache, progress=False)
        hit = None
    else:
        init = kind.split("-", 1)[1]
        art = pipeline.finetuned_model(task, init, model, train_config, mlm_config, cache=cache, progress=False)
        path, hit = art.path, art.cache_hit
    record = {
        "kind": kind,
        "seed": seed,
        "split": split,
        "smoke": smoke,
        "options": {"model": model, "profile": profile, **options},
        "epochs": train_config.epochs,
        "entry": str(path),
        "entry_hash": path.name,
        "cache_root": str(cache.root),
        "cache_hit": hit,
        "seconds": time.perf_counter() - t0,
    }
    log.info("%s seed=%d split=%s: %s (%.0f s)", kind, seed, split, path, record["seconds"])
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description="Build one of lesson 01's cached models (for the workflow).")
    p.add_argument("what", choices=("mlm", "finetuned"))
    p.add_argument("--init", choices=("random", "pretrained", "mlm"), default="pretrained", help="for finetuned")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--split", default="random")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("-p", "--param", type=parse_override, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--marker", type=Path, help="write the marker record here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kind = "mlm" if a.what == "mlm" else f"finetuned-{a.init}"
    record = build(kind, a.seed, a.split, a.smoke, dict(a.param))
    if a.marker:
        write_json_atomic(a.marker, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
