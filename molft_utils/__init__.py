"""molft_utils: the thin package shared by the molft notebooks.

Modules: ``data`` (loading and validation), ``splits`` (fixed splits, leakage checks),
``tokenizer`` (MoLFormer SMILES regex), ``models`` (backbones, regression model), ``train``
(fine-tuning loop), ``mlm`` (masked-language-model training), ``metrics``, ``baselines``
(ECFP4 + RandomForest), ``runs`` (result records, model cache), ``device`` (device, mixed
precision, seeding), ``corpus`` / ``pretrain`` / ``quality_gate`` (the embedded backbone).
"""

import warnings

__version__ = "0.1.0"

# Without ipywidgets, tqdm.auto falls back to text progress bars in Jupyter and warns about it on import;
# the fallback is what we want (executed notebooks stay free of widget state), so the warning is noise.
warnings.filterwarnings("ignore", message="IProgress not found")
