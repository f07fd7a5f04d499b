"""``reconciler report``: one run of an experiment as a self-contained page, from Git alone.

``collect`` reads the run's commits and documents through the ``EnvStore`` port,
``model`` turns them into a ``Report`` (and its JSON form), ``svg`` and ``html`` render
it as one HTML file with inline charts that loads nothing when opened. Only ``collect``
reads the Env repo; nothing here writes to it, and nothing here imports pygit2.
"""
