"""``alignkit env``: versions, devices and bf16 support, to paste into a bug report."""

from __future__ import annotations

from alignkit.train.environment import environment


def print_env(config=None) -> int:
    """Print the environment as a list to paste into an issue."""
    print("Copy-paste the following into your bug report:\n")
    for label, value in environment().items():
        print(f"- {label}: {value}")
    return 0
