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
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from transformers import set_seed

from alignkit.configs import TrainConfig
from alignkit.data.collate import collate_to, to_device
from alignkit.diagnose.symptoms import SymptomMonitor
from alignkit.engine.logprobs import in_eval_mode
from alignkit.engine.reference import Reference
from alignkit.train.session import TrainingSession

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
    reference: Reference | None = None  # placed and precomputed once the model is on its device
    on_step: Callable[[int], None] | None = None  # called after every optimizer step (e.g. benchmarks' timers)
    # derive logged metrics from averaged ones (e.g. a class mean from a per-batch sum and count)
    finalize_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None


@dataclass
class TrainingResult:
    """What a training run returns: its directory, the trained module, its last step and last metrics."""

    run_dir: Path
    model: torch.nn.Module  # the trained module (unwrapped); ``.lm`` for a LogProbModel
    global_step: int
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]


def host_floats(values: dict) -> dict[str, float]:
    """``values`` (numbers and one-element tensors) as numbers, every tensor read in one transfer: on a GPU
    each read waits for the queued work, so a step reads its numbers together, once."""
    tensors = [key for key, value in values.items() if torch.is_tensor(value)]
    out = dict(values)
    if tensors:
        device = values[tensors[0]].device
        read = torch.stack([values[k].detach().float().to(device).reshape(()) for k in tensors]).tolist()
        out.update(zip(tensors, read))
    return out


class _Window:
    """Running means over the micro-batches (and optimizer steps) since the last log; kept in checkpoints."""

    def __init__(self, sums: dict | None = None, count: int = 0, grad_norm_sum: float = 0.0, steps: int = 0):
        self.sums = defaultdict(float, sums or {})  # device tensors while filling: read once, by means()/state()
        self.count, self.grad_norm_sum, self.steps = count, grad_norm_sum, steps

    def add(self, metrics: dict) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums[key] + (value.detach().float() if torch.is_tensor(value) else value)
        self.count += 1

    def add_step(self, grad_norm: float) -> None:
        self.grad_norm_sum += grad_norm
        self.steps += 1

    def floats(self) -> dict[str, float]:
        """The sums as numbers: every device tensor read in one transfer."""
        return host_floats(self.sums)

    def means(self) -> dict[str, float]:
        means = {key: total / max(self.count, 1) for key, total in self.floats().items()}
        means["grad_norm"] = self.grad_norm_sum / max(self.steps, 1)
        return means

    def state(self) -> dict:
        return {"sums": self.floats(), "count": self.count, "grad_norm_sum": self.grad_norm_sum, "steps": self.steps}


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
        chunk = order[start : start + per_global]
        if num_processes > 1 and len(chunk) < per_global:
            chunk = chunk + (order * per_global)[: per_global - len(chunk)]
        mine = chunk[rank * batch_size : (rank + 1) * batch_size]
        if mine:
            batches.append(mine)
    return batches


