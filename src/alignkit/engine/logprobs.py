"""The one log-prob engine every trainer uses.

``sequence_logps(model, batch)`` runs the decoder once over all sequences of a batch (chosen and
rejected together), keeps the hidden states only at scored positions, and turns them into token
log-probs chunk by chunk. The full ``[batch, seq, vocab]`` logits tensor never exists: forward and
backward each hold at most ``chunk_size x vocab`` floats of logits at a time (the backward pass
recomputes each chunk's logits instead of storing them).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch import nn

from alignkit.data.collate import scored_positions, to_device
from alignkit.data.prefix_sharing import build_shared_batch
from alignkit.models.segment_attention import (
    NO_MASK,
    SegmentPlan,
    forced_kernel,
    kernel_at_fault,
    kernel_failed,
    kernels_to_check,
    uses_segment_attention,
)


class _ChunkedTokenLogps(torch.autograd.Function):
    """log softmax(h @ W.T)[target] for M rows, computed in chunks of rows.

    Gradients: d/dlogits = g * (onehot(target) - softmax), recomputed per chunk in backward.
    Optional soft-capping (Gemma-2): logits = c * tanh(z / c).

    With a frozen head (LoRA never adapts it), d logp/dh = (onehot - softmax) @ W does not depend on
    the incoming gradient ``g``: the forward computes it while each chunk's logits are at hand and the
    backward only scales it by ``g``. One matrix product over the vocabulary is saved per chunk (the
    logits are not recomputed) and no ``[M, V]`` tensor outlives its chunk.

    The backward runs under the autocast state the forward saw (what ``torch.amp.custom_bwd`` does, for
    any device type): under bf16 autocast the recomputed logits are the forward's bf16 logits, so the
    softmax rebuilt from the forward's log-sum-exp is the forward's own and the gradient is the gradient
    of the forward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, softcap: float, frozen_head: bool):
        ctx.autocast = autocast_state(hidden.device.type)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse_all = torch.empty_like(out)
        direction = torch.empty_like(hidden) if frozen_head else None
        for start in range(0, hidden.shape[0], chunk_size):
            end = start + chunk_size
            logits, tanh = chunk_logits(hidden[start:end], weight, softcap)
            picked = logits.gather(1, targets[start:end, None]).squeeze(1)
            lse, total = exp_shifted_(logits)  # logits now hold exp(logit - row max)
            out[start:end] = picked - lse
            lse_all[start:end] = lse
            if direction is not None:  # d logp/d logits = onehot - softmax, with the softmax at hand
                grad = target_gradient(logits.mul_((-1.0 / total)[:, None]), targets[start:end], 1.0, tanh)
                direction[start:end] = grad.to(hidden.dtype) @ weight
        ctx.chunk_size, ctx.softcap, ctx.frozen_head = chunk_size, softcap, frozen_head
        if frozen_head:
            ctx.save_for_backward(direction)
        else:
            ctx.save_for_backward(hidden, weight, targets, lse_all)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.frozen_head:  # the direction was computed in the forward
            (direction,) = ctx.saved_tensors
            return direction * grad_out[:, None].to(direction.dtype), None, None, None, None, None
        with torch.autocast(**ctx.autocast):
            return _ChunkedTokenLogps._recompute_backward(ctx, grad_out)

    @staticmethod
    def _recompute_backward(ctx, grad_out):
        hidden, weight, targets, lse_all = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            h, g = hidden[start:end], grad_out[start:end].float()
            logits, tanh = chunk_logits(h, weight, ctx.softcap)
            grad_logits = logit_gradient(logits, lse_all[start:end], targets[start:end], g, tanh).to(hidden.dtype)
            if need_hidden:
                grad_hidden[start:end] = grad_logits @ weight
            if need_weight:  # under autocast the product runs in its dtype, as autograd's would
                grad_weight += (grad_logits.T @ h).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def autocast_state(device_type: str) -> dict:
    """``torch.autocast`` keyword arguments that restore the current autocast state of ``device_type``."""
    return {
        "device_type": device_type,
        "enabled": torch.is_autocast_enabled(device_type),
        "dtype": torch.get_autocast_dtype(device_type),
    }


