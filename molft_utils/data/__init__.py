"""Layer 1, data: loading and validating SMILES + label CSVs, the data-set registry, fixed splits.

Modules: ``loading``, ``datasets``, ``splits``.
"""
