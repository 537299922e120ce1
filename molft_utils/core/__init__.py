"""Layer 0, the base: settings from the environment, device / precision / seeding, progress bars, run records.

Modules: ``settings``, ``device``, ``progress``, ``records``.
"""