def exp_shifted_(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In place, ``logits`` (fp32 ``[rows, V]``) become ``exp(logit - row max)``; returns each row's
    log-sum-exp and sum of those exponentials. ``torch.logsumexp`` would allocate a second ``[rows, V]``
    buffer (200 MB for 1,024 rows of a 49k vocabulary) and the softmax would take another exp pass."""
    top = logits.amax(-1)
    total = logits.sub_(top[:, None]).exp_().sum(-1)
    return total.log() + top, total


def logit_gradient(logits, lse, targets, g, tanh) -> torch.Tensor:
    """``g * (onehot(targets) - softmax)`` w.r.t. the pre-cap logits of a chunk, computed in place of
    ``logits`` (fp32, ``[rows, V]``); ``tanh`` is the soft-cap's (None without one)."""
    return target_gradient(logits.sub_(lse[:, None]).exp_().mul_(-g[:, None]), targets, g, tanh)


def target_gradient(minus_g_softmax: torch.Tensor, targets, g, tanh) -> torch.Tensor:
    """``g * onehot(targets) - g * softmax`` in place of the second term (``[rows, V]``), through the
    soft-cap's ``tanh`` when there is one."""
    grad = minus_g_softmax
    grad[torch.arange(grad.shape[0], device=grad.device), targets] += g
    if tanh is not None:
        grad.mul_(1.0 - tanh * tanh)
    return grad


def chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, softcap: float):
    """fp32 logits of a chunk of hidden states, soft-capped when ``softcap``; (logits, the tanh for the
    soft-cap's gradient, or None)."""
    logits = (hidden @ weight.T).float()
    if not softcap:
        return logits, None
    tanh = torch.tanh(logits / softcap)
    return tanh * softcap, tanh


def token_logps(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int = 1024, softcap: float = 0.0
) -> torch.Tensor:
    """Log-prob of each target token: ``hidden [M, H]``, ``weight [V, H]``, ``targets [M]`` -> ``[M]`` fp32."""
    frozen_head = torch.is_grad_enabled() and hidden.requires_grad and not weight.requires_grad
    return _ChunkedTokenLogps.apply(hidden, weight, targets, chunk_size, float(softcap or 0.0), frozen_head)


class SequenceLogps(NamedTuple):  # a tuple, so distributed wrappers (ZeRO-3's backward hooks) see its tensors
    """Per-sequence results of :func:`sequence_logps`."""

    logps: torch.Tensor  # [N] summed over each sequence's response tokens (fp32)
    token_counts: torch.Tensor  # [N] response tokens per sequence


def unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model under any PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone_of(model: nn.Module) -> nn.Module:
    """The decoder without its head (``model.model`` for Llama-style models), PEFT-wrapped or not."""
    hf_model = unwrapped(model)
    return getattr(hf_model, hf_model.base_model_prefix)


def last_hidden_states(backbone: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's final hidden states for a padded, padding-free or shared-prefix batch (see
    ``data.collate``). A one-row batch's ``segments`` go to segment attention (no mask is built); a
    shared-prefix batch's 4-D boolean mask goes to SDPA as it is; eager attention adds its mask to the
    scores, so it gets the additive form (0 or the dtype's minimum)."""
    if "segments" in batch:
        if not uses_segment_attention(backbone):
            raise ValueError("a one-row batch needs a model running segment attention (enable_segment_attention)")
        return backbone(
            input_ids=batch["input_ids"],
            attention_mask=NO_MASK.to(batch["input_ids"].device),
            position_ids=batch["position_ids"],
            use_cache=False,
            segments=SegmentPlan(batch["segments"]),
        ).last_hidden_state
    mask = batch.get("attention_mask")  # absent in padding-free batches
    if mask is not None and mask.dim() == 4 and getattr(backbone.config, "_attn_implementation", "sdpa") == "eager":
        dtype = backbone.get_input_embeddings().weight.dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    return backbone(
        input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False
    ).last_hidden_state


def causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Linear, float]:
    """(decoder backbone, output projection, logit soft-cap) of a causal LM, PEFT-wrapped or not."""
    hf_model = unwrapped(model)
    backbone = backbone_of(hf_model)
    head = hf_model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError("output projections with a bias are not supported by the chunked log-prob engine")
    softcap = getattr(hf_model.config, "final_logit_softcapping", None) or 0.0
    return backbone, head, softcap


