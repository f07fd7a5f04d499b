"""What ``hack/bench.py`` builds and measures, one module per benchmark.

``common`` (git in a clean environment, statistics, tables), ``servers`` (``git daemon``
and ``git http-backend`` on loopback, as child processes that stop with the benchmark),
``app`` (the Env repo's real-looking app and an experiment that promotes it), ``world``
(N running experiments written straight into an Env repo, and served), then one module per
subcommand: ``promote``, ``race`` (with the CI writer ``ci_writer``), ``tick``, ``memory``,
``soak`` (``reconciler run`` in the end-to-end tests' world, sampled from outside),
``load`` (the built-in load generator against ``sink``, a fast HTTP server), ``fleet``
(one ``reconciler run`` serving many Env repos in ``fleetworld``'s world, and ``takeover``:
the Leases of a killed replica taken by the survivors).
What the tests already have is imported from ``tests`` (``hack/bench.py`` puts the
repository's root on ``sys.path``): ``tests.gitutil.git_env`` for git's clean environment,
and ``tests.httpgit``, the smart HTTP server, run as ``python -m tests.httpgit``.
"""
