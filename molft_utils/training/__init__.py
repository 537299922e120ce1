"""Layer 3, training: batching and collation, the fine-tuning loop, MLM training, metrics, the throughput benchmark.

Modules: ``batching``, ``collate``, ``loop``, ``train``, ``mlm``, ``metrics``, ``benchmark``.
"""
