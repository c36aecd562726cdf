"""Reading the JSONL logs a run appends to (``metrics.jsonl``, ``samples.jsonl``), which a process killed
mid-write can leave with a torn last line."""

from __future__ import annotations

import json
from pathlib import Path

from alignkit.errors import AlignkitError


def read_jsonl(path: Path) -> list[dict]:
    """The records of a log alignkit appends to. A torn last line is left out; any other unreadable line is an
    error naming its file and line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            if number < len(lines):
                raise AlignkitError(f"{path}:{number}: not a JSON record ({exc})") from None
    return records


def truncate_after(path: Path, step: int) -> None:
    """On resume: keep only the records logged at or before ``step`` (a torn line goes too), so the log
    matches an uninterrupted run's. A log never written (a run stopped before its first record) stays absent."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if (logged := step_of(line)) is not None and logged <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def step_of(line: str) -> int | None:
    """The step of a log line; None for a blank or torn one."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None
