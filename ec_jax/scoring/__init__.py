"""Scoring: token statistics, thresholds, phases, centroids and selection, as pure JAX functions."""
