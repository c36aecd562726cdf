"""Segment attention: every sequence (or shared-prefix block) of a batch in one row, no padding at all.

A padding-free batch used to be packed into rows no wider than its longest sequence, each row padded
to the widest and attended to through a dense ``[width, width]`` mask: on pairs of similar lengths
15-20% of the computed positions were padding, and attention cost grew with the square of the row
rather than of each sequence. Here a batch is one row of exactly its real tokens, and attention runs
segment by segment, each over its own tokens only:

- a plain sequence of ``n`` tokens: causal attention over those ``n`` tokens (SDPA's own causal kernel);
- a shared-prefix block ``[prefix, c1, c2, ...]``: ``prefix + c1`` is one causal sequence; each later
  continuation ``c`` attends to the prefix and, causally, to itself (a ``[c, prefix + c]`` mask).

So the work is exactly that of running every sequence alone, with the prompt of a block computed once.
The layout comes as ``segments`` ``[S, 2 + k]`` (start in the row, prefix length, then ``k``
continuation lengths; ``k = 0`` for plain sequences) and reaches every attention layer as a keyword
argument of the decoder's forward, which transformers passes down to the attention function
registered here as ``alignkit_segments``. Without that keyword the function is SDPA itself, so
generation, padded batches and saving behave exactly as with ``sdpa``.

Three kernels compute it (see :func:`kernel_for`): on a CPU, one SDPA call per segment (above); on CUDA,
one call per layer for the whole row: FlashAttention-2's varlen kernel under fp16/bf16
(:mod:`alignkit.models.varlen_segments`), else FlexAttention (:mod:`alignkit.models.flex_segments`).
``ALIGNKIT_SEGMENT_KERNEL=loop|flex|varlen`` picks one for a whole process (to measure them). A one-call
kernel that fails on the machine is passed over for the process: in the support check, in the probe before
training (:func:`check_kernels_train`: forward and backward), or in a step (:func:`passing_over_kernels`).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from alignkit.models import flex_segments, varlen_segments
from alignkit.models.flex_segments import build_block_mask, flex_segment_attention
from alignkit.models.varlen_segments import build_layout, varlen_segment_attention

SEGMENT_ATTENTION = "alignkit_segments"


KERNELS = ("loop", "flex", "varlen")
KERNEL_VARIABLE = "ALIGNKIT_SEGMENT_KERNEL"
_forced: list[str] = []  # the kernel a `forced_kernel` block asks for (innermost last)
_failed: dict[str, str] = {}  # kernel: why it failed in this process (then the next one serves)
_serving: list[str] = []  # the kernel that served the latest segment-attention forward (see pass_over_serving)


@contextmanager
def forced_kernel(name: str):
    """Inside, segment attention runs ``name`` ("loop": one SDPA call per segment; "flex": one
    FlexAttention call per layer; "varlen": one FlashAttention varlen call per layer) whatever the
    device: for the support check and tests."""
    if name not in KERNELS:
        raise ValueError(f"segment attention kernel {name!r} is not one of {KERNELS}")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def available_kernels(device: torch.device | None = None) -> tuple[str, ...]:
    """The kernels this torch can run on ``device`` (FlexAttention arrived in torch 2.5; the varlen
    kernel needs CUDA and flash-attn or torch >= 2.10)."""
    kernels = ["loop"] + (["flex"] if flex_segments.flex_attention is not None else [])
    if device is not None and device.type == "cuda" and varlen_segments.varlen_kernel() is not None:
        kernels.append("varlen")
    return tuple(kernels)


def kernels_to_check(device: torch.device) -> tuple[str, ...]:
    """The kernels a model's support for segments is checked with on ``device`` (``supports_segments``):
    those :func:`kernel_for` may pick for it. On CUDA every available one. Elsewhere the loop, the kernel
    ``ALIGNKIT_SEGMENT_KERNEL`` asks for, and FlexAttention where a GPU is present (a model loaded on the
    CPU trains there, and FlexAttention is the one-call kernel a CPU can run). A CPU-only run never runs
    FlexAttention, so it is not checked there: eagerly on a CPU that took seconds per run. A kernel that
    failed in this process is passed over."""
    available = tuple(kernel for kernel in available_kernels(device) if kernel not in _failed)
    if device.type == "cuda":
        return available
    wanted = {"loop", requested_kernel()} | ({"flex"} if torch.cuda.is_available() else set())
    return tuple(kernel for kernel in available if kernel in wanted)


def requested_kernel() -> str | None:
    """The kernel ``ALIGNKIT_SEGMENT_KERNEL`` names (None when unset or ``auto``)."""
    name = os.environ.get(KERNEL_VARIABLE, "auto").strip().lower()
    if name == "auto":
        return None
    if name not in KERNELS:
        raise ValueError(f"{KERNEL_VARIABLE}={name!r}: expected auto or one of {', '.join(KERNELS)}")
    return name


def kernel_for(query: torch.Tensor, dropout: float) -> str:
    """The kernel for a layer's ``query`` ``[1, heads, N, head_dim]``. On CUDA, one call per layer: every
    small SDPA call is a kernel launch there (measured launch-bound: 2-3 s a step for any model size);
    FlashAttention's varlen kernel under fp16/bf16, else FlexAttention. On CPU the per-segment loop:
    FlexAttention has no backward there and SDPA's per-segment flash kernel is cheap. Under attention
    dropout the loop too (neither one-call kernel applies it)."""
    name = _forced[-1] if _forced else requested_kernel()
    if name is not None:
        if name == "varlen" and not varlen_segments.usable(query, dropout) and not _forced:
            raise RuntimeError(
                f"{KERNEL_VARIABLE}=varlen, but the varlen kernel cannot attend here ({query.device.type}, "
                f"{query.dtype}, dropout {dropout}): it needs CUDA, fp16/bf16 and flash-attn or torch >= 2.10"
            )
        return name
    if query.device.type != "cuda" or dropout:
        return "loop"
    if "varlen" not in _failed and varlen_segments.usable(query, dropout):
        return "varlen"
    return "flex" if "flex" in available_kernels() and "flex" not in _failed else "loop"


def kernel_at_fault(kernel: str | None, exc: BaseException) -> bool:
    """Whether ``exc``, raised where ``kernel`` attended, is the kernel's failure on this machine (then it is
    passed over for the run): a one-call kernel that ``ALIGNKIT_SEGMENT_KERNEL`` did not ask for, and not out
    of memory (every kernel needs the memory: that is the run's problem)."""
    return kernel not in (None, "loop") and kernel != requested_kernel() and not isinstance(exc, torch.OutOfMemoryError)


def kernel_failed(kernel: str, exc: BaseException, next_kernel=None) -> str | None:
    """Record that ``kernel`` cannot run in this process (``exc``), so :func:`kernel_for` passes it over from
    now on, and say so once on stderr with the kernel that serves instead (``next_kernel()``, when given)."""
    _failed[kernel] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    serving = next_kernel() if next_kernel else None
    instead = f"; the {serving} kernel serves from now on" if serving else "; it is passed over from now on"
    slower = " (one call per segment: slower on a GPU)" if serving == "loop" else ""
    note = f"alignkit: note: the {kernel} segment-attention kernel failed ({_failed[kernel]}){instead}{slower}"
    print(note, file=sys.stderr)
    return serving


def pass_over_serving(exc: BaseException) -> bool:
    """After an update's forward or backward raised ``exc``: whether a one-call kernel served its forward
    and is now passed over for the run (then the caller drops the update's gradients and runs it again).
    A kernel can attend forward and still fail backward: compiled FlexAttention's backward can ask for more
    shared memory than a smaller GPU has. Not when out of memory, nor for a kernel that was asked for."""
    kernel = _serving[0] if _serving else None
    if _forced or kernel in _failed or not kernel_at_fault(kernel, exc):
        return False
    kernel_failed(kernel, exc)
    return True


def kernel_status() -> str:
    """The kernel that served the latest segment-attention forward, and any passed over in this process
    (for benchmarks' reports): "varlen", "flex (varlen failed)", "none" before any forward."""
    served = _serving[0] if _serving else "none"
    return served + (f" ({', '.join(sorted(_failed))} failed)" if _failed else "")


def failed_kernels() -> dict[str, str]:
    """The kernels passed over in this process, each with why (the error's type and first line)."""
    return dict(_failed)


def clear_serving() -> None:
    """Forget which kernel served (at the start of an update, so a failure is blamed on this update's kernel)."""
    _serving.clear()


def passing_over_kernels(work, before_retry=lambda exc: None):
    """``work()`` (a forward and its backward), run again after ``before_retry(exc)`` each time it raised ``exc``
    because a one-call kernel that served its forward failed (:func:`pass_over_serving`); any other failure
    raises (and so does ``before_retry``, to refuse the retry)."""
    while True:
        clear_serving()
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 -- re-raised unless a one-call kernel is to blame
            if not pass_over_serving(exc):
                raise
            before_retry(exc)


class SegmentPlan:
    """The segments of one batch row, read once per forward (not once per layer), with what each kernel
    needs built once: the ``[c, prefix + c]`` masks of later continuations (loop), the block mask (flex),
    the spans (varlen). ``segments`` should be a CPU tensor (collation leaves it there): reading it is then
    no device sync."""

    def __init__(self, segments: torch.Tensor):
        self.blocks = [(row[0], row[1], [c for c in row[2:] if c]) for row in segments.tolist()]
        self._masks: dict[tuple[int, int, torch.device], torch.Tensor] = {}
        self._block_masks: dict[tuple[int, torch.device], object] = {}
        self._layouts: dict[tuple[int, torch.device], object] = {}

    def varlen_layout(self, n: int, device: torch.device):
        """The varlen kernel's spans of this row of ``n`` tokens (built by the first layer, reused)."""
        key = (n, device)
        if key not in self._layouts:
            self._layouts[key] = build_layout(self.blocks, n, device)
        return self._layouts[key]

    def block_mask(self, n: int, device: torch.device):
        """The FlexAttention block mask of this row of ``n`` tokens (built by the first layer, reused)."""
        key = (n, device)
        if key not in self._block_masks:
            self._block_masks[key] = build_block_mask(self.blocks, n, device)
        return self._block_masks[key]

    def mask(self, prefix: int, length: int, device: torch.device) -> torch.Tensor:
        """True where a continuation's token may attend: the whole prefix, then itself causally."""
        key = (prefix, length, device)
        if key not in self._masks:
            own = torch.ones(length, length, dtype=torch.bool, device=device).tril_()
            self._masks[key] = torch.cat([torch.ones(length, prefix, dtype=torch.bool, device=device), own], dim=1)
        return self._masks[key]


def _attend(query, key, value, mask, dropout: float, scaling, gqa: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, is_causal=mask is None, scale=scaling, enable_gqa=gqa
    )


def segment_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    segments: SegmentPlan | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention over ``query``/``key``/``value`` ``[1, heads, N, head_dim]`` segment by segment
    (see the module docstring); plain SDPA when no ``segments`` are given."""
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if torch.is_autocast_enabled(query.device.type):
        # what SDPA does under autocast, done once here for every kernel: under fp32 weights RoPE leaves the
        # query and key in fp32 and the value in bf16; FlashAttention and FlexAttention take one half dtype
        precision = torch.get_autocast_dtype(query.device.type)
        query, key, value = (t.to(precision) for t in (query, key, value))
    gqa = query.shape[1] != key.shape[1]
    kernel = kernel_for(query, dropout)
    while kernel != "loop":
        try:
            if kernel == "varlen":
                out = varlen_segment_attention(
                    query, key, value, segments.varlen_layout(query.shape[2], query.device), scaling
                )
            else:
                mask = segments.block_mask(query.shape[2], query.device)
                out = flex_segment_attention(query, key, value, mask, scaling, gqa).transpose(1, 2).contiguous()
            _serving[:] = [kernel]
            return out, None
        except Exception as exc:  # noqa: BLE001 -- a compiler or kernel this machine lacks: the loop is always there
            if _forced or not kernel_at_fault(kernel, exc):
                raise
            kernel = kernel_failed(kernel, exc, lambda: kernel_for(query, dropout))
    parts = []
    for start, prefix, continuations in segments.blocks:
        end = start + prefix + (continuations[0] if continuations else 0)
        parts.append(
            _attend(query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], None, dropout, scaling, gqa)
        )
        for length in continuations[1:]:
            span = slice(end, end + length)
            keys = torch.cat([key[:, :, start : start + prefix], key[:, :, span]], dim=2)
            values = torch.cat([value[:, :, start : start + prefix], value[:, :, span]], dim=2)
            mask = segments.mask(prefix, length, query.device)
            parts.append(_attend(query[:, :, span], keys, values, mask, dropout, scaling, gqa))
            end += length
    _serving[:] = ["loop"]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(SEGMENT_ATTENTION, sdpa_mask)  # no segments: exactly sdpa's masks

# A stand-in for the mask when segments are given: transformers passes a 4-D mask through untouched, so
# it builds no [N, N] mask the segments make useless; segment_attention_forward never reads it.
NO_MASK = torch.ones(1, 1, 1, 1, dtype=torch.bool)


def uses_segment_attention(model: nn.Module) -> bool:
    """Whether ``model`` (any wrapper) runs attention through :func:`segment_attention_forward`."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == SEGMENT_ATTENTION


def _attention_configs(model: nn.Module) -> list:
    return [m.config for m in model.modules() if getattr(getattr(m, "config", None), "_attn_implementation", None)]


def set_attention(model: nn.Module, name: str) -> None:
    """Point every sub-config of ``model`` at the attention implementation ``name``."""
    for config in _attention_configs(model):
        config._attn_implementation = name


def enable_segment_attention(model: nn.Module, check, max_length: int | None = None) -> bool:
    """Switch an SDPA model to segment attention when ``check(model)`` confirms that it gives the same
    hidden states as each sequence alone; otherwise leave it as it was, with a one-line notice. A model
    with sliding-window attention keeps SDPA unless no sequence (``max_length``) can outgrow the window:
    segments attend over their whole length."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    window = getattr(model.config, "sliding_window", None)
    if window and (max_length is None or max_length > window):
        return False
    set_attention(model, SEGMENT_ATTENTION)
    if check(model):
        return True
    set_attention(model, "sdpa")
    print(
        "alignkit: note: this model's attention layers do not follow one-row segments; padding-free batches "
        "are packed into rows with a mask instead (slower)",
        file=sys.stderr,
    )
    return False


# a probe's row: a shared-prefix block with two continuations and a plain sequence, over three 128-token tiles
PROBE_SEGMENTS = ((0, 130, 40, 50), (220, 150, 0, 0))
PROBE_TOKENS = max(start + sum(lengths) for start, *lengths in PROBE_SEGMENTS)  # 370


def kernel_probe_wanted(device: torch.device) -> bool:
    """Whether :func:`check_kernels_train` probes on ``device``: CUDA, where one-call kernels serve."""
    return device.type == "cuda"


def attention_shape(model: nn.Module) -> tuple[int, int, int, float | None, torch.dtype] | None:
    """(heads, key/value heads, head size, scaling, hidden states' dtype) of ``model``'s segment-attention
    layers, or None when it has none (or none whose shape is read as transformers' attention layers give
    it). The dtype is the input embedding's (a 4-bit model's projections hold integers; its embedding holds
    the compute dtype), else the attention layer's first floating-point weight's."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_attn_implementation", None) != SEGMENT_ATTENTION:
            continue
        if isinstance(getattr(module, "head_dim", None), int) and isinstance(
            getattr(config, "num_attention_heads", None), int
        ):
            heads = config.num_attention_heads
            embedding = next((m.weight.dtype for m in model.modules() if isinstance(m, nn.Embedding)), None)
            dtype = embedding or next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
            kv_heads = getattr(config, "num_key_value_heads", None) or heads
            return heads, kv_heads, module.head_dim, getattr(module, "scaling", None), dtype
    return None


