"""The run directory: refuse to clobber, overwrite only when asked, resume only what exists."""

from __future__ import annotations

import shutil
from pathlib import Path

from alignkit.errors import RunDirError


def check_run_dir(output_dir: str | Path, overwrite: bool = False, resume: bool = False) -> tuple[Path, bool]:
    """Refuse what prepare_run_dir would refuse, without touching anything; (path, non-empty)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output_dir {path} exists and is not a directory")
    non_empty = path.is_dir() and any(path.iterdir())
    if resume:
        if not non_empty:
            raise RunDirError(
                f"--resume: {path} has no run to resume (it is empty or missing); drop --resume to start a new run"
            )
    elif non_empty:
        if not overwrite:
            raise RunDirError(
                f"output_dir {path} already exists and is not empty; nothing was changed. "
                "Use --overwrite to replace it, --resume to continue it, or choose another --output_dir"
            )
    return path, non_empty


def prepare_run_dir(output_dir: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create (or reuse, for --resume) ``output_dir``; never deletes work unless ``overwrite``."""
    path, non_empty = check_run_dir(output_dir, overwrite, resume)
    if resume:
        return path
    if non_empty:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
