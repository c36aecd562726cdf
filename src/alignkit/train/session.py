"""The skeleton every training loop shares, supervised (:mod:`alignkit.train.loop`) and RL
(:mod:`alignkit.train.rl_loop`): the accelerator and its backend, AdamW with the warm-up schedule,
``accelerate.prepare``, the metrics logger and progress bar, throughput, the run fingerprint and
exact resume, checkpoints (every ``save_steps``, at the end, and on SIGTERM/SIGINT), the stop on
too many non-finite updates in a row, and the final save. The loops keep only their own step.

A loop uses it in this order::

    session = TrainingSession(config, run_dir)           # accelerator + backend
    total_steps = ...                                    # may depend on session.accelerator.num_processes
    session.prepare(model, total_steps, micro_batch_size, monitor=...)   # optimizer, kernel probe, logger, resume
    with session:                                        # stop signals
        while session.state.global_step < total_steps:
            session.accumulate(forward_and_backward)     # the method's step (redone if a kernel fails)
            session.optimizer_step()
            session.end_of_step()                        # checkpoint / stop
    last_train = session.finish(save_final, last_train)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, NoReturn

import torch
from transformers import get_scheduler

from alignkit.errors import AlignkitError
from alignkit.models.hub import push_final
from alignkit.models.segment_attention import check_kernels_train, failed_kernels, passing_over_kernels
from alignkit.train.backends import Backend, make_accelerator
from alignkit.train.checkpoint import checkpoint_error, latest_good_checkpoint, resume_from_latest, write_checkpoint
from alignkit.train.faults import StopSignals, TrainingInterrupted, run_fingerprint
from alignkit.train.metrics_log import MetricsLogger, Throughput, progress_bar, progress_postfix
from alignkit.train.run_outputs import loop_state_of, trainer_state, write_model_card, write_results


@dataclass
class LoopState:
    """Where a run stands: exactly the ``trainer_state.json`` of a checkpoint (which also holds the
    weights, optimizer, scheduler and RNG states), so a resumed run continues from the same place."""

    global_step: int = 0
    epoch: int = 0  # supervised: epochs finished ...
    batches_done: int = 0  # ... and micro-batches done in the current one
    window: dict = field(default_factory=dict)  # supervised: the partly filled logging window
    nonfinite_skipped: int = 0  # updates skipped for a NaN/inf loss or gradient
    last_good_step: int = 0  # the last step whose update was applied
    kl_coef: float | None = None  # RL: the (adaptive) KL coefficient
    fingerprint: dict = field(default_factory=dict)  # config and data the run was started with

    @classmethod
    def from_checkpoint(cls, saved: dict, fingerprint: dict) -> LoopState:
        """The state a checkpoint holds, with this run's fingerprint (``--force_resume`` may have changed it)."""
        saved = loop_state_of(saved)
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in saved.items() if key in known}
        values.setdefault("last_good_step", saved["global_step"])
        return cls(**{**values, "fingerprint": fingerprint})