def check_kernels_train(model: nn.Module, device: torch.device, autocast=nullcontext) -> None:
    """Before training on ``device``: the segment-attention kernel a run picks there attends forward and
    backward, on stand-in queries of ``model``'s attention shape and dtype, under the run's ``autocast``.
    A one-call kernel that fails either way is passed over now (compiled FlexAttention's backward can ask
    for more shared memory than a smaller GPU has), as ``TrainingSession.accumulate`` would at the first
    update, but before ``accelerate.prepare`` wraps the model: a distributed run never has to redo an update
    whose gradient reduction has begun. The probe's tensors are its own (no parameter gets a gradient) and
    made without the random generator (a run's randomness is unchanged)."""
    if not kernel_probe_wanted(device):
        return
    shape = attention_shape(model)
    if shape is None:
        return
    heads, kv_heads, head_dim, scaling, dtype = shape
    plan = SegmentPlan(torch.tensor(PROBE_SEGMENTS))

    def stand_in(count: int) -> torch.Tensor:
        values = torch.linspace(-3.0, 3.0, count * PROBE_TOKENS * head_dim, device=device).sin()
        return values.view(1, count, PROBE_TOKENS, head_dim).to(dtype).requires_grad_()

    def forward_backward() -> None:
        with torch.enable_grad():
            with autocast():
                out, _ = segment_attention_forward(
                    None, stand_in(heads), stand_in(kv_heads), stand_in(kv_heads), None, 0.0, scaling, segments=plan
                )
            out.float().sum().backward()

    passing_over_kernels(forward_backward)
