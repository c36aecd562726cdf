"""Per-token outputs for RL: log-probs of each response token, and optionally a value head's
estimate and the policy's entropy at each of those positions, from one forward pass.

The same batches and the same chunked log-prob kernel as ``engine.logprobs`` (no ``[B, T, V]``
logits tensor); results come back right-padded as ``[N, T]`` with a boolean ``mask``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from alignkit.engine.logprobs import scored_states, token_entropy, token_logps


class TokenOutputs(NamedTuple):  # a tuple, so distributed wrappers (ZeRO-3's backward hooks) see its tensors
    """Per-token results of :func:`token_outputs`, right-padded to the longest response."""

    logps: torch.Tensor  # [N, T] log-prob of each response token (0 off the mask)
    mask: torch.Tensor  # [N, T] bool
    values: torch.Tensor | None = None  # [N, T] value estimate before each token
    entropy: torch.Tensor | None = None  # [N, T] policy entropy at each position (no grad)


def _per_sequence(flat: torch.Tensor, owner: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-token values (each sequence's tokens contiguous and in order, sequences in any
    order) -> right-padded ``[n, T]`` and its mask."""
    order = torch.argsort(owner, stable=True)
    counts = torch.bincount(owner, minlength=n)
    width = int(counts.max()) if n else 0
    column = torch.arange(len(owner), device=owner.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    padded = flat.new_zeros((n, width))
    padded[owner[order], column] = flat[order]
    mask = torch.zeros((n, width), dtype=torch.bool, device=owner.device)
    mask[owner[order], column] = True
    return padded, mask


def token_outputs(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    chunk_size: int = 1024,
    value_head: nn.Module | None = None,
    with_entropy: bool = False,
    temperature: float = 1.0,
) -> TokenOutputs:
    """``temperature``: log-probs (and entropy) of ``logits / temperature``, the distribution rollouts
    were sampled from, so KL estimates and importance ratios refer to it (as TRL does)."""
    states = scored_states(model, batch)
    selected, owner, weight, softcap = states.hidden, states.owner, states.head.weight, states.softcap
    if softcap and temperature != 1.0:
        raise NotImplementedError("sampling temperature with logit soft-capping is not supported; use temperature 1.0")
    n = batch["sequence_lengths"].shape[0]
    values = _per_sequence(value_head(selected.float()).squeeze(-1), owner, n)[0] if value_head is not None else None
    if temperature != 1.0:
        selected = selected / temperature  # (h / T) W^T = logits / T
    logps, mask = _per_sequence(token_logps(selected, weight, states.targets, chunk_size, softcap), owner, n)
    entropy = _per_sequence(token_entropy(selected, weight, chunk_size, softcap), owner, n)[0] if with_entropy else None
    return TokenOutputs(logps, mask, values, entropy)
