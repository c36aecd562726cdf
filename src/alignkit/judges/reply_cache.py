"""An append-only on-disk cache of endpoint replies, so an interrupted job resumes without re-asking.

Each reply is one JSON line ``{"key": ..., "value": ...}``, flushed and fsync'd as soon as it arrives:
a ``kill -9`` loses at most the request in flight. A line cut short by a crash is skipped on load.
Keys are hashes of the request (model, messages, sampling settings): never the endpoint's address
or its API key.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def request_key(payload: dict) -> str:
    """A stable key for a request: sha256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ReplyCache:
    """Endpoint replies by request key, kept in memory and appended to a JSONL file (a rerun resumes)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.skipped_lines = 0
        if self.path and self.path.is_file():
            self._load()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    self._values[entry["key"]] = entry["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped_lines += 1  # a line cut short by a crash: that request is simply asked again

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str) -> Any | None:
        """The cached value of ``key``, or None."""
        with self._lock:
            return self._values.get(key)

    def put(self, key: str, value: Any) -> None:
        """Cache ``value`` under ``key`` (and append it to the file)."""
        with self._lock:
            self._values[key] = value
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n"
            with self.path.open("a", encoding="utf-8") as handle:
                if handle.tell() > 0 and not self._ends_with_newline():
                    handle.write("\n")  # close off a line a crash left unfinished
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
