"""Many Env repos in one process: when each ticks (``schedule``), and one repo's worker."""
