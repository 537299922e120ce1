"""Layer 4, methods: the lessons' techniques (baseline, influence functions, data selection, PEFT, robust fine-tuning).

Modules: ``baselines``, ``influence``, ``head_influence``, ``selection``, ``selection_profile``, ``peft_methods``,
``robust``.
"""