def run_training(config: TrainConfig, task: TrainingTask, run_dir: Path) -> TrainingResult:
    """Train ``task.model`` on ``task.train_items`` (see the module docstring); returns the unwrapped model,
    the last step, and the last train and eval metrics. The shared parts are a :class:`TrainingSession`."""
    session = TrainingSession(config, run_dir)
    set_seed(config.seed)
    accelerator = session.accelerator
    ga = config.gradient_accumulation_steps
    batch_size, world, rank = config.per_device_train_batch_size, accelerator.num_processes, accelerator.process_index
    per_epoch = len(micro_batches(list(range(len(task.train_items))), batch_size, world, rank))
    steps_per_epoch = min(math.ceil(per_epoch / ga), config.max_steps_per_epoch or math.inf)
    total_steps = (
        config.max_steps if config.max_steps > 0 else max(1, math.ceil(config.num_train_epochs * steps_per_epoch))
    )
    monitor = SymptomMonitor(total_steps, config.symptom_thresholds) if config.symptom_warnings else None
    state = session.prepare(task.model, total_steps, batch_size, monitor=monitor)
    session.attach_reference(task.reference)
    model, backend = session.model, session.backend
    window = _Window(**state.window)
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    if config.eval_on_start and task.eval_items and state.global_step == 0:
        session.record(0, evaluate(accelerator, model, task, config.per_device_eval_batch_size))
    model.train()

    def window_state(late_norms: list[float]) -> dict:
        """The logging window a checkpoint keeps, with the norms its own settle read (a stop signal between logs)."""
        for norm in late_norms:
            if math.isfinite(norm):
                window.add_step(norm)
        return window.state()

    session.window_state = window_state

    def forward_backward(group: list[list[int]]) -> tuple[int, int, list[dict]]:
        """Forward and backward of one optimizer step's micro-batches: (samples, tokens, their metrics)."""
        samples = tokens = 0
        group_metrics = []
        for i, indices in enumerate(group):
            batch = task.collate([task.train_items[j] for j in indices])
            samples, tokens = samples + len(indices), tokens + int(batch["sequence_lengths"].sum())
            batch = to_device(batch, accelerator.device)
            with backend.micro_step(model, last=i == len(group) - 1):
                loss, metrics = task.compute_loss(model, batch, True)
                backend.backward(model, loss / len(group))
            group_metrics.append(metrics)
        return samples, tokens, group_metrics

    with session:
        while state.global_step < total_steps:
            batches = micro_batches(
                epoch_order(len(task.train_items), config.seed, state.epoch), batch_size, world, rank
            )[: steps_per_epoch * ga]  # an epoch capped by max_steps_per_epoch ends early
            epoch_done = False
            while not epoch_done and state.global_step < total_steps:
                # one optimizer step: gradients accumulated over up to `ga` micro-batches
                group = batches[state.batches_done : state.batches_done + ga]
                session.throughput.begin_step()
                samples, tokens, group_metrics = session.accumulate(partial(forward_backward, group))
                for metrics in group_metrics:
                    window.add(metrics)  # on the device: nothing is read back until the window is logged
                # not finite: a NaN/inf somewhere, nothing was applied; on a GPU the norm is read at the next log
                grad_norm = session.optimizer_step(defer=True)
                state.global_step += 1
                step = state.global_step
                settle = step % config.logging_steps == 0 or step == total_steps or step % config.save_steps == 0
                norms = [grad_norm] if grad_norm is not None else session.settle() if settle else []
                session.throughput.end_step(samples, tokens)  # after a settle: the device's queue is drained
                for norm in norms:
                    if math.isfinite(norm):
                        window.add_step(norm)
                state.batches_done += len(group)
                fractional_epoch = state.epoch + state.batches_done / len(batches)
                session.fractional_epoch = fractional_epoch
                if state.batches_done >= len(batches):
                    state.epoch, state.batches_done, epoch_done = state.epoch + 1, 0, True
                session.bar.update(1)
                if task.on_step is not None:
                    task.on_step(state.global_step)
                if step % config.logging_steps == 0 or step == total_steps or session.too_many_nonfinite:
                    last_train = _finalize(task, session.reduce({**window.means(), **session.throughput.window()}))
                    last_train.update(
                        learning_rate=session.scheduler.get_last_lr()[0],
                        epoch=round(fractional_epoch, 4),
                        nonfinite_steps_skipped=state.nonfinite_skipped,
                    )
                    session.log(step, last_train)
                    window = _Window()
                if session.too_many_nonfinite:
                    session.stop_nonfinite(
                        lambda checkpoint: f"{session.in_a_row} steps in a row had a NaN/inf loss or gradient (steps "
                        f"{step - session.in_a_row + 1}-{step}); stopped. {checkpoint} holds the weights of step "
                        f"{state.last_good_step}, the last good update. Lower the learning rate or check the data, "
                        "then --resume (with --force_resume if you changed the config)"
                    )
                if task.eval_items and ((config.eval_steps and step % config.eval_steps == 0) or step == total_steps):
                    last_eval = evaluate(accelerator, model, task, config.per_device_eval_batch_size)
                    session.record(step, last_eval)
                session.end_of_step()
    last_train = session.finish(task.save_final, last_train, last_eval)
    return TrainingResult(run_dir, session.unwrapped, state.global_step, last_train, last_eval)


@torch.no_grad()
def evaluate(accelerator: Accelerator, model: torch.nn.Module, task: TrainingTask, batch_size: int) -> dict[str, float]:
    """Example-weighted means of the task's metrics over the eval items, ``eval/``-prefixed.

    Every process runs the same number of batches (sharded weights gather in every forward, and the
    sums are reduced as one tensor): a process whose share has run out runs a batch that counts for nothing.
    The device is read twice in all (the sums, then their reduction), however many batches and metrics."""
    sums = _Window()  # weighted sums on the device, read once at the end
    count = 0
    n, rank, world = len(task.eval_items), accelerator.process_index, accelerator.num_processes
    with in_eval_mode(model):
        for i in range(max(1, math.ceil(n / (batch_size * world)))):
            start = (i * world + rank) * batch_size
            indices = list(range(start, min(start + batch_size, n))) or [0]
            weight = len(indices) if start < n else 0
            batch = collate_to(task.collate, [task.eval_items[j] for j in indices], accelerator.device)
            loss, metrics = task.compute_loss(model, batch, False)
            sums.add({key: value * weight for key, value in {"loss": loss, **metrics}.items()})
            count += weight
    read = sums.floats()
    keys = sorted(read)
    totals = torch.tensor([read[k] for k in keys] + [float(count)], device=accelerator.device)
    if world > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    *metric_totals, examples = totals.tolist()  # one read (not one per metric)
    means = _finalize(task, {k: v / examples for k, v in zip(keys, metric_totals)})
    return {f"eval/{k}": v for k, v in means.items()}


def _finalize(task: TrainingTask, metrics: dict[str, float]) -> dict[str, float]:
    return task.finalize_metrics(metrics) if task.finalize_metrics is not None else metrics