class ScoredStates(NamedTuple):
    """The decoder's hidden states at a batch's scored positions, and what turns them into log-probs."""

    hidden: torch.Tensor  # [M, H] at each scored position
    targets: torch.Tensor  # [M] the token each position predicts
    owner: torch.Tensor  # [M] the sequence each position belongs to
    head: nn.Linear  # the output projection
    softcap: float  # logit soft-capping (0: none)


def scored_states(model: nn.Module, batch: dict[str, torch.Tensor]) -> ScoredStates:
    """One forward over every sequence of ``batch``, keeping the hidden states only where a response token
    is scored (see ``data.collate.scored_positions``)."""
    backbone, head, softcap = causal_lm_parts(model)
    hidden = last_hidden_states(backbone, batch)
    positions, targets, owner = scored_positions(batch)
    selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    return ScoredStates(selected, targets, owner, head, softcap)


@torch.no_grad()
def token_entropy(hidden: torch.Tensor, weight: torch.Tensor, chunk_size: int, softcap: float) -> torch.Tensor:
    """Entropy of the next-token distribution at each of ``hidden``'s rows (``[M]``, chunked, no grad)."""
    parts = []
    for start in range(0, hidden.shape[0], chunk_size):
        logprobs = chunk_logits(hidden[start : start + chunk_size], weight, softcap)[0].log_softmax(-1)
        parts.append(-(logprobs.exp() * logprobs).sum(-1))
    return torch.cat(parts) if parts else hidden.new_zeros(0)


def sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor], chunk_size: int = 1024) -> SequenceLogps:
    """Summed response log-probs of every sequence in ``batch`` (see ``data.collate``), and their token counts."""
    states = scored_states(model, batch)
    per_token = token_logps(states.hidden, states.head.weight, states.targets, chunk_size, states.softcap)
    owner, n = states.owner, batch["sequence_lengths"].shape[0]
    logps = torch.zeros(n, dtype=torch.float32, device=per_token.device).index_add(0, owner, per_token)
    counts = torch.zeros(n, dtype=torch.long, device=owner.device).index_add_(0, owner, torch.ones_like(owner))
    return SequenceLogps(logps, counts)


