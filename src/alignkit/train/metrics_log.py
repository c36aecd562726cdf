"""Metrics sinks: metrics.jsonl always, TensorBoard and wandb when asked; a live progress bar."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tqdm.auto import tqdm


class MetricsLogger:
    """One JSON object per log line: ``{"step": N, "loss": ..., "eval/loss": ...}``."""

    def __init__(self, run_dir: Path, report_to: list[str], enabled: bool = True, config: dict | None = None, monitor=None):
        """``monitor``: anything with ``observe(step, metrics) -> [Symptom]`` (live symptom rules)."""
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.monitor = monitor
        self.tensorboard = None
        self.wandb = None
        if not enabled:
            return
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "wandb" in report_to:
            from alignkit.errors import require

            self.wandb = require("wandb", "wandb", "report_to: wandb")
            self.wandb.init(dir=str(run_dir), config=config or {}, resume="allow")

    def record(self, step: int, metrics: dict) -> None:
        """Log ``metrics``, then any symptom they trigger (written as its own line and printed once)."""
        self.log(step, metrics)
        for symptom in self.monitor.observe(step, metrics) if self.monitor is not None else []:
            self.log(step, symptom.record())
            if self.enabled:
                tqdm.write(f"alignkit: warning: {symptom}", file=sys.stderr)

    def resume_at(self, step: int) -> None:
        """On resume: drop what was logged after the checkpoint, and replay the rest into the monitor
        so a symptom already reported is not reported again."""
        self.truncate_after(step)
        if self.monitor is not None and self.path.exists():
            for record in read_metrics(self.path.parent):
                self.monitor.observe(record["step"], record)

    def truncate_after(self, step: int) -> None:
        """On resume: drop records logged after the checkpoint so the file matches an uninterrupted run."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if _step_of(line) is not None and _step_of(line) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _step_of(line: str) -> int | None:
    """The step of a metrics line; None for a blank or torn one (a process killed mid-write)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def progress_bar(total: int, initial: int, disable: bool, desc: str = "training"):
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, dynamic_ncols=True)


PROGRESS_KEYS = {"loss": "loss", "rewards/margins": "margin", "rewards/accuracies": "acc"}


def progress_postfix(metrics: dict[str, float]) -> dict[str, str]:
    return {short: f"{metrics[key]:.4g}" for key, short in PROGRESS_KEYS.items() if key in metrics}
