"""Collation: sequences -> a batch whose loss positions are explicit, never inferred from padding.

A batch holds ``input_ids``, ``position_ids`` (counted from each sequence's first token) and, for
every position whose *next* token is a response token, ``target_ids`` (that next token) and
``seq_index`` (which sequence it belongs to; -1 elsewhere), plus ``sequence_lengths`` (one entry
per sequence). Log-probs are gathered through ``seq_index`` alone, so the layout cannot change them.

Two layouts:
- padded (``build_sequence_batch``): one sequence per row, padded to the longest, with an
  ``attention_mask``;
- padding-free (``build_packed_batch``): sequences packed first-fit-decreasing into rows no wider
  than the longest sequence, with no ``attention_mask``; each sequence restarts its
  ``position_ids`` at 0, from which transformers builds a block-diagonal causal mask, so no
  sequence attends to another and almost no compute is spent on padding.
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
        "sequence_lengths": torch.tensor([len(s) for s in sequences], dtype=torch.long),
    }


def pack_rows(lengths: list[int], width: int) -> list[list[int]]:
    """First-fit decreasing: indices of sequences grouped into rows holding at most ``width`` tokens."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        slot = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            free.append(width - lengths[i])
        else:
            rows[slot].append(i)
            free[slot] -= lengths[i]
    return rows


def build_packed_batch(sequences: list[list[int]], response_starts: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pack ``sequences`` without padding between them (see the module docstring)."""
    lengths = [len(s) for s in sequences]
    width = max(lengths)
    rows = pack_rows(lengths, width)
    used = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), used), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), used), dtype=torch.long)
    target_ids = torch.zeros((len(rows), used), dtype=torch.long)
    seq_index = torch.full((len(rows), used), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            ids, start, length = sequences[i], response_starts[i], lengths[i]
            if not 1 <= start < length:
                raise ValueError(f"sequence {i}: response must start after at least one prompt token and be non-empty (start={start}, length={length})")
            tokens = torch.tensor(ids, dtype=torch.long)
            input_ids[r, offset:offset + length] = tokens
            position_ids[r, offset:offset + length] = torch.arange(length)
            target_ids[r, offset + start - 1:offset + length - 1] = tokens[start:]
            seq_index[r, offset + start - 1:offset + length - 1] = i
            offset += length
        # trailing padding forms its own segment (positions restart at 0), so no sequence sees it
        position_ids[r, offset:] = torch.arange(used - offset)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "target_ids": target_ids,
        "seq_index": seq_index,
        "sequence_lengths": torch.tensor(lengths, dtype=torch.long),
    }


def build_batch(sequences: list[list[int]], response_starts: list[int], pad_id: int, padding_free: bool = True, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """The padding-free layout, or the padded one on ``padding_side``."""
    if padding_free:
        return build_packed_batch(sequences, response_starts, pad_id)
    return build_sequence_batch(sequences, response_starts, pad_id, padding_side)


class PreferenceCollator:
    """Pairs -> one batch of 2B sequences: chosen 0..B-1, then rejected 0..B-1 (one forward for both).

    Extra per-pair tensors (e.g. cached reference log-probs) pass through as ``[2B]`` tensors.
    """

    def __init__(self, pad_id: int, padding_free: bool = True, padding_side: str = "right"):
        self.pad_id, self.padding_free, self.padding_side = pad_id, padding_free, padding_side

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        pairs: list[TokenizedPair] = [item["pair"] for item in items]
        sequences = [p.prompt_ids + p.chosen_ids for p in pairs] + [p.prompt_ids + p.rejected_ids for p in pairs]
        starts = [len(p.prompt_ids) for p in pairs] * 2
        batch = build_batch(sequences, starts, self.pad_id, self.padding_free, self.padding_side)
        if "ref_chosen_logps" in items[0]:
            batch["ref_logps"] = torch.tensor(
                [item["ref_chosen_logps"] for item in items] + [item["ref_rejected_logps"] for item in items],
                dtype=torch.float32,
            )
        return batch
