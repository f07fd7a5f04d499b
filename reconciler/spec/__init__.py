"""Experiment documents: the typed model, the YAML loader, and field paths (pure)."""
