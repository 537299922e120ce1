"""Parameter-efficient fine-tuning (PEFT) of the regression model with Hugging Face ``peft``.

Full fine-tuning updates every weight of the encoder. The methods here train a small fraction:

* **BitFit** (Ben Zaken et al., ACL 2022, arXiv:2106.10199) trains only the bias terms of the
  encoder (every ``*.bias``, LayerNorm biases included).
* **LoRA** (Hu et al., ICLR 2022, arXiv:2106.09685) freezes a weight ``W`` and learns a low-rank
  update ``W + (alpha / r) B A`` with ``A`` (r x in) and ``B`` (out x r, zero-initialised); here on
  the query, key and value projections of self-attention.
* **DoRA** (Liu et al., ICML 2024, arXiv:2402.09353) splits ``W`` into magnitude and direction and
  applies LoRA to the direction only (``LoraConfig(use_dora=True)``).
* **AdaLoRA** (Zhang et al., ICLR 2023, arXiv:2303.10512) parametrises the update as ``P Λ Q``
  (SVD form), scores the importance of each singular triplet during training and prunes the rank
  budget down to ``target_r`` on average; it needs the total number of optimiser steps, a call of
  ``update_and_allocate`` after every optimiser step and an orthogonality regulariser on ``P``
  and ``Q``.
* **(IA)³** (Liu et al., NeurIPS 2022, arXiv:2205.05638) learns vectors that rescale the keys, the
  values and the feed-forward intermediate activation (= the input of the FFN down-projection).

The regression head always trains. Only the encoder (``model.backbone``) is wrapped with
:func:`peft.get_peft_model`; the head stays a plain module outside it. Target modules are found
*by role* in the module tree (:func:`attention_targets`, :func:`feedforward_targets`) and passed to
``peft`` as full module names, so the same call works for the embedded RoFormer and for
MoLFormer-XL, and ``output.dense`` of the FFN is never confused with ``attention.output.dense``.

Typical use::

    setup = prepare(RegressionModel(backbone), "lora", total_steps=steps)
    result = fit(setup.model, tokenizer, ..., hooks=setup.hooks)
    merge_and_save(setup.model, out_dir)  # a plain RegressionModel checkpoint

:func:`peak_memory` and :func:`inference_seconds` are the measurements of notebook 04, which also uses
:func:`fine_tune` (fresh backbone → prepare → fit), :func:`training_memory_subprocess` (peak memory of a
method measured in a fresh process, so that run order does not matter), :func:`parameter_budget` with
:func:`encoder_without_weights` (trainable-parameter counts of a larger model, e.g. MoLFormer-XL's shape,
computed without weights) (the Pareto figure: :func:`molft_utils.runs.plotting.pareto_figure`).

Modules: :mod:`.settings` (a dataclass per method), :mod:`.targets` (target modules by role), :mod:`.setup`
(the registry, :func:`prepare`, :func:`fine_tune`), :mod:`.merge` (merging adapters), :mod:`.budget` (the
equal-budget view of recorded runs), :mod:`.probes` (memory, inference time, parameter budgets), :mod:`.costs`
(time and memory of several methods in interleaved rounds) and :mod:`.figures` (the cost Pareto panels, the
LoRA rank study).
"""

from molft_utils.methods.peft_methods import budget, costs, figures, probes, setup, sweep
from molft_utils.methods.peft_methods.budget import *  # noqa: F403
from molft_utils.methods.peft_methods.costs import *  # noqa: F403
from molft_utils.methods.peft_methods.figures import *  # noqa: F403
from molft_utils.methods.peft_methods.probes import *  # noqa: F403
from molft_utils.methods.peft_methods.settings import LORA_PLACEMENTS, lora_variant
from molft_utils.methods.peft_methods.setup import *  # noqa: F403
from molft_utils.methods.peft_methods.sweep import *  # noqa: F403

__all__ = [*setup.__all__, *probes.__all__, *budget.__all__, *costs.__all__, *figures.__all__, *sweep.__all__,
           "LORA_PLACEMENTS", "lora_variant"]
