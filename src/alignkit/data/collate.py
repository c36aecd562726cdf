"""Collation: sequences -> padded batch whose loss positions are explicit, never inferred from padding.

A batch holds, per row, ``input_ids``, ``attention_mask``, ``position_ids`` (counted from each
sequence's first real token) and, for every position whose *next* token is a response token,
``target_ids`` (that next token) and ``seq_index`` (which sequence it belongs to; -1 elsewhere).
Log-probs are gathered through ``seq_index`` alone, so the padding side cannot change them.
"""
from __future__ import annotations

import torch

from alignkit.data.tokenize import TokenizedPair


def build_sequence_batch(sequences: list[list[int]], response_starts: list[int], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad ``sequences``; token ``response_starts[i]`` onwards of sequence i is scored."""
    n, width = len(sequences), max(len(s) for s in sequences)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    target_ids = torch.zeros((n, width), dtype=torch.long)
    seq_index = torch.full((n, width), -1, dtype=torch.long)
    for i, (ids, start) in enumerate(zip(sequences, response_starts)):
        length = len(ids)
        if not 1 <= start < length:
            raise ValueError(f"sequence {i}: response must start after at least one prompt token and be non-empty (start={start}, length={length})")
        offset = width - length if padding_side == "left" else 0
        tokens = torch.tensor(ids, dtype=torch.long)
        input_ids[i, offset:offset + length] = tokens
        attention_mask[i, offset:offset + length] = 1
        position_ids[i, offset:offset + length] = torch.arange(length)
        # position p predicts token p + 1: score positions start-1 .. length-2
        target_ids[i, offset + start - 1:offset + length - 1] = tokens[start:]
        seq_index[i, offset + start - 1:offset + length - 1] = i
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "target_ids": target_ids,
        "seq_index": seq_index,
    }


class PreferenceCollator:
    """Pairs -> one batch of 2B sequences: chosen 0..B-1, then rejected 0..B-1 (one forward for both).

    Extra per-pair tensors (e.g. cached reference log-probs) pass through as ``[2B]`` tensors.
    """

    def __init__(self, pad_id: int, padding_side: str = "right"):
        self.pad_id, self.padding_side = pad_id, padding_side

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        pairs: list[TokenizedPair] = [item["pair"] for item in items]
        sequences = [p.prompt_ids + p.chosen_ids for p in pairs] + [p.prompt_ids + p.rejected_ids for p in pairs]
        starts = [len(p.prompt_ids) for p in pairs] * 2
        batch = build_sequence_batch(sequences, starts, self.pad_id, self.padding_side)
        if "ref_chosen_logps" in items[0]:
            batch["ref_logps"] = torch.tensor(
                [item["ref_chosen_logps"] for item in items] + [item["ref_rejected_logps"] for item in items],
                dtype=torch.float32,
            )
        return batch
