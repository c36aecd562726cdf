"""Losses: pure functions of log-prob tensors, each tested against hand-computed numbers."""
