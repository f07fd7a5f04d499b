"""The embedded demo: a canary end to end with in-process adapters."""
