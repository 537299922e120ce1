"""molft_utils: the thin package shared by the molft notebooks.

Modules: ``data`` (loading and validation), ``splits`` (fixed splits, leakage checks),
``tokenizer`` (MoLFormer SMILES regex), ``models`` (backbones, regression model), ``train``
(fine-tuning loop), ``mlm`` (masked-language-model training), ``metrics``, ``baselines``
(ECFP4 + RandomForest), ``runs`` (result records, model cache), ``device`` (device, mixed
precision, seeding), ``progress`` (tqdm bars), ``student`` (student release, nbgrader metadata),
``corpus`` / ``pretrain`` / ``quality_gate`` (the embedded backbone).
"""

import warnings

__version__ = "0.1.0"

# Warnings a learner cannot act on, filtered here at the source rather than in every notebook:
# peft reads `model.is_gradient_checkpointing`, which transformers 5 deprecates (their problem, not ours).
# (tqdm's "IProgress not found" is gone because ipywidgets is a dependency.)
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
