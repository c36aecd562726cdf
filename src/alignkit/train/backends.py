"""What differs between accelerate's backends, in one place: how the accelerator is made, how a
micro-batch's loss becomes an optimizer step, how whole weights are reached when they are sharded,
and where the optimizer's (possibly sharded) state is checkpointed.

- one process, or DDP (GPUs, or CPU processes over gloo): alignkit steps the torch optimizer itself,
  skipping a step whose gradient norm is not finite (under fp16 the loss scaler decides, and alignkit
  counts its skipped steps).
- FSDP2 (GPUs, or CPU processes over gloo): as DDP, with weights, gradients and optimizer state sharded;
  checkpoints hold whole trainable weights (gathered) and each process's optimizer shard.
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
from accelerate.state import AcceleratorState
from accelerate.utils import (
    DistributedType,
    FullyShardedDataParallelPlugin,
    InitProcessGroupKwargs,
)
from packaging.version import Version
from safetensors.torch import load_file

from alignkit.errors import AlignkitError

MIN_DEEPSPEED = "0.19.4"  # managed_gradient_accumulation: false
DEEPSPEED_STATE = "deepspeed"  # sub-folder of a checkpoint holding DeepSpeed's own (per-rank) state


def launched_with(backend: str) -> bool:
    """Whether ``accelerate launch`` asked for ``backend`` ("DEEPSPEED" or "FSDP")."""
    return os.environ.get(f"ACCELERATE_USE_{backend}", "false").lower() == "true"


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The processor's native bf16 instructions (AVX512-BF16, AMX-BF16) from /proc/cpuinfo's flags;
    empty where there are none or the flags cannot be read (never guessed)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]


def resolve_mixed_precision(mixed_precision: str | None, cuda: bool, cpu_flags: list[str]) -> str | None:
    """``auto``: bf16 on a GPU that supports it, otherwise none (fp32 stays the default on CPU). An
    explicit bf16 on a CPU without native bf16 (emulated, slower than fp32) and fp16 on a CPU are refused."""
    if mixed_precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if mixed_precision == "fp16" and not cuda:
        raise AlignkitError(
            "mixed_precision fp16 (TRL's fp16) needs a CUDA GPU; on CPU use bf16 "
            "(on CPUs with native bf16) or leave it unset"
        )
    if mixed_precision == "bf16" and not cuda and not cpu_flags:
        raise AlignkitError(
            "mixed_precision bf16 on this CPU would be emulated (its flags show "
            "neither avx512_bf16 nor amx_bf16) and slower "
            "than fp32; leave mixed_precision unset"
        )
    return mixed_precision


def run_precision(mixed_precision: str | None) -> str:
    """The mixed precision a run trains in (no/bf16/fp16): the config's, else what `accelerate launch` asked
    for, else fp32 (never the precision a previous run in this process left)."""
    cuda = torch.cuda.is_available()
    mixed_precision = resolve_mixed_precision(
        mixed_precision, cuda, cpu_bf16_flags() if mixed_precision == "bf16" and not cuda else []
    )
    return mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"


def make_accelerator(mixed_precision: str | None = None) -> Accelerator:
    """The accelerator for this launch; ``mixed_precision`` (no/bf16/fp16/auto) overrides what `accelerate launch`
    set."""
    cuda = torch.cuda.is_available()
    mixed_precision = run_precision(mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision and "WORLD_SIZE" not in os.environ:
        AcceleratorState._reset_state()  # one process, a second run with another precision (the API called twice)
    precision = {"mixed_precision": mixed_precision}
    if launched_with("FSDP"):
        if os.environ.get("FSDP_VERSION", "1") != "2":
            raise AlignkitError(
                "alignkit supports FSDP2 only (fsdp_version: 2 in the accelerate "
                "config, as in examples/accelerate/fsdp2.yaml); "
                "FSDP1's flat parameters are not handled. DeepSpeed ZeRO-3 (examples/accelerate/zero3.yaml) also works"
            )
        # accelerate runs FSDP on GPUs only; FSDP2 itself runs on CPU processes (gloo),
        # so take accelerate's CPU setup and shard
        if not cuda:
            accelerator = Accelerator(cpu=True, **precision)
            accelerator.state.distributed_type = DistributedType.FSDP
            accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
            return accelerator
    if launched_with("DEEPSPEED"):
        try:
            import deepspeed
        except ImportError:
            raise AlignkitError(
                "this launch asks for DeepSpeed, which is not installed: pip install 'alignkit[deepspeed]'"
            ) from None
        if Version(deepspeed.__version__) < Version(MIN_DEEPSPEED):
            raise AlignkitError(
                f"DeepSpeed {deepspeed.__version__} is too old: alignkit needs >= "
                f"{MIN_DEEPSPEED} (caller-owned gradient "
                "accumulation); pip install -U 'alignkit[deepspeed]'"
            )
    if (
        launched_with("DEEPSPEED") and not cuda
    ):  # DeepSpeed's CPU accelerator: accelerate must not take over (cpu=False), and needs gloo named
        return Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")], **precision)
    return Accelerator(cpu=not cuda, **precision)  # CPU processes: accelerate's gloo DDP


class Backend:
    """The backend-specific steps of a training loop (see the module docstring)."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.kind = str(accelerator.distributed_type).split(".")[-1]
        self.deepspeed = self.kind == "DEEPSPEED"
        self.fsdp = self.kind == "FSDP"
        self.sharded_state = self.deepspeed or self.fsdp  # the optimizer state is per process: saved by save_state
        plugin = accelerator.state.deepspeed_plugin if self.deepspeed else None
        self.zero_stage = int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)) if plugin else 0

    def configure(self, micro_batch_size: int, max_grad_norm: float) -> None:
        """Before ``accelerator.prepare``: make DeepSpeed follow alignkit's batch, accumulation and clipping."""
        if not self.deepspeed:
            return
        ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
        ds.update(
            train_micro_batch_size_per_gpu=micro_batch_size,
            gradient_accumulation_steps=1,
            managed_gradient_accumulation=False,
            gradient_clipping=max(max_grad_norm, 0.0),
        )
        ds.pop("train_batch_size", None)  # accelerate derives it from the two above
        ds.get("zero_optimization", {}).pop(
            "stage3_gather_16bit_weights_on_model_save", None
        )  # alignkit gathers weights itself

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

    def can_defer(self, optimizer) -> bool:
        """Whether :meth:`step` can skip a non-finite update without reading the norm on the host: torch's
        fused AdamW takes a ``found_inf`` flag on the device (as under a loss scaler) and then changes
        nothing (weights, moments, step count); not with a loss scaler or DeepSpeed, which own the step."""
        inner = getattr(optimizer, "optimizer", optimizer)
        return not self.deepspeed and self.accelerator.scaler is None and bool(inner.defaults.get("fused"))

    def step(
        self, model, optimizer, scheduler, params: list[torch.Tensor], max_grad_norm: float, defer: bool = False
    ) -> float | torch.Tensor:
        """Clip and apply the accumulated gradients; returns the gradient norm before clipping, which is
        not finite (and nothing was applied) when a loss or gradient was NaN/inf. With ``defer`` (see
        :meth:`can_defer`) the norm stays a device tensor and the skip is decided on the device; the
        schedule then advances on a skipped step too (as in transformers' Trainer)."""
        if defer:
            norm = self.accelerator.clip_grad_norm_(params, max_grad_norm) if max_grad_norm > 0 else _grad_norm(params)
            inner = getattr(optimizer, "optimizer", optimizer)
            inner.found_inf = (~torch.isfinite(norm)).float()
            optimizer.step()
            inner.found_inf = None
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            return norm
        if self.deepspeed:
            model.step()
            norm = model.get_global_grad_norm()
            applied = model.was_step_applied() and norm is not None and math.isfinite(float(norm))
            if applied:
                scheduler.step()
            return float(norm) if applied else math.nan
        norm = float(
            self.accelerator.clip_grad_norm_(params, max_grad_norm) if max_grad_norm > 0 else _grad_norm(params)
        )
        if (
            self.accelerator.scaler is not None
        ):  # fp16: the loss scaler skips an overflowing step itself, and must see it to lower its scale
            optimizer.step()
            applied = not optimizer.step_was_skipped
        else:
            applied = math.isfinite(norm)
            if applied:
                optimizer.step()
        if applied:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return norm if applied else math.nan

    @contextmanager
    def full_weights(self, module: torch.nn.Module):
        """Inside, the main process sees every parameter of ``module`` whole, to read or save (all
        processes must enter: gathering is a collective under ZeRO-3 and FSDP)."""
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                yield
        elif self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            full = get_model_state_dict(
                module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )  # whole on rank 0 only
            swapped, replacement = [], {}
            if (
                self.accelerator.is_main_process
            ):  # the sharded parameters step aside for whole ones (tied ones stay tied)
                for prefix, owner in module.named_modules(remove_duplicate=False):
                    for name, param in list(owner._parameters.items()):
                        if param is not None:
                            if id(param) not in replacement:
                                replacement[id(param)] = torch.nn.Parameter(
                                    full[f"{prefix}.{name}" if prefix else name], param.requires_grad
                                )
                            owner._parameters[name] = replacement[id(param)]
                            swapped.append((owner, name, param))
            try:
                yield
            finally:
                for owner, name, param in swapped:
                    owner._parameters[name] = param
        else:
            yield

    @contextmanager
    def generation_weights(self, module: torch.nn.Module):
        """Inside, every process can generate with ``module`` (with ``synced`` generation where
        ``self.synced_generation``): FSDP gathers the parameters its root unit holds (embeddings, head)."""
        if self.fsdp:
            from torch.distributed.fsdp import FSDPModule

            units = [m for m in module.modules() if isinstance(m, FSDPModule)]
            # FSDP makes the first unit to run forward the root:
            # make it the real root before generate() runs an inner one
            if units:
                units[0]._get_fsdp_state()._lazy_init()
            for unit in units:
                unit.unshard()
            try:
                yield
            finally:
                for unit in units:
                    unit.reshard()
        else:
            yield

    @property
    def synced_generation(self) -> bool:
        """Sharded weights: every process must take part in every forward while generating."""
        return self.zero_stage == 3 or self.fsdp

    def save_state(self, model, optimizer, folder: Path) -> None:
        """Every process writes its own part of the optimizer state into ``folder`` (a collective):
        DeepSpeed its files under ``deepspeed/``, FSDP each rank's shards as ``optimizer_rank<r>.pt``."""
        if self.deepspeed:
            model.save_checkpoint(str(folder), tag=DEEPSPEED_STATE, save_latest=False, exclude_frozen_parameters=True)
        elif self.fsdp:
            from torch.distributed.tensor import DTensor

            state = optimizer.state_dict()
            state["state"] = {
                i: {k: v.to_local() if isinstance(v, DTensor) else v for k, v in s.items()}
                for i, s in state["state"].items()
            }
            torch.save(state, folder / f"optimizer_rank{self.accelerator.process_index}.pt")

    def load_state(self, model, trained, optimizer, folder: Path) -> None:
        """Weights and optimizer state from a checkpoint written by :meth:`save_state` under the same launch."""
        if self.deepspeed:  # restores the weights too
            if not (folder / DEEPSPEED_STATE).is_dir():
                raise AlignkitError(
                    f"{folder} was not written under DeepSpeed (no {DEEPSPEED_STATE}/ "
                    "folder); resume it with the launch that wrote it"
                )
            model.load_checkpoint(
                str(folder), tag=DEEPSPEED_STATE, load_module_strict=False, load_lr_scheduler_states=False
            )
            return
        from torch.distributed.tensor import DTensor, distribute_tensor

        shard = folder / f"optimizer_rank{self.accelerator.process_index}.pt"
        if not shard.is_file():
            raise AlignkitError(
                f"{folder} was not written under FSDP with "
                f"{self.accelerator.num_processes} processes (no {shard.name}); "
                "resume it with the launch that wrote it"
            )
        weights = load_file(str(folder / "trainable.safetensors"))
        with torch.no_grad():
            for name, param in trained.named_parameters():
                if param.requires_grad:
                    full = weights[name].to(param.dtype)
                    param.to_local().copy_(
                        distribute_tensor(full, param.device_mesh, param.placements).to_local()
                        if isinstance(param, DTensor)
                        else full
                    )
        state = torch.load(shard, weights_only=False)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index, values in state["state"].items():
            param = params[index]
            if isinstance(param, DTensor):
                values.update(
                    {
                        k: DTensor.from_local(
                            v, param.device_mesh, param.placements, shape=param.shape, stride=param.stride()
                        )
                        for k, v in values.items()
                        if torch.is_tensor(v) and v.dim() > 0
                    }
                )
        optimizer.load_state_dict(state)


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.tensor(0.0)
