"""Shared engine: sequence log-probs, reference handling, generation."""
