"""Errors that are part of the interface: each says what was wrong, where, and how to fix it.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; tracebacks are for bugs only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


class AlignkitError(Exception):
    """Base class for user-facing errors."""

    exit_code = 1


class ConfigError(AlignkitError):
    """A config key or value is invalid (bad YAML, unknown key, out-of-range value)."""

    exit_code = 2


class RunDirError(AlignkitError):
    """The output directory cannot be used as asked (exists and non-empty, nothing to resume)."""

    exit_code = 2


class MissingDependencyError(AlignkitError):
    """An optional extra (GPU-only parts, benchmarks) is not installed."""

    exit_code = 2


@dataclass(frozen=True)
class Fault:
    """One problem in an input file: ``where`` is ``file:line`` (or ``file row N``)."""

    where: str
    field: str | None
    message: str

    def __str__(self) -> str:
        field = f" field '{self.field}':" if self.field else ""
        return f"{self.where}:{field} {self.message}"


class DataValidationError(AlignkitError):
    """Input data has faults; every fault found (up to a limit) is listed at once."""

    exit_code = 2

    def __init__(self, source: str, faults: list[Fault], total: int | None = None):
        self.source = source
        self.faults = faults
        self.total = total if total is not None else len(faults)
        lines = [f"{source}: {self.total} problem(s) in the data; nothing was trained or written."]
        lines += [f"  {fault}" for fault in faults]
        if self.total > len(faults):
            lines.append(f"  ... and {self.total - len(faults)} more (fix these and run again).")
        super().__init__("\n".join(lines))


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency, or fail saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package, which is not installed "
            f"({exc}). Install it with: pip install 'alignkit[{extra}]'"
        ) from exc
