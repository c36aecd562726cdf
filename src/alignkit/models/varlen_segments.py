"""One attention call per layer for a one-row batch of segments: FlashAttention-2's variable-length kernel.

FlashAttention's varlen kernel attends over many sequences of one flat token dimension in one launch,
each query sequence over its own key sequence (``cu_seqlens_q``/``cu_seqlens_k``: where each starts).
Its causal mask is aligned to the bottom right: with ``q`` queries over ``k >= q`` keys, query ``i``
sees keys ``0 .. k - q + i``. That is exactly the shared-prefix rule, so a row of
:mod:`alignkit.models.segment_attention` is one call:

- queries: the row as it is, cut into ``prefix + first continuation`` (one causal sequence) and then
  each later continuation of a block (a plain sequence is a block with no continuations);
- keys and values: the same spans, except that a later continuation's keys are its block's prefix
  followed by itself (gathered once per layer with one ``index_select``; not at all when no block has
  a second continuation, the plain packed case).

A continuation thus sees its prefix and, causally, itself; never a sibling or another block. The layout
(gather index, cumulative lengths) is built once per batch and shared by every layer.

The kernel is ``flash_attn.flash_attn_varlen_func`` where the ``flash-attn`` package is installed, else
PyTorch's own ``torch.nn.attention.varlen.varlen_attn`` (the same FlashAttention-2 code, torch >= 2.10).
Both need CUDA and fp16/bf16 inputs, so :func:`usable` says per call whether this kernel can serve.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from dataclasses import dataclass

import torch

try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # torch < 2.10: flash-attn's kernel, or none (then FlexAttention serves)
    varlen_attn = None

HALF = (torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256  # FlashAttention-2's limit


@dataclass
class VarlenLayout:
    """The query/key spans of a one-row batch, as the varlen kernel takes them (tensors on one device)."""

    key_index: torch.Tensor | None  # row position of every key (None: the keys are the row itself)
    cu_q: torch.Tensor  # int32 [S + 1]: where each query span starts in the row, then the row's length
    cu_k: torch.Tensor  # int32 [S + 1]: the same over the (gathered) keys
    max_q: int
    max_k: int


def spans(blocks: list[tuple[int, int, list[int]]], n: int) -> tuple[list[int], list[int], list[int] | None]:
    """(query span lengths, key span lengths, key row positions or None) of a row of ``n`` tokens laid out
    as ``blocks`` (start, prefix length, continuation lengths)."""
    q_lengths: list[int] = []
    k_lengths: list[int] = []
    index: list[int] = []
    shared = any(len(continuations) > 1 for _, _, continuations in blocks)
    position = 0
    for start, prefix, continuations in blocks:
        if start != position:
            raise ValueError(f"segments do not tile the row: a block starts at {start}, expected {position}")
        head = prefix + (continuations[0] if continuations else 0)
        q_lengths.append(head)
        k_lengths.append(head)
        index.extend(range(start, start + head))
        end = start + head
        for length in continuations[1:]:
            q_lengths.append(length)
            k_lengths.append(prefix + length)
            index.extend(range(start, start + prefix))
            index.extend(range(end, end + length))
            end += length
        position = end
    if position != n:
        raise ValueError(f"segments cover {position} tokens of a row of {n}")
    return q_lengths, k_lengths, index if shared else None


def build_layout(blocks: list[tuple[int, int, list[int]]], n: int, device) -> VarlenLayout:
    """The :class:`VarlenLayout` of a row of ``n`` tokens laid out as ``blocks``."""
    q_lengths, k_lengths, index = spans(blocks, n)

    def cumulative(lengths: list[int]) -> torch.Tensor:
        return torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device, non_blocking=True)

    key_index = None if index is None else torch.tensor(index, dtype=torch.long).to(device, non_blocking=True)
    return VarlenLayout(key_index, cumulative(q_lengths), cumulative(k_lengths), max(q_lengths), max(k_lengths))


def _flash_attn_kernel():
    """``flash_attn_varlen_func`` in the varlen calling convention below, or None without the package."""
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception:  # noqa: BLE001 -- a build for another torch or CUDA fails in its own way
        return None

    def run(query, key, value, cu_q, cu_k, max_q, max_k, scale):
        return flash_attn_varlen_func(query, key, value, cu_q, cu_k, max_q, max_k, softmax_scale=scale, causal=True)

    return run


def _torch_kernel():
    """PyTorch's ``varlen_attn`` in the varlen calling convention below, or None before torch 2.10."""
    if varlen_attn is None:
        return None
    parameters = inspect.signature(varlen_attn).parameters
    gqa, scaled = "enable_gqa" in parameters, "scale" in parameters
    # causal, aligned to the bottom right: torch 2.10 takes is_causal, later ones a (left, right) window
    causal = {"window_size": (-1, 0)} if "window_size" in parameters else {"is_causal": True}

    def run(query, key, value, cu_q, cu_k, max_q, max_k, scale):
        if key.shape[1] != query.shape[1] and not gqa:  # an older varlen_attn: repeat the key/value heads
            groups = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        options = {"enable_gqa": key.shape[1] != query.shape[1]} if gqa else {}
        if scaled:
            options["scale"] = scale
        elif scale is not None:  # an older varlen_attn scales by 1/sqrt(head_dim): fold the rest into the query
            query = query * (scale * query.shape[-1] ** 0.5)
        return varlen_attn(query, key, value, cu_q, cu_k, max_q, max_k, **causal, **options)

    return run


_KERNEL: list = []  # the chosen kernel, found once per process (a list so tests can swap it)


def varlen_kernel():
    """The varlen kernel this machine has (flash-attn's, else torch's), or None."""
    if not _KERNEL:
        _KERNEL.append(_flash_attn_kernel() or _torch_kernel())
    return _KERNEL[0]


@functools.lru_cache(maxsize=None)
def _ampere_or_later(index: int | None) -> bool:
    return torch.cuda.get_device_capability(index) >= (8, 0)


def usable(query: torch.Tensor, dropout: float) -> bool:
    """Whether the varlen kernel can attend over ``query`` ``[1, heads, N, head_dim]``: CUDA (Ampere or
    later), fp16/bf16, a head size FlashAttention-2 takes (a multiple of 8 up to 256), no attention dropout
    (torch's applies none)."""
    return (
        query.device.type == "cuda"
        and query.dtype in HALF
        and query.shape[-1] <= MAX_HEAD_DIM
        and query.shape[-1] % 8 == 0
        and not dropout
        and varlen_kernel() is not None
        and _ampere_or_later(query.device.index)
    )


def varlen_segment_attention(query, key, value, layout: VarlenLayout, scaling) -> torch.Tensor:
    """``[1, N, heads, head_dim]`` attention of a whole one-row batch (``[1, heads, N, head_dim]`` inputs)
    in one varlen call."""
    query, key, value = (t[0].transpose(0, 1) for t in (query, key, value))  # [N, heads, head_dim] views
    if layout.key_index is not None:
        key, value = key.index_select(0, layout.key_index), value.index_select(0, layout.key_index)
    query, key, value = (t.contiguous() for t in (query, key, value))
    out = varlen_kernel()(query, key, value, layout.cu_q, layout.cu_k, layout.max_q, layout.max_k, scaling)
    return out[None]
