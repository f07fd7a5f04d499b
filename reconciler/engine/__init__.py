"""The pure decision engine: experiment state, and how it moves (no I/O)."""