def _glibc():
    """glibc when this process runs on it (for ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


GLIBC = _glibc()


def return_freed_memory() -> None:
    """Hand the memory a step freed back to the OS. A step's activations are many blocks of a few MB, below
    glibc's mmap threshold, so freed ones stay in the heap and the process's resident memory only grows;
    trimming once per optimizer step keeps it at what is really in use. The call takes well under a
    millisecond; the cost is the next step's page faults in re-taking that memory, which grows with the
    activations a step frees (see :attr:`TrainingSession.returns_freed_memory`)."""
    if GLIBC is not None:
        GLIBC.malloc_trim(0)


def parameter_groups(model: torch.nn.Module, trainable: list, value_learning_rate: float | None) -> list:
    """AdamW's parameter groups: one, or, with ``value_learning_rate``, the value head's own beside the rest."""
    head = getattr(model, "value_head", None)
    if value_learning_rate is None or head is None:
        return trainable
    own = {id(p) for p in head.parameters()}
    return [
        {"params": [p for p in trainable if id(p) not in own]},
        {"params": [p for p in trainable if id(p) in own], "lr": value_learning_rate},
    ]


def fused_adamw_fits(params: list[torch.nn.Parameter], sharded: bool) -> bool:
    """Whether torch's fused AdamW (one kernel per step instead of a Python loop over parameters: about
    5x faster on CPU, and no per-parameter temporaries) takes ``params``: floating point, all on CPU or
    all on CUDA, and not handed to DeepSpeed or FSDP, which manage their own optimizer state. The update
    is AdamW's either way (``optim: adamw_torch_fused`` in TRL's terms)."""
    devices = {p.device.type for p in params}
    return (
        bool(params)
        and not sharded
        and len(devices) == 1
        and devices <= {"cpu", "cuda"}
        and all(p.dtype in (torch.float32, torch.bfloat16, torch.float16) for p in params)
    )


class TrainingSession:
    """The shared parts of a training run (see the module docstring for the order of calls)."""

    def __init__(self, config, run_dir: Path):
        self.config, self.run_dir = config, run_dir
        self.accelerator = make_accelerator(config.mixed_precision)
        self.backend = Backend(self.accelerator)
        self.in_a_row = 0  # non-finite updates in a row (not checkpointed: a resumed run starts clean)
        self.unsettled: list = []  # (step, gradient norm) not yet read from the device (see settle)
        self.fractional_epoch: float | None = None  # where the loop stands in epochs (trainer_state.json's epoch)
        self.window_state = None  # norms -> the loop's partly filled logging window, when a checkpoint is written

    def prepare(
        self,
        model: torch.nn.Module,
        total_steps: int,
        micro_batch_size: int,
        updates_per_step: int = 1,
        monitor=None,
        desc: str = "training",
    ) -> LoopState:
        """AdamW over the trainable parameters, the warm-up + decay schedule over ``total_steps x
        updates_per_step`` optimizer updates, ``accelerate.prepare``, the logger, and ``--resume``;
        returns the state to start from."""
        config = self.config
        self.total_steps = total_steps
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameter_groups(model, trainable, getattr(config, "value_learning_rate", None)),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            fused=fused_adamw_fits(trainable, self.backend.sharded_state) or None,
        )
        total_updates = total_steps * updates_per_step
        self.scheduler = get_scheduler(
            config.lr_scheduler_type,
            optimizer,
            num_warmup_steps=config.warmup_steps * updates_per_step or math.ceil(config.warmup_ratio * total_updates),
            num_training_steps=total_updates,
            scheduler_specific_kwargs=(
                {"min_lr_rate": config.min_lr_rate} if config.lr_scheduler_type == "cosine_with_min_lr" else None
            ),
        )
        self.backend.configure(micro_batch_size, config.max_grad_norm)
        # a one-call attention kernel that cannot train here is passed over before any wrapper sees the model
        check_kernels_train(model, self.accelerator.device, self.accelerator.autocast)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        self.backend.prepared(self.model, self.unwrapped)
        self.params = [p for p in self.model.parameters() if p.requires_grad]  # FSDP replaces them with sharded ones
        sinks = [] if "none" in config.report_to else sorted({"tensorboard", *config.report_to})  # TensorBoard always
        main = self.accelerator.is_main_process
        fingerprint = run_fingerprint(config)
        self.state = LoopState(fingerprint=fingerprint)
        saved = None
        if config.resume:
            saved = resume_from_latest(
                self.backend,
                self.run_dir,
                fingerprint,
                config.force_resume,
                self.model,
                self.unwrapped,
                self.optimizer,
                self.scheduler,
            )
            self.state = LoopState.from_checkpoint(saved, fingerprint)
        self.logger = MetricsLogger(
            self.run_dir,
            sinks,
            main,
            config=config.model_dump(mode="json"),
            monitor=monitor,
            run_name=config.run_name,
            resumed_at=self.state.global_step if saved is not None else None,
        )
        if saved is not None:
            self.logger.resume_at(self.state.global_step)
        self._bar_settings = (total_steps, config.disable_tqdm or not main, desc)
        return self.state

    def attach_reference(self, reference) -> None:
        """After :meth:`prepare`: the reference's frozen copy on the accelerator's device, every reference
        forward under the policy's autocast, then its precomputing pass (if any), made there."""
        self.reference = reference
        if reference is None:
            return
        reference.to(self.accelerator.device, self.accelerator.autocast)
        if reference.pending is not None:
            pending, reference.pending = reference.pending, None
            pending(self.accelerator)

    def attach_rewards(self, reward_fn) -> None:
        """After :meth:`prepare`: the models that score an RL run's samples on the accelerator's device,
        under the training's autocast."""
        self.reward_fn = reward_fn.to(self.accelerator.device, self.accelerator.autocast)

    def __enter__(self) -> TrainingSession:
        """Start the progress bar, the throughput clock (after any evaluation at step 0) and the signal handlers."""
        total_steps, disable, desc = self._bar_settings
        self.bar = progress_bar(total_steps, self.state.global_step, disable, desc=desc)
        self.throughput = Throughput(self.accelerator.num_processes)
        self._signals = StopSignals()
        self.stop = self._signals.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        """Restore the previous signal handlers."""
        self._signals.__exit__(*exc_info)

    @property
    def defers_host_reads(self) -> bool:
        """Whether :meth:`optimizer_step` can leave its gradient norm on the device (a GPU, torch's fused
        AdamW, no loss scaler or DeepSpeed engine): the skip of a non-finite update then happens on the
        device too, and the norms are read once per logging step (:meth:`settle`), not once per step."""
        return self.accelerator.device.type == "cuda" and self.backend.can_defer(self.optimizer)

    @property
    def returns_freed_memory(self) -> bool:
        """Whether each optimizer step hands the memory it freed back to the OS: on a CPU, under gradient
        checkpointing (the lean setting, the default). A run without it has chosen speed over memory, and
        re-taking its freed activations in page faults cost it 1.4 s of a 10.3 s step (LoRA, answers of 240
        tokens, 2-core CPU; 6.3 GB peak without the trim, 5.3 GB with it) and 3.5 s of 16.7 s in full
        fine-tuning; under checkpointing the same cost is 0.3-0.6 s for 0.4 GB less peak memory."""
        return self.accelerator.device.type == "cpu" and self.config.gradient_checkpointing

    def accumulate(self, work: Callable[[], object]):
        """``work()``: one update's forward and backward (its gradients accumulate). When it raises after a
        one-call segment-attention kernel served its forward (``pass_over_serving``: FlexAttention's
        compiled backward can need more shared memory than a smaller GPU has), that kernel is passed over
        for the rest of the run, the gradients ``work`` left are dropped and it runs again. (:meth:`prepare`'s
        probe, ``check_kernels_train``, meets such a kernel first; this catches one that fails only later.)"""
        return passing_over_kernels(work, self._drop_update)

    def _drop_update(self, exc: BaseException) -> None:
        """Forget an update whose backward raised ``exc``: its gradients, and under DDP the reduction it began
        (else the redone forward stops with DDP's "Expected to have finished reduction in the prior
        iteration"). A sharded run (FSDP, DeepSpeed) cannot redo it: FSDP2 measured silently wrong gradients
        after a redo (a zero gradient norm from the next step on), so it stops here with what to do."""
        if self.backend.sharded_state:
            kept = latest_good_checkpoint(self.run_dir)
            again = f"--resume continues from {kept.name}" if kept else "no checkpoint was written yet: add --overwrite"
            failed = "; ".join(f"{kernel}: {why}" for kernel, why in failed_kernels().items())
            raise AlignkitError(
                f"a segment-attention kernel failed in this update's backward ({failed}), and an update of a "
                f"sharded run ({self.backend.kind}) cannot be redone in place. Run again with "
                f"ALIGNKIT_SEGMENT_KERNEL=loop ({again})"
            ) from exc
        self.optimizer.zero_grad(set_to_none=True)
        reducer = getattr(self.model, "reducer", None)
        if reducer is not None:
            reducer._reset_state()  # torch's own reset for a backward that did not finish

    def optimizer_step(self, defer: bool = False) -> float | None:
        """Clip, step the optimizer and the schedule, zero the gradients. Returns the global gradient norm,
        not finite when any loss or gradient was NaN/inf (the update is then skipped and counted); with
        ``defer`` (where :attr:`defers_host_reads`) returns None and keeps the norm for :meth:`settle`."""
        step = self.state.global_step + 1
        defer = defer and self.defers_host_reads
        grad_norm = self.backend.step(
            self.model, self.optimizer, self.scheduler, self.params, self.config.max_grad_norm, defer
        )
        if self.returns_freed_memory:
            return_freed_memory()
        self.unsettled.append((step, grad_norm))
        if defer:
            return None
        return self.settle()[-1]

    def settle(self) -> list[float]:
        """The gradient norms of the steps since the last call, read from the device at once, with the count
        of skipped (non-finite) updates, those in a row, and the last applied step brought up to date."""
        if not self.unsettled:
            return []
        steps = [step for step, _ in self.unsettled]
        norms = [norm if isinstance(norm, float) else norm.detach().float() for _, norm in self.unsettled]
        if not all(isinstance(norm, float) for norm in norms):
            norms = torch.stack([torch.as_tensor(n, device=self.accelerator.device) for n in norms]).tolist()
        self.unsettled = []
        for step, norm in zip(steps, norms):
            if math.isfinite(norm):
                self.in_a_row = 0
                self.state.last_good_step = step
            else:
                self.state.nonfinite_skipped += 1
                self.in_a_row += 1
        return norms

    @property
    def too_many_nonfinite(self) -> bool:
        """``max_nonfinite_steps`` updates in a row were skipped: the run must stop."""
        return self.in_a_row >= self.config.max_nonfinite_steps

    def reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        """The mean of each metric over the processes (the metrics themselves with one process)."""
        if self.accelerator.num_processes == 1:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], device=self.accelerator.device)
        return dict(zip(keys, self.accelerator.reduce(values, reduction="mean").tolist()))

    def record(self, step: int, metrics: dict[str, float]) -> None:
        """Write ``metrics`` at ``step`` (metrics.jsonl, TensorBoard, wandb; the main process only)."""
        self.logger.record(step, metrics)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record a training log and show its main figures on the progress bar."""
        self.record(step, metrics)
        self.bar.set_postfix(progress_postfix(metrics))

    def save(self) -> Path:
        """Write a checkpoint of the current state atomically; a failed write names the checkpoint kept."""
        step = self.state.global_step
        late = self.settle()  # norms still on the device (a GPU run stopped between logs) go into the window
        if self.window_state is not None:
            self.state.window = self.window_state(late)
        state = asdict(self.state)
        if self.accelerator.is_main_process:  # the one that writes it, and metrics.jsonl (log_history)
            state = trainer_state(
                state, self.config, self.total_steps, self.run_dir, self.fractional_epoch or state["epoch"]
            )
        try:
            return write_checkpoint(
                self.backend,
                self.run_dir,
                step,
                self.model,
                self.unwrapped,
                self.optimizer,
                self.scheduler,
                state,
                self.config.save_total_limit,
            )
        except OSError as exc:
            self.logger.close()
            raise checkpoint_error(exc, step, self.run_dir) from None

    def stop_nonfinite(self, message: Callable[[str], str]) -> NoReturn:
        """Save, then stop with ``message(checkpoint name)``: too many non-finite updates in a row."""
        path = self.save()
        self.logger.close()
        raise AlignkitError(message(path.name))

    def end_of_step(self) -> None:
        """Checkpoint every ``save_steps``, at the last step and when a stop signal came; then stop on the signal."""
        step = self.state.global_step
        if step % self.config.save_steps == 0 or step == self.total_steps or self.stop.received:
            path = self.save()
        if self.stop.received:
            self.bar.close()
            self.logger.close()
            raise TrainingInterrupted.at(self.stop.received, step, path)

    def finish(
        self, save_final: Callable[[Path], None] | None, last_train: dict[str, float], last_eval: dict | None = None
    ) -> dict[str, float]:
        """Record the run's throughput summary, close the logs, and save the final model (all processes
        gather sharded weights, the main one writes, with a model card), then ``all_results.json`` and
        ``environment.json``; returns ``last_train`` with the summary added."""
        if self.throughput.totals[0]:
            summary = self.reduce(self.throughput.summary())
            self.record(self.state.global_step, summary)
            last_train = {**last_train, **summary}
        self.bar.close()
        self.logger.close()
        self.accelerator.wait_for_everyone()
        if save_final is not None:
            with self.backend.full_weights(self.unwrapped):
                if self.accelerator.is_main_process:
                    save_final(self.run_dir / "final")
                    method = type(self.config).__name__.removesuffix("Config").lower()
                    write_model_card(self.run_dir / "final", self.config, method, last_train, last_eval or {})
            if self.config.push_to_hub and self.accelerator.is_main_process:
                url = push_final(self.config, self.run_dir / "final")
                print(f"alignkit: pushed {self.run_dir / 'final'} to {url}", file=sys.stderr)
        if self.accelerator.is_main_process:
            write_results(self.run_dir, last_train, last_eval or {})
        return last_train
