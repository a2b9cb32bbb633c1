"""Escalation policies: the kinds, their offline fitting (calibration) and evaluation."""
