"""The run directory: refuse to clobber, overwrite only when asked, resume only what exists."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

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
        check_deletable(path, lambda name: name in RUN_ENTRIES or name.startswith("checkpoint-"), "training run")
    return path, non_empty


MARKER = ".alignkit-run"  # written into every run directory alignkit creates
# what a training run's directory holds, alignkit's or a transformers Trainer's (TRL, LLaMA-Factory ...)
RUN_ENTRIES = (MARKER, "metrics.jsonl", "final", "trainer_state.json", "all_results.json", "training_args.bin")
RUN_ENTRIES += ("adapter_config.json", "demo_results.json", "sweep.json", "eval_results.json")


def check_deletable(path: Path, is_output: Callable[[str], bool], kind: str) -> None:
    """What ``--overwrite`` may delete: a folder holding an output of ``kind`` (an entry whose name
    ``is_output``), never the working directory, one above it or the home directory (a mistyped path)."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved in (Path.home().resolve(), cwd, *cwd.parents):
        raise RunDirError(
            f"{path} is the working directory, one above it or the home directory; --overwrite would delete "
            f"it. Choose a folder of its own for the {kind} (e.g. under alignkit-runs/)"
        )
    entries = sorted(entry.name for entry in path.iterdir())
    if not any(is_output(name) for name in entries):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunDirError(
            f"{path} holds no {kind} ({shown}), so --overwrite will not delete it; nothing was changed. "
            "Choose another folder, or empty it yourself"
        )


def prepare_run_dir(output_dir: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create (or reuse, for --resume) ``output_dir``; never deletes work unless ``overwrite``."""
    path, non_empty = check_run_dir(output_dir, overwrite, resume)
    if resume:
        return path
    if non_empty:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("A run directory alignkit created: --overwrite may replace it.\n")
    return path
