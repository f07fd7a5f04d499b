"""The process's HTTP face: /metrics, /healthz, /readyz and /webhook."""