class LogProbModel(nn.Module):
    """A causal LM whose forward returns per-sequence response log-probs.

    This wrapper, not the bare LM, is what ``accelerate`` prepares, so distributed wrappers (DDP,
    FSDP) see the whole computation. ``.lm`` is the (possibly PEFT-wrapped) model to save.
    """

    def __init__(self, lm: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size

    def forward(self, batch: dict[str, torch.Tensor]) -> SequenceLogps:
        """Summed response log-probs (and token counts) of the sequences in ``batch``."""
        return sequence_logps(self.lm, batch, self.chunk_size)


@contextmanager
def in_eval_mode(module: nn.Module):
    """``module`` in eval mode (dropout off) for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def same_hidden_states(hidden: torch.Tensor, alone: torch.Tensor, backbone: nn.Module, autocast: bool = False) -> bool:
    """Whether a layout's hidden states are those of each sequence alone, up to rounding: fp16/bf16
    (``backbone``'s weights, or ``autocast``) kernels differ by more than fp32's; a leak by far more."""
    half = autocast or next(backbone.parameters()).dtype in (torch.float16, torch.bfloat16)
    tolerance = 3e-2 if half else 1e-3
    return torch.allclose(hidden.float(), alone.float(), atol=tolerance, rtol=tolerance)


@torch.no_grad()
def supports_prefix_sharing(model: nn.Module) -> bool:
    """Whether ``model``'s attention takes a shared-prefix block mask: the second response of a
    ``[prompt, first, second]`` block must see exactly what ``prompt + second`` sees alone."""
    prompt, first, second = [3, 4, 5], [6, 7], [8, 9, 10]
    with in_eval_mode(backbone_of(model)) as backbone:
        device = next(backbone.parameters()).device
        try:
            shared = build_shared_batch([(prompt, [first, second])], pad_id=0)
            hidden = last_hidden_states(backbone, {k: v.to(device) for k, v in shared.items()})[
                0, len(prompt) + len(first) :
            ]
            alone = backbone(
                input_ids=torch.tensor([prompt + second], device=device), use_cache=False
            ).last_hidden_state[0, len(prompt) :]
        except Exception:  # noqa: BLE001 -- an attention kernel that takes no 4-D mask (or is not installed) fails in its own way
            return False
    return same_hidden_states(hidden, alone, backbone)


@torch.no_grad()
def supports_segments(model: nn.Module) -> bool:
    """Whether one-row segments (a shared-prefix block and a plain sequence, see
    ``models.segment_attention``) give ``model`` the hidden states each sequence has alone, with every
    kernel a run may pick on the model's device (``kernels_to_check``). A one-call kernel that raises (no
    compiler for FlexAttention, a GPU FlashAttention does not support) is passed over from then on and the
    check goes on with the others; the loop raising is the model's failure."""
    prompt, first, second, plain = [3, 4, 5], [6, 7], [8, 9, 10], [11, 12, 13, 14]
    with in_eval_mode(backbone_of(model)) as backbone:
        device = next(backbone.parameters()).device
        shared = build_shared_batch([(prompt, [first, second])], pad_id=0, one_row=True)
        width = shared["input_ids"].shape[1]
        batch = {
            "input_ids": torch.cat([shared["input_ids"], torch.tensor([plain])], dim=1),
            "position_ids": torch.cat([shared["position_ids"], torch.arange(len(plain))[None]], dim=1),
            "segments": torch.tensor([[0, len(prompt), len(first), len(second)], [width, len(plain), 0, 0]]),
        }
        expected = {}  # per precision: the hidden states of each sequence alone
        for kernel in kernels_to_check(device):  # whichever a run may pick there: each must keep segments apart
            half = kernel == "varlen"  # it takes fp16/bf16 only: checked under bf16 autocast, against bf16 alone
            with torch.autocast(device.type, dtype=torch.bfloat16) if half else nullcontext():
                if half not in expected:
                    alone = [
                        backbone(input_ids=torch.tensor([ids], device=device), use_cache=False).last_hidden_state[0]
                        for ids in (prompt + first, prompt + second, plain)
                    ]
                    expected[half] = torch.cat([alone[0], alone[1][len(prompt) :], alone[2]]).float()
                try:
                    with forced_kernel(kernel):
                        hidden = last_hidden_states(backbone, to_device(batch, device))[0]
                except Exception as exc:  # noqa: BLE001 -- a model whose layers do not pass the segments on fails in its own way
                    if not kernel_at_fault(kernel, exc):
                        return False  # the model's failure (or the kernel the user asked for): no segments
                    kernel_failed(kernel, exc)  # a compiler or library this machine lacks: runs pass it over
                    continue
            if not same_hidden_states(hidden, expected[half], backbone, autocast=half):
                return False
    return True


@torch.no_grad()
def supports_padding_free(model: nn.Module) -> bool:
    """Whether ``model`` keeps packed sequences apart when given restarting position ids and no
    attention mask: the second of two packed sequences must see exactly what it sees alone."""
    first, second = [3, 4, 5, 6], [7, 8, 9]
    with in_eval_mode(backbone_of(model)) as backbone:
        device = next(backbone.parameters()).device
        packed = backbone(
            input_ids=torch.tensor([first + second], device=device),
            position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2]], device=device),
            use_cache=False,
        ).last_hidden_state[0, len(first) :]
        alone = backbone(
            input_ids=torch.tensor([second], device=device),
            position_ids=torch.tensor([[0, 1, 2]], device=device),
            use_cache=False,
        ).last_hidden_state[0]
    return same_hidden_states(packed, alone, backbone)
