"""The Kubernetes side: weights and readiness (the demo's in-memory cluster for now)."""
