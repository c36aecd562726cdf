"""Surviving faults: a stop requested by SIGINT/SIGTERM, non-finite steps, a changed config or data
on resume, and a failed checkpoint write. The loop asks these; none of them trains anything."""

from __future__ import annotations

import hashlib
import signal
import threading
from pathlib import Path

from alignkit.data.records import data_sources
from alignkit.errors import AlignkitError, RunDirError
from alignkit.hashing import update_with_file

# Fields that may change between a run and its resume without changing what is computed.
RESUME_EXEMPT = {
    "resume",
    "overwrite",
    "force_resume",
    "disable_tqdm",
    "report_to",
    "save_total_limit",
    "save_steps",
    "preflight",
    "symptom_warnings",
    "symptom_thresholds",
    "output_dir",
}


class TrainingInterrupted(AlignkitError):
    """SIGINT/SIGTERM: a checkpoint was saved; exit status 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum

    @classmethod
    def at(cls, signum: int, step: int, checkpoint: Path) -> "TrainingInterrupted":
        """The error for a run stopped by ``signum`` at ``step``, naming its checkpoint."""
        return cls(
            f"stopped by {signal.Signals(signum).name} at step {step}; saved "
            f"{checkpoint}. Continue with the same command plus --resume",
            signum,
        )


class StopSignals:
    """Within the context, the first SIGINT or SIGTERM only sets ``received`` (the loop finishes the
    step, checkpoints and stops); a second one interrupts at once. Only the main thread can install
    handlers; elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def data_digest(*sources: str | None) -> str:
    """sha256 over the bytes of the data files (folders: every file in them; hub ids: the name)."""
    digest = hashlib.sha256()
    for source in (one for named in sources if named for one in data_sources(named)):
        path = Path(source)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
        digest.update(source.encode() if not files else b"")
        for file in files:
            digest.update(file.name.encode())
            update_with_file(digest, file)
    return digest.hexdigest()


def run_fingerprint(config) -> dict:
    """What must match for a resume to continue the same computation."""
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in RESUME_EXEMPT}
    return {"config": settings, "data": data_digest(config.train_data, config.eval_data)}


def check_resume(saved: dict | None, current: dict, checkpoint: Path, force: bool) -> None:
    """Refuse to resume a checkpoint written under another config or other data, unless forced."""
    if saved is None or force:
        return
    changed = [
        f"{k}: {saved['config'].get(k)!r} -> {v!r}".replace("'", "")
        for k, v in current["config"].items()
        if saved["config"].get(k) != v
    ]
    problems = []
    if changed:
        problems.append("config changed (" + "; ".join(changed) + ")")
    if saved["data"] != current["data"]:
        problems.append("training data changed (the files' contents differ)")
    if problems:
        raise RunDirError(
            f"--resume: {checkpoint} was written with a different setup: {', '.join(problems)}. "
            "Resuming would not continue the same run; restore the original "
            "settings, or pass --force_resume to continue anyway"
        )
