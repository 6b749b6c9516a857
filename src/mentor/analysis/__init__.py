"""Analyses of runs: the per-token advantage of a context."""
