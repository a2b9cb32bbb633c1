"""Escalation policies: the kinds, their offline fitting (calibration) and evaluation.

A new kind is one ScorePolicy subclass decorated with `policies.register_policy`, in a module of
its own here that this file imports (so the registry holds it whenever the package is loaded)."""
