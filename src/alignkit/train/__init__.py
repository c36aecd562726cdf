"""The one training loop and what it needs: run directory, checkpoints, logging, method steps."""
