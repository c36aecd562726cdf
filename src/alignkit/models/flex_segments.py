"""One attention call per layer for a one-row batch of segments: FlexAttention with a block mask.

The per-segment path of :mod:`alignkit.models.segment_attention` runs one SDPA call per sequence or
shared-prefix block, per layer: cheap on a CPU, launch-bound on a GPU (thousands of small kernels a
step). Here the whole row is one ``flex_attention`` call whose ``BlockMask`` says, per 128-token tile,
which tiles are skipped, fully visible or partly visible, and whose ``mask_mod`` decides the partly
visible ones from three numbers per token:

- ``block``: which sequence or shared-prefix block the token belongs to (never attend across);
- ``branch``: 0 for a block's prefix and its first continuation (one causal sequence), ``j`` for its
  ``j+1``-th continuation;
- ``prefix_end``: where the block's shared prefix ends (in the row).

A query sees a key when both are in one block, the key is not later (causal), and the key is on the
query's own branch or in the block's prefix: a continuation sees its prefix and itself, never a sibling.

The mask is built once per batch (a plan is shared by every layer of a forward and by the checkpointed
recompute), from those per-token vectors broadcast over a slab of query rows at a time, never an
``[N, N]`` tensor of indices. FlexAttention has no backward on CPU, so training there keeps the
per-segment path; this one is CUDA's (and serves no-grad passes anywhere).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # torch < 2.5: segment attention keeps its per-segment kernel everywhere
    BlockMask = flex_attention = None

TILE = 128  # FlexAttention's default sparse block size
ROWS = 1024  # query rows per slab while building the tile masks


def token_layout(blocks: list[tuple[int, int, list[int]]], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(block, branch, prefix_end) per token of a row laid out as ``blocks`` (start, prefix, continuations)."""
    block, branch, prefix_end = [], [], []
    for index, (start, prefix, continuations) in enumerate(blocks):
        first = continuations[0] if continuations else 0
        length = prefix + sum(continuations)
        block += [index] * length
        branch += [0] * (prefix + first)
        for j, size in enumerate(continuations[1:], start=1):
            branch += [j] * size
        prefix_end += [start + prefix] * length
    as_tensor = lambda values: torch.tensor(values, dtype=torch.int32).to(device, non_blocking=True)  # noqa: E731
    return as_tensor(block), as_tensor(branch), as_tensor(prefix_end)


def build_block_mask(blocks: list[tuple[int, int, list[int]]], n: int, device):
    """The ``BlockMask`` of a one-row batch of ``n`` tokens laid out as ``blocks``."""
    block, branch, prefix_end = token_layout(blocks, device)

    def visible(q, k):
        return (block[q] == block[k]) & (k <= q) & ((branch[q] == branch[k]) | (k < prefix_end[q]))

    def mask_mod(b, h, q, k):
        return visible(q, k)

    tiles = -(-n // TILE)
    partial = torch.zeros(tiles, tiles, dtype=torch.bool, device=device)
    full = torch.zeros_like(partial)
    keys = torch.arange(n, device=device)
    for start in range(0, n, ROWS):
        rows = torch.arange(start, min(start + ROWS, n), device=device)
        allowed = visible(rows[:, None], keys[None, :])
        height = -(-len(rows) // TILE) * TILE
        allowed = F.pad(allowed, (0, tiles * TILE - n, 0, height - len(rows))).view(-1, TILE, tiles, TILE)
        first = start // TILE
        partial[first : first + allowed.shape[0]] = allowed.any(3).any(1)
        full[first : first + allowed.shape[0]] = allowed.all(3).all(1)
    partial &= ~full

    def counts_and_indices(which: torch.Tensor):
        counts = which.sum(-1, dtype=torch.int32)[None, None]
        indices = torch.argsort(~which, dim=-1, stable=True).to(torch.int32)[None, None]
        return counts, indices

    mask = BlockMask.from_kv_blocks(*counts_and_indices(partial), *counts_and_indices(full), TILE, mask_mod, (n, n))
    _dynamic_tiles(mask)
    return mask


def _dynamic_tiles(mask) -> None:
    """Mark the tile dimensions of ``mask``'s tensors dynamic for the compiled kernel. ``dynamic=True`` leaves
    a ``BlockMask``'s tensors static at the first compile, so the second row length recompiled (measured on
    CPU: one recompile, then one graph for every length); marked, the first graph serves every row of more
    than one tile. Eager FlexAttention ignores the marks."""
    tensors = (mask.kv_num_blocks, mask.kv_indices, mask.full_kv_num_blocks, mask.full_kv_indices)
    tensors += (mask.q_num_blocks, mask.q_indices, mask.full_q_num_blocks, mask.full_q_indices)
    for tensor in tensors:
        for dim in range(2, tensor.dim()) if tensor is not None else ():
            torch._dynamo.maybe_mark_dynamic(tensor, dim)


_COMPILED = None


def flex_kernel(device_type: str):
    """``flex_attention``, compiled on CUDA (one fused kernel; dynamic shapes, as every batch's length
    differs), eager elsewhere (no-grad passes and tests)."""
    return compiled_flex() if device_type == "cuda" else _quiet(flex_attention)


def compiled_flex():
    """``flex_attention`` compiled once per process with dynamic shapes: one graph for rows of any length
    and any number of segments (a recompile per batch would cost seconds a step)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(flex_attention, dynamic=True)
    return _COMPILED


def _quiet(kernel):
    """``kernel`` without FlexAttention's once-per-process advice to compile it (eager is deliberate here)."""

    def run(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return kernel(*args, **kwargs)

    return run


def flex_segment_attention(query, key, value, block_mask, scaling, gqa: bool) -> torch.Tensor:
    """``[1, heads, N, head_dim]`` attention of a whole one-row batch in one call."""
    return flex_kernel(query.device.type)(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=gqa)
