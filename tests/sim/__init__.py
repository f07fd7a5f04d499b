"""A traffic simulator: weights in, Istio/Envoy/ingress-nginx/Linkerd metrics out on /metrics.

Used by the Prometheus integration tests, and meant for the end-to-end tests and the demo
when they run a real Prometheus: ``TrafficSimulator`` turns each version's current weight and
profile into requests, errors and latencies; ``MetricsServer`` exposes them for scraping.
"""
