"""molft_utils: the thin package shared by the molft notebooks.

Modules: ``data`` (loading and validation), ``splits`` (fixed splits, leakage checks),
``tokenizer`` (MoLFormer SMILES regex), ``models`` (backbones, regression model), ``train``
(fine-tuning loop), ``mlm`` (masked-language-model training), ``metrics``, ``baselines``
(ECFP4 + RandomForest), ``runs`` (result records, model cache), ``device`` (device, mixed
precision, seeding), ``corpus`` / ``pretrain`` / ``quality_gate`` (the embedded backbone).
"""

__version__ = "0.1.0"
