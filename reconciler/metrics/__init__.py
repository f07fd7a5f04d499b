"""Metric values for the engine: Prometheus, the builtin library, and the demo's profiles."""
