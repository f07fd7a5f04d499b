"""A progressive-delivery reconciler whose only state store is the GitOps Env repo."""

__version__ = "0.1.0"
