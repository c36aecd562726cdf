"""Write a file or folder so that readers see the old version or the complete new one, never a part."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path):
    """Yield a sibling temp path to write; on success it replaces ``target`` (file or folder), on failure it is
    removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        fsync_tree(tmp)  # the data is on disk before the name points at it
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_tree(target.parent, files=False)
    finally:
        _remove(tmp)


def fsync_tree(path: Path, files: bool = True) -> None:
    """fsync a file, or a folder's files (when ``files``) and the folder itself."""
    if path.is_file():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        return
    if files:
        for child in path.rglob("*"):
            if child.is_file():
                with child.open("rb") as handle:
                    os.fsync(handle.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
