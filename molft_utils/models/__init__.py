"""Layer 2, models: the SMILES tokenizer, backbones and the regression model, the model card.

Modules: ``tokenizer``, ``backbone``, ``model_card``.
"""
