"""sha256 of files, read in blocks (weights and data can be many GB): the one place alignkit hashes a file."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 22  # 4 MB per read


def update_with_file(digest, path: Path):
    """``digest`` updated with the bytes of ``path``; returns it."""
    with Path(path).open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of the bytes of ``path``."""
    return update_with_file(hashlib.sha256(), path).hexdigest()
