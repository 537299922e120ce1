"""Layer 6, runs: the lessons' cached fine-tunes and influence runs, notebook helpers, figures, the batch
runner and its cache jobs, verdicts and the report.

Modules: ``tasks`` (a run's data), ``finetune``, ``influence_runs``, ``notebook``, ``plotting``, ``verdicts``,
``findings``, ``report``, ``batch``, ``cache_jobs``.
"""
