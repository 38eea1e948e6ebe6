"""Metrics (:mod:`recengine.observability.metrics`) and structured logs
(:mod:`recengine.observability.logging`).

Each module's docstring lists its whole API. Nothing is imported here, so that importing one never pulls in
the other (``prometheus_client`` must be imported only after ``PROMETHEUS_MULTIPROC_DIR`` is settled).
"""
