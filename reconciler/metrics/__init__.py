"""Metric values for the engine (the demo's profile-based source for now)."""
