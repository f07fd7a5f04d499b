"""The reconcile loop: the one place that sequences I/O."""
