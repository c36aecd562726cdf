"""The one training loop, shared by every method.

A method supplies a :class:`TrainingTask`: the trainable module, pre-tokenized items, a collate
function and ``compute_loss(model, batch, training) -> (loss, metrics)``. The loop does the rest:
seeded data order, gradient accumulation, warm-up + schedule, clipping, logging to
``metrics.jsonl``/TensorBoard/progress bar, evaluation every ``eval_steps``, atomic checkpoints
every ``save_steps`` and exact resume (weights, optimizer, scheduler, RNG, data position, the
partially filled logging window).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from transformers import get_scheduler, set_seed

from alignkit.config import TrainConfig
from alignkit.diagnose.symptoms import SymptomMonitor
from alignkit.errors import AlignkitError
from alignkit.train.backends import Backend, make_accelerator
from alignkit.train.checkpoint import (
    checkpoint_error,
    resume_from_latest,
    write_checkpoint,
)
from alignkit.train.faults import StopSignals, TrainingInterrupted, run_fingerprint
from alignkit.train.metrics_log import (
    MetricsLogger,
    Throughput,
    progress_bar,
    progress_postfix,
)

LossFn = Callable[[torch.nn.Module, dict, bool], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


@dataclass
class TrainingTask:
    """What a method gives the loop."""

    model: torch.nn.Module
    train_items: list[Any]
    collate: Callable[[list[Any]], dict]
    compute_loss: LossFn
    eval_items: list[Any] | None = None
    save_final: Callable[[Path], None] | None = None
    on_step: Callable[[int], None] | None = None  # called after every optimizer step (e.g. benchmarks' timers)
    # derive logged metrics from averaged ones (e.g. a class mean from a per-batch sum and count)
    finalize_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None


@dataclass
class TrainingResult:
    run_dir: Path
    model: torch.nn.Module  # the trained module (unwrapped); ``.lm`` for a LogProbModel
    global_step: int
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]


class _Window:
    """Running means over the micro-batches (and optimizer steps) since the last log; kept in checkpoints."""

    def __init__(self, sums: dict | None = None, count: int = 0, grad_norm_sum: float = 0.0, steps: int = 0):
        self.sums = defaultdict(float, sums or {})
        self.count, self.grad_norm_sum, self.steps = count, grad_norm_sum, steps

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.sums[key] += value
        self.count += 1

    def add_step(self, grad_norm: float) -> None:
        self.grad_norm_sum += grad_norm
        self.steps += 1

    def means(self) -> dict[str, float]:
        means = {key: total / max(self.count, 1) for key, total in self.sums.items()}
        means["grad_norm"] = self.grad_norm_sum / max(self.steps, 1)
        return means

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count, "grad_norm_sum": self.grad_norm_sum, "steps": self.steps}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch ``epoch``: a pure function of (n, seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def micro_batches(order: list[int], batch_size: int, num_processes: int, rank: int) -> list[list[int]]:
    """This process's micro-batches: each global batch of ``batch_size * num_processes`` is split by rank.

    The last global batch wraps around to stay full on every process (as accelerate does).
    """
    per_global = batch_size * num_processes
    batches = []
    for start in range(0, len(order), per_global):
        chunk = order[start:start + per_global]
        if num_processes > 1 and len(chunk) < per_global:
            chunk = chunk + (order * per_global)[: per_global - len(chunk)]
        mine = chunk[rank * batch_size:(rank + 1) * batch_size]
        if mine:
            batches.append(mine)
    return batches


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def run_training(config: TrainConfig, task: TrainingTask, run_dir: Path) -> TrainingResult:
    accelerator = make_accelerator(config.mixed_precision)
    backend = Backend(accelerator)
    set_seed(config.seed)
    ga = config.gradient_accumulation_steps
    per_epoch = len(micro_batches(list(range(len(task.train_items))), config.per_device_train_batch_size, accelerator.num_processes, accelerator.process_index))
    steps_per_epoch = math.ceil(per_epoch / ga)
    total_steps = config.max_steps if config.max_steps > 0 else max(1, math.ceil(config.num_train_epochs * steps_per_epoch))

    model = task.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=config.warmup_steps or math.ceil(config.warmup_ratio * total_steps), num_training_steps=total_steps)
    backend.configure(config.per_device_train_batch_size, config.max_grad_norm)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    backend.prepared(model, unwrapped)
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP replaces parameters with sharded ones

    sinks = [] if "none" in config.report_to else sorted({"tensorboard", *config.report_to})  # TensorBoard always, unless report_to: none
    monitor = SymptomMonitor(total_steps, config.symptom_thresholds) if config.symptom_warnings else None
    logger = MetricsLogger(run_dir, sinks, enabled=accelerator.is_main_process, config=config.model_dump(mode="json"), monitor=monitor)
    record = logger.record
    state = {"global_step": 0, "epoch": 0, "batches_done": 0, "window": _Window().state(), "nonfinite_skipped": 0}
    fingerprint = run_fingerprint(config)
    if config.resume:
        state = {**state, **resume_from_latest(backend, run_dir, fingerprint, config.force_resume, model, unwrapped, optimizer, scheduler)}
        logger.resume_at(state["global_step"])
    window = _Window(**state["window"])

    def save(step: int) -> Path:
        trainer_state = {"global_step": step, "epoch": epoch, "batches_done": batches_done, "window": window.state(),
                         "nonfinite_skipped": skipped, "last_good_step": last_good, "fingerprint": fingerprint}
        try:
            return write_checkpoint(backend, run_dir, step, model, unwrapped, optimizer, scheduler, trainer_state, config.save_total_limit)
        except OSError as exc:
            logger.close()
            raise checkpoint_error(exc, step, run_dir) from None

    global_step, epoch, batches_done = state["global_step"], state["epoch"], state["batches_done"]
    skipped, in_a_row, last_good = state["nonfinite_skipped"], 0, state.get("last_good_step", global_step)
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    if config.eval_on_start and task.eval_items and global_step == 0:
        record(0, evaluate(accelerator, model, task, config.per_device_eval_batch_size))
    bar = progress_bar(total_steps, global_step, config.disable_tqdm or not accelerator.is_main_process)
    throughput = Throughput(accelerator.num_processes)
    model.train()
    with StopSignals() as stop:
        while global_step < total_steps:
            batches = micro_batches(epoch_order(len(task.train_items), config.seed, epoch), config.per_device_train_batch_size, accelerator.num_processes, accelerator.process_index)
            epoch_done = False
            while not epoch_done and global_step < total_steps:
                group = batches[batches_done:batches_done + ga]
                throughput.begin_step()
                samples = tokens = 0
                for i, indices in enumerate(group):
                    batch = _to_device(task.collate([task.train_items[j] for j in indices]), accelerator.device)
                    samples, tokens = samples + len(indices), tokens + int(batch["sequence_lengths"].sum())
                    with backend.micro_step(model, last=i == len(group) - 1):
                        loss, metrics = task.compute_loss(model, batch, True)
                        backend.backward(model, loss / len(group))
                    window.add({k: float(v) for k, v in metrics.items()})
                grad_norm = backend.step(model, optimizer, scheduler, params, config.max_grad_norm)
                throughput.end_step(samples, tokens)
                if math.isfinite(grad_norm):  # a NaN/inf loss or gradient anywhere makes the (global) norm non-finite; nothing was applied
                    window.add_step(grad_norm)
                    in_a_row, last_good = 0, global_step + 1
                else:
                    skipped, in_a_row = skipped + 1, in_a_row + 1
                global_step += 1
                batches_done += len(group)
                fractional_epoch = epoch + batches_done / len(batches)
                if batches_done >= len(batches):
                    epoch, batches_done, epoch_done = epoch + 1, 0, True
                bar.update(1)
                if task.on_step is not None:
                    task.on_step(global_step)
                if global_step % config.logging_steps == 0 or global_step == total_steps or in_a_row >= config.max_nonfinite_steps:
                    last_train = _finalize(task, _reduce(accelerator, {**window.means(), **throughput.window()}))
                    last_train.update(learning_rate=scheduler.get_last_lr()[0], epoch=round(fractional_epoch, 4), nonfinite_steps_skipped=skipped)
                    record(global_step, last_train)
                    bar.set_postfix(progress_postfix(last_train))
                    window = _Window()
                if in_a_row >= config.max_nonfinite_steps:
                    path = save(global_step)
                    logger.close()
                    raise AlignkitError(f"{in_a_row} steps in a row had a NaN/inf loss or gradient (steps {global_step - in_a_row + 1}-{global_step}); "
                                        f"stopped. {path.name} holds the weights of step {last_good}, the last good update. Lower the learning rate "
                                        "or check the data, then --resume (with --force_resume if you changed the config)")
                if task.eval_items and ((config.eval_steps and global_step % config.eval_steps == 0) or global_step == total_steps):
                    last_eval = evaluate(accelerator, model, task, config.per_device_eval_batch_size)
                    record(global_step, last_eval)
                if global_step % config.save_steps == 0 or global_step == total_steps or stop.received:
                    path = save(global_step)
                if stop.received:
                    bar.close()
                    logger.close()
                    raise TrainingInterrupted.at(stop.received, global_step, path)
    if throughput.totals[0]:
        summary = _reduce(accelerator, throughput.summary())
        record(global_step, summary)
        last_train = {**last_train, **summary}
    bar.close()
    logger.close()
    accelerator.wait_for_everyone()
    if task.save_final is not None:
        with backend.full_weights(unwrapped):  # all processes gather (ZeRO-3, FSDP); the main one writes
            if accelerator.is_main_process:
                task.save_final(run_dir / "final")
    return TrainingResult(run_dir, unwrapped, global_step, last_train, last_eval)


def _reduce(accelerator: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = accelerator.reduce(torch.tensor([metrics[k] for k in keys], device=accelerator.device), reduction="mean")
    return dict(zip(keys, values.tolist()))


@torch.no_grad()
def evaluate(accelerator: Accelerator, model: torch.nn.Module, task: TrainingTask, batch_size: int) -> dict[str, float]:
    """Example-weighted means of the task's metrics over the eval items, ``eval/``-prefixed.

    Every process runs the same number of batches (sharded weights gather in every forward, and the
    sums are reduced key by key): a process whose share has run out runs a batch that counts for nothing."""
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    n, rank, world = len(task.eval_items), accelerator.process_index, accelerator.num_processes
    for i in range(max(1, math.ceil(n / (batch_size * world)))):
        start = (i * world + rank) * batch_size
        indices = list(range(start, min(start + batch_size, n))) or [0]
        weight = len(indices) if start < n else 0
        batch = _to_device(task.collate([task.eval_items[j] for j in indices]), accelerator.device)
        loss, metrics = task.compute_loss(model, batch, False)
        for key, value in {"loss": loss, **metrics}.items():
            sums[key] += float(value) * weight
        count += weight
    model.train()
    keys = sorted(sums)
    totals = torch.tensor([sums[k] for k in keys] + [float(count)], device=accelerator.device)
    if world > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    means = _finalize(task, {k: v / totals[-1].item() for k, v in zip(keys, totals[:-1].tolist())})
    return {f"eval/{k}": v for k, v in means.items()}


def _finalize(task: TrainingTask, metrics: dict[str, float]) -> dict[str, float]:
    return task.finalize_metrics(metrics) if task.finalize_metrics is not None else metrics
