"""Layer 5, the embedded backbone: its corpus, its pretraining run and its quality gate.

Modules: ``corpus``, ``pretrain``, ``quality_gate``.
"""
