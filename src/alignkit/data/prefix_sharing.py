"""Prefix sharing: a prompt computed once for all the responses scored against it.

A preference pair is laid out as one block ``[prompt, chosen, rejected]``. Positions of every
response continue from the end of the prompt, and a block mask lets each response attend to the
prompt and to itself (causally), never to the other response. The prompt's hidden states are then
computed once per pair instead of once per sequence, forward and backward, for the policy and for the
reference; the log-probs equal the unshared computation (up to float summation order).

The same holds for any item whose sequences all share a prefix and score everything after it: KTO's
completion and its mismatched KL completion, a reward model's chosen and rejected.

Blocks are laid out either all in one row with their ``segments`` (for segment attention, see
``models.segment_attention``: no padding, no mask), or packed first-fit-decreasing into rows
(padding-free) or one per row, with the batch's own 4-D boolean mask ``attention_mask [rows, 1, width,
width]`` (True = may attend) for attention implementations that take one. The
first token of every response is predicted by the prompt's last position, so one position can
predict several targets; scored positions are therefore listed explicitly (``score_positions``,
``score_targets``, ``score_owner``) rather than as a per-position grid.
"""

from __future__ import annotations

import torch

from alignkit.data.packing import pack_rows

Group = tuple[list[int], list[list[int]]]  # (prefix, continuations)


def shared_prefix(slots: list[tuple[list[int], object]]) -> Group | None:
    """``(prefix, continuations)`` when an item's sequences are one prefix plus responses scored
    from their first token; None when there is nothing to share (one sequence, or token masks)."""
    if len(slots) < 2 or not all(isinstance(scored, int) and not isinstance(scored, bool) for _, scored in slots):
        return None
    start = slots[0][1]
    prefix = slots[0][0][:start]
    if any(scored != start or ids[:start] != prefix for ids, scored in slots):
        return None
    return prefix, [ids[start:] for ids, _ in slots]


def _causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril_()


def build_shared_batch(
    groups: list[Group], pad_id: int, padding_free: bool = True, one_row: bool = False
) -> dict[str, torch.Tensor]:
    """One block per item; sequence ``slot * len(groups) + item`` is the item's prefix + its ``slot``-th
    continuation (the order ``SequenceCollator`` uses), so ``sequence_lengths``, ``last_token`` and any
    cached reference values line up with the unshared layout. ``one_row``: every block in one row,
    described by ``segments`` instead of a mask."""
    n_items, n_slots = len(groups), len(groups[0][1])
    for k, (prefix, continuations) in enumerate(groups):
        if not prefix or len(continuations) != n_slots or not all(continuations):
            raise ValueError(f"item {k}: a shared block needs a non-empty prefix and {n_slots} non-empty continuations")
    lengths = [len(prefix) + sum(len(c) for c in continuations) for prefix, continuations in groups]
    if one_row:
        rows = [list(range(n_items))]
    else:
        rows = pack_rows(lengths, max(lengths)) if padding_free else [[k] for k in range(n_items)]
    width = max(sum(lengths[k] for k in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = None if one_row else torch.zeros((len(rows), width, width), dtype=torch.bool)
    segments = []
    n = n_items * n_slots
    sequence_lengths, last_token = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    positions, targets, owners = [], [], []
    for r, row in enumerate(rows):
        offset = 0
        for k in row:
            prefix, continuations = groups[k]
            p = len(prefix)
            input_ids[r, offset : offset + p] = torch.tensor(prefix)
            position_ids[r, offset : offset + p] = torch.arange(p)
            segments.append([offset, p, *(len(c) for c in continuations)])
            if allowed is not None:
                allowed[r, offset : offset + p, offset : offset + p] = _causal(p)
            start = offset + p
            for slot, continuation in enumerate(continuations):
                c, i = len(continuation), slot * n_items + k
                input_ids[r, start : start + c] = torch.tensor(continuation)
                position_ids[r, start : start + c] = torch.arange(p, p + c)
                if allowed is not None:
                    allowed[r, start : start + c, offset : offset + p] = True
                    allowed[r, start : start + c, start : start + c] = _causal(c)
                # token t of the response is predicted by the position before it in its own sequence
                positions.extend(r * width + q for q in [offset + p - 1, *range(start, start + c - 1)])
                targets.extend(continuation)
                owners.extend([i] * c)
                sequence_lengths[i], last_token[i] = p + c, r * width + start + c - 1
                start += c
            offset = start
        if allowed is not None:  # padding sees only itself (no row of the mask is empty), and nothing sees padding
            tail = torch.arange(offset, width)
            allowed[r, tail, tail] = True
    layout = {"segments": torch.tensor(segments, dtype=torch.long)} if one_row else {"attention_mask": allowed[:, None]}
    return {
        **layout,
        "input_ids": input_ids,
        "position_ids": position_ids,
        "score_positions": torch.tensor(positions, dtype=torch.long),
        "score_targets": torch.tensor(targets, dtype=torch.long),
        "score_owner": torch.tensor(owners, dtype=torch.long),
        "sequence_lengths": sequence_lengths,
        "last_token": last_token,
    }
