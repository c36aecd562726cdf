"""Reference log-probs: the policy with adapters disabled (LoRA), a frozen copy (full fine-tuning),
or values precomputed once and cached on disk.

With LoRA no second model exists in memory. With ``precompute_ref_log_probs`` the frozen copy is
dropped after one pass, and the values are cached under ``$ALIGNKIT_CACHE/ref_logps`` keyed by
the model's files and the exact token ids, so reruns and beta sweeps reuse them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from alignkit.atomic import atomic_path
from alignkit.data.collate import collate_to
from alignkit.engine.logprobs import LogProbModel, in_eval_mode


class Reference:
    """Callable ``batch -> [N]`` reference log-probs (no autograd)."""

    def __init__(self, policy: LogProbModel, use_adapter: bool, precompute_only: bool = False):
        """``precompute_only``: the values will be computed once, before training changes the policy,
        so the untrained policy itself serves and no frozen copy is made."""
        self.policy = policy
        self.use_adapter = use_adapter
        self.frozen = None
        self.released = False
        self.autocast = nullcontext  # the policy's autocast, once the training's precision is known (to())
        self.pending = None  # the precomputing pass, run by the training loop once the policy is on its device
        if not use_adapter and not precompute_only:
            lm = copy.deepcopy(policy.lm).eval().requires_grad_(False)
            self.frozen = LogProbModel(lm, policy.chunk_size)

    def to(self, device: torch.device, autocast=nullcontext) -> Reference:
        """Put the frozen copy (if any) on ``device`` and run every reference forward under ``autocast()``,
        the context the policy's own forward runs in: policy and reference then compute and round alike
        (step 1 of DPO is log 2, RL's KL at step 0 is 0, in fp32 and bf16)."""
        if self.frozen is not None:
            self.frozen.to(device)
        self.autocast = autocast
        return self

    @contextmanager
    def model(self):
        """The reference as a LogProbModel (context manager), under the policy's autocast: the frozen copy,
        or the policy with adapters off."""
        if self.frozen is not None:
            with self.autocast():
                yield self.frozen
            return
        lm = self.policy.lm
        with in_eval_mode(lm), lm.disable_adapter() if self.use_adapter else nullcontext(), self.autocast():
            yield self.policy

    @torch.no_grad()
    def __call__(self, batch: dict) -> torch.Tensor:
        """Reference log-probs of ``batch``: the precomputed ones it carries, else a no-grad forward of the
        reference."""
        if "ref_logps" in batch:
            return batch["ref_logps"]
        if self.released:
            raise RuntimeError("reference log-probs were precomputed, but this batch carries none")
        with self.model() as model:
            return model(batch).logps

    def release(self) -> None:
        """After precomputing: drop any frozen copy and refuse live calls (the policy will have moved)."""
        self.frozen = None
        self.released = True


def precompute_wanted(config, n_train: int, num_processes: int = 1) -> bool:
    """``precompute_ref_log_probs`` resolved: ``auto`` precomputes for full fine-tuning (the frozen copy
    leaves memory) and whenever the run scores at least every training pair once (one pass up front
    then costs no more than the reference forwards it replaces); a LoRA run shorter than an epoch
    keeps the live reference (the policy with adapters off)."""
    if config.precompute_ref_log_probs != "auto":
        return bool(config.precompute_ref_log_probs)
    if not config.use_peft:
        return True
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps * num_processes
    if config.max_steps > 0:
        return config.max_steps * per_step >= n_train
    per_epoch = min(n_train, (config.max_steps_per_epoch or n_train) * per_step)  # a capped epoch scores fewer
    return config.num_train_epochs * per_epoch >= n_train


def cache_key(fingerprint: str, items: list[dict], signature) -> str:
    """The cache key of precomputed reference values: the run's fingerprint (``engine.fingerprint``) and every
    item's token signature (its exact token ids)."""
    digest = hashlib.sha256(fingerprint.encode())
    for item in items:
        digest.update(json.dumps(signature(item)).encode())
    return digest.hexdigest()[:32]


def precompute_reference(
    reference: Reference,
    items: list[dict],
    collate,
    batch_size: int,
    cache_dir: Path,
    fingerprint: str,
    device,
    show_progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    gather=None,
) -> int:
    """Attach ``ref_logps`` (one value per sequence slot of ``collate``) to every item, from cache or
    one pass; returns how many items were computed (0: all read from the cache).

    With several processes (``shard`` = (rank, world), ``gather`` concatenating a tensor of every
    process along dim 0) each computes every world-th batch and the values are gathered, so the pass
    costs one process's share, not the whole on each. Every process runs the same number of forwards
    (a process whose share has run out repeats a batch that counts for nothing), since sharded weights
    gather inside every forward."""
    path = cache_dir / "ref_logps" / f"{cache_key(fingerprint, items, collate.signature)}.safetensors"
    if path.is_file():
        values = load_file(str(path))["ref_logps"]
        computed = 0
    else:
        values = _reference_pass(reference, items, collate, batch_size, device, show_progress, shard, gather)
        computed = len(items)
        if shard[0] == 0:
            with atomic_path(path) as tmp:
                save_file({"ref_logps": values.contiguous()}, str(tmp))
    for item, row in zip(items, values.tolist()):
        item["ref_logps"] = row
    return computed


def _reference_pass(reference, items, collate, batch_size, device, show_progress, shard, gather) -> torch.Tensor:
    """``[items, slots]`` reference values, this process computing its share of the batches (see above)."""
    rank, world = shard
    starts = list(range(0, len(items), batch_size))
    rounds = -(-len(starts) // world)
    mine = []
    for turn in tqdm(range(rounds), desc="reference log-probs", disable=not show_progress):
        index = turn * world + rank
        start = starts[index] if index < len(starts) else 0  # past the end: a batch that counts for nothing
        chunk = items[start : start + batch_size]
        slots = reference(collate_to(collate, chunk, device)).reshape(-1, len(chunk)).T  # [items, slots]
        mine.append(
            torch.zeros(batch_size, slots.shape[1], device=slots.device).index_copy_(
                0, torch.arange(len(chunk), device=slots.device), slots.float()
            )
        )
    local = torch.stack(mine)  # [rounds, batch_size, slots]
    every = (gather(local) if world > 1 else local).reshape(world, rounds, batch_size, -1).transpose(0, 1)
    every = every.reshape(rounds * world, batch_size, -1)[: len(starts)].cpu()
    return torch.cat([every[i, : len(items[start : start + batch_size])] for i, start in enumerate(starts)])
