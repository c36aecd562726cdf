"""Judges that score responses: verifiers and heuristics (LLM judges arrive with the data issue)."""
