"""What differs between accelerate's backends, in one place: how the accelerator is made, how a
micro-batch's loss becomes an optimizer step, how whole weights are reached when they are sharded,
and where the optimizer's (possibly sharded) state is checkpointed.

- one process, or DDP (GPUs, or CPU processes over gloo): alignkit steps the torch optimizer itself,
  skipping a step whose gradient norm is not finite.
- DeepSpeed ZeRO-1/2/3 (GPUs, or CPU processes over gloo): the engine owns the step. alignkit's config
  decides the micro-batch size, gradient accumulation (``managed_gradient_accumulation: false``: one
  engine step per accumulated group, however short the last group of an epoch) and clipping; those keys
  of the DeepSpeed config are overridden. A step whose gradients overflow is skipped by DeepSpeed and
  counted by alignkit. Under ZeRO-3 the output projection, read outside its module by the chunked
  log-prob engine, is registered as an external parameter of the trained module so it is gathered there.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from alignkit.errors import AlignkitError

MIN_DEEPSPEED = "0.19.4"  # managed_gradient_accumulation: false
DEEPSPEED_STATE = "deepspeed"  # sub-folder of a checkpoint holding DeepSpeed's own (per-rank) state


def launched_with(backend: str) -> bool:
    """Whether ``accelerate launch`` asked for ``backend`` ("DEEPSPEED" or "FSDP")."""
    return os.environ.get(f"ACCELERATE_USE_{backend}", "false").lower() == "true"


def make_accelerator() -> Accelerator:
    cuda = torch.cuda.is_available()
    if launched_with("FSDP"):
        raise AlignkitError("FSDP is not supported by alignkit yet (its checkpoints and reference handling are untested); DeepSpeed ZeRO-3 "
                            "shards weights, gradients and optimizer states the same way: accelerate launch --config_file "
                            "examples/accelerate/zero3.yaml (or zero2_bf16.yaml), or plain DDP (examples/accelerate/ddp.yaml)")
    if launched_with("DEEPSPEED"):
        try:
            import deepspeed
        except ImportError:
            raise AlignkitError("this launch asks for DeepSpeed, which is not installed: pip install 'alignkit[deepspeed]'") from None
        from packaging.version import Version

        if Version(deepspeed.__version__) < Version(MIN_DEEPSPEED):
            raise AlignkitError(f"DeepSpeed {deepspeed.__version__} is too old: alignkit needs >= {MIN_DEEPSPEED} (caller-owned gradient "
                                "accumulation); pip install -U 'alignkit[deepspeed]'")
    if launched_with("DEEPSPEED") and not cuda:  # DeepSpeed's CPU accelerator: accelerate must not take over (cpu=False), and needs gloo named
        return Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    return Accelerator(cpu=not cuda)  # CPU processes: accelerate's gloo DDP


class Backend:
    """The backend-specific steps of a training loop (see the module docstring)."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.kind = str(accelerator.distributed_type).split(".")[-1]
        self.deepspeed = self.kind == "DEEPSPEED"
        plugin = accelerator.state.deepspeed_plugin if self.deepspeed else None
        self.zero_stage = int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)) if plugin else 0

    def configure(self, micro_batch_size: int, max_grad_norm: float) -> None:
        """Before ``accelerator.prepare``: make DeepSpeed follow alignkit's batch, accumulation and clipping."""
        if not self.deepspeed:
            return
        ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
        ds.update(train_micro_batch_size_per_gpu=micro_batch_size, gradient_accumulation_steps=1, managed_gradient_accumulation=False,
                  gradient_clipping=max(max_grad_norm, 0.0))
        ds.pop("train_batch_size", None)  # accelerate derives it from the two above
        ds.get("zero_optimization", {}).pop("stage3_gather_16bit_weights_on_model_save", None)  # alignkit gathers weights itself

    def prepared(self, model: torch.nn.Module, trained: torch.nn.Module) -> None:
        """After ``accelerator.prepare``: under ZeRO-3, gather the output projections with ``trained``'s forward."""
        if self.zero_stage != 3:
            return
        import deepspeed

        lm = getattr(trained, "lm", None)
        head = lm.get_output_embeddings() if lm is not None and hasattr(lm, "get_output_embeddings") else None
        if head is not None:
            deepspeed.zero.register_external_parameter(trained, head.weight)

    def micro_step(self, model: torch.nn.Module, last: bool):
        """Context for one micro-batch's forward and backward: DDP skips the gradient all-reduce until the last."""
        return self.accelerator.no_sync(model) if not last and not self.deepspeed else nullcontext()

    def backward(self, model: torch.nn.Module, loss: torch.Tensor) -> None:
        """``loss`` is already divided by the number of micro-batches in the step."""
        if self.deepspeed:
            model.backward(loss, scale_wrt_gas=False)
        else:
            self.accelerator.backward(loss)

    def step(self, model, optimizer, scheduler, params: list[torch.Tensor], max_grad_norm: float) -> float:
        """Clip and apply the accumulated gradients; returns the gradient norm before clipping, which is
        not finite (and nothing was applied) when a loss or gradient was NaN/inf."""
        if self.deepspeed:
            model.step()
            norm = model.get_global_grad_norm()
            applied = model.was_step_applied() and norm is not None and math.isfinite(float(norm))
            if applied:
                scheduler.step()
            return float(norm) if applied else math.nan
        norm = float(self.accelerator.clip_grad_norm_(params, max_grad_norm) if max_grad_norm > 0 else _grad_norm(params))
        if math.isfinite(norm):
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    @contextmanager
    def full_weights(self, module: torch.nn.Module):
        """Every parameter of ``module`` whole on every process while inside, to read (a collective under
        ZeRO-3: all processes enter)."""
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                yield
        else:
            yield

    def save_state(self, model, folder: Path) -> bool:
        """Collective: DeepSpeed writes its sharded optimizer state under ``folder/deepspeed`` (every rank
        its own files). Returns whether it did; other backends leave the optimizer to the checkpoint."""
        if not self.deepspeed:
            return False
        model.save_checkpoint(str(folder), tag=DEEPSPEED_STATE, save_latest=False, exclude_frozen_parameters=True)
        return True

    def load_state(self, model, folder: Path) -> None:
        if self.deepspeed:  # restores the weights and the sharded optimizer state
            if not (folder / DEEPSPEED_STATE).is_dir():
                raise AlignkitError(f"{folder} was not written under DeepSpeed (no {DEEPSPEED_STATE}/ folder); resume it with the launch that wrote it")
            model.load_checkpoint(str(folder), tag=DEEPSPEED_STATE, load_module_strict=False, load_lr_scheduler_states=False)


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.tensor(0.0)
