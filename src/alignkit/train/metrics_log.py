"""Metrics sinks: metrics.jsonl always, TensorBoard and wandb when asked; a live progress bar."""

from __future__ import annotations

import json
import math
import secrets
import sys
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from alignkit.errors import require
from alignkit.log_files import read_jsonl, truncate_after

WANDB_ID_FILE = "wandb_run_id"  # the run's wandb id, so --resume continues that run


class MetricsLogger:
    """One JSON object per log line: ``{"step": N, "loss": ..., "eval/loss": ...}``."""

    def __init__(
        self,
        run_dir: Path,
        report_to: list[str],
        enabled: bool = True,
        config: dict | None = None,
        monitor=None,
        run_name: str | None = None,
        resumed_at: int | None = None,
    ):
        """``monitor``: anything with ``observe(step, metrics) -> [Symptom]`` (live symptom rules).
        ``run_name`` names the run in every tracker (default: the run directory's name). ``resumed_at``: the
        step a ``--resume`` continues from: TensorBoard drops what was logged after it (``purge_step``) and
        wandb continues the same run (its id is kept in the run directory)."""
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.monitor = monitor
        self.tensorboard = None
        self.wandb = None
        if not enabled:
            return
        run_name = run_name or run_dir.resolve().name
        if "tensorboard" in report_to:
            purge = resumed_at + 1 if resumed_at is not None else None
            self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge)
            self.tensorboard.add_text("run_name", run_name, 0)
        if "wandb" in report_to:
            self.wandb = require("wandb", "wandb", "report_to: wandb")
            id_file = run_dir / WANDB_ID_FILE
            run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)  # wandb's id form
            id_file.write_text(run_id)
            self.wandb.init(dir=str(run_dir), config=config or {}, resume="allow", id=run_id, name=run_name)

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
        if self.enabled:
            truncate_after(self.path, step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Write one record (metrics.jsonl, TensorBoard, wandb) at ``step``."""
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
        """Close TensorBoard and wandb."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(run_dir: str | Path, timings: bool = True) -> list[dict]:
    """The records of a run's metrics.jsonl; ``timings=False`` drops the wall-clock figures
    (:data:`TIMING_KEYS`), which differ between two otherwise identical runs."""
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    return records if timings else [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


TIMING_KEYS = frozenset(
    {
        "step_time",
        "samples_per_second",
        "tokens_per_second",
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_tokens_per_second",
    }
)


class Throughput:
    """Wall-clock throughput, as Trainer-based tools report it.

    Per logging window (``window()``): ``step_time`` (seconds per optimizer step, training work only:
    evaluation and checkpoints excluded), ``samples_per_second`` and ``tokens_per_second``. For the run
    (``summary()``): ``train_runtime`` (all wall time of this process since it started or resumed,
    evaluation and checkpoints included), ``train_samples_per_second``, ``train_steps_per_second`` and
    ``train_tokens_per_second``. Tokens are the real tokens of the scored sequences (prompt plus
    response, once per sequence), never padding, so the count does not depend on the batch layout.
    Rates are this process's, times ``scale`` (the number of processes), so a mean over processes is
    the total.
    """

    def __init__(self, scale: int = 1):
        self.scale = scale
        self.started = time.perf_counter()
        self.totals = [0, 0, 0]  # steps, samples, tokens
        self.window_totals, self.window_seconds = [0, 0, 0], 0.0
        self._step_started = None

    def begin_step(self) -> None:
        """Start timing an optimizer step."""
        self._step_started = time.perf_counter()

    def end_step(self, samples: int, tokens: int) -> None:
        """End the step's timing, counting its samples and (real, unpadded) tokens."""
        self.window_seconds += time.perf_counter() - self._step_started
        for totals in (self.totals, self.window_totals):
            totals[0] += 1
            totals[1] += samples
            totals[2] += tokens

    def window(self) -> dict[str, float]:
        """Step time and samples/tokens per second since the last log (then restart the window)."""
        steps, samples, tokens = self.window_totals
        seconds = max(self.window_seconds, 1e-9)
        figures = {
            "step_time": seconds / max(steps, 1),
            "samples_per_second": self.scale * samples / seconds,
            "tokens_per_second": self.scale * tokens / seconds,
        }
        self.window_totals, self.window_seconds = [0, 0, 0], 0.0
        return figures

    def summary(self) -> dict[str, float]:
        """The whole run's runtime and throughput (TRL's ``train_*`` names)."""
        steps, samples, tokens = self.totals
        runtime = time.perf_counter() - self.started
        return {
            "train_runtime": runtime,
            "train_samples_per_second": self.scale * samples / runtime,
            "train_steps_per_second": steps / runtime,
            "train_tokens_per_second": self.scale * tokens / runtime,
        }


def progress_bar(total: int, initial: int, disable: bool, desc: str = "training"):
    """The run's progress bar (tqdm), starting at ``initial`` when resumed."""
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, dynamic_ncols=True)


PROGRESS_KEYS = {
    "loss": "loss",
    "rewards/margins": "margin",
    "rewards/accuracies": "acc",
    "reward/score": "reward",
    "objective/kl": "kl",
    "step_time": "s/step",
    "tokens_per_second": "tok/s",
}


def progress_postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's figures: loss and margins (or reward and KL), step time and tokens per second."""
    return {short: f"{metrics[key]:.4g}" for key, short in PROGRESS_KEYS.items() if key in metrics}
