"""Collation: sequences -> a batch whose loss positions are explicit, never inferred from padding.

A batch holds ``input_ids``, ``position_ids`` (counted from each sequence's first token) and, for
every position whose *next* token is scored, ``target_ids`` (that next token) and ``seq_index``
(which sequence it belongs to; -1 elsewhere), plus ``sequence_lengths`` and ``last_token`` (the
flat index of each sequence's last token, where sequence-level heads such as a reward model read).
Log-probs are gathered through ``seq_index`` alone, so the layout cannot change them.

Which tokens are scored is given per sequence either as an int ``start`` (tokens ``start..`` are
the response) or as a 0/1 mask over the tokens (e.g. only the assistant turns of a conversation).

Two layouts:
- padded (``build_sequence_batch``): one sequence per row, padded to the longest, with an
  ``attention_mask``;
- padding-free (``build_packed_batch``): sequences packed first-fit-decreasing into rows no wider
  than the longest sequence, with no ``attention_mask``; each sequence restarts its
  ``position_ids`` at 0, from which transformers builds a block-diagonal causal mask, so no
  sequence attends to another and almost no compute is spent on padding.
"""

from __future__ import annotations

from itertools import accumulate
from typing import NamedTuple

import torch

from alignkit.data.packing import pack_rows
from alignkit.data.prefix_sharing import build_shared_batch, shared_prefix
from alignkit.data.tokenize import TokenizedPair


def _scored_tokens(i: int, ids: list[int], scored) -> torch.Tensor:
    """Indices (>= 1) of the scored tokens of sequence ``i``."""
    length = len(ids)
    if isinstance(scored, int):
        if not 1 <= scored < length:
            raise ValueError(
                f"sequence {i}: response must start after at least one prompt token and "
                f"be non-empty (start={scored}, length={length})"
            )
        return torch.arange(scored, length)
    if len(scored) != length:
        raise ValueError(f"sequence {i}: loss mask has {len(scored)} entries for {length} tokens")
    tokens = torch.tensor(scored, dtype=torch.bool).nonzero().squeeze(1)
    tokens = tokens[tokens >= 1]  # the first token has no position predicting it
    if len(tokens) == 0:
        raise ValueError(f"sequence {i}: no scored tokens")
    return tokens


class _Layout:
    """Tensors of a batch being filled; ``place`` writes one sequence at (row, offset)."""

    def __init__(self, rows: int, width: int, pad_id: int, n: int, with_mask: bool):
        self.input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        self.position_ids = torch.zeros((rows, width), dtype=torch.long)
        self.target_ids = torch.zeros((rows, width), dtype=torch.long)
        self.seq_index = torch.full((rows, width), -1, dtype=torch.long)
        self.attention_mask = torch.zeros((rows, width), dtype=torch.long) if with_mask else None
        self.last_token = torch.zeros(n, dtype=torch.long)
        self.lengths = torch.zeros(n, dtype=torch.long)
        self.width = width

    def place(self, i: int, ids: list[int], scored, row: int, offset: int) -> None:
        tokens = torch.tensor(ids, dtype=torch.long)
        length = len(ids)
        self.input_ids[row, offset : offset + length] = tokens
        self.position_ids[row, offset : offset + length] = torch.arange(length)
        if self.attention_mask is not None:
            self.attention_mask[row, offset : offset + length] = 1
        scored_tokens = _scored_tokens(i, ids, scored)
        # position p predicts token p + 1
        self.target_ids[row, offset + scored_tokens - 1] = tokens[scored_tokens]
        self.seq_index[row, offset + scored_tokens - 1] = i
        self.last_token[i] = row * self.width + offset + length - 1
        self.lengths[i] = length

    def tensors(self) -> dict[str, torch.Tensor]:
        batch = {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "target_ids": self.target_ids,
            "seq_index": self.seq_index,
            "sequence_lengths": self.lengths,
            "last_token": self.last_token,
        }
        if self.attention_mask is not None:
            batch["attention_mask"] = self.attention_mask
        return batch


def build_sequence_batch(
    sequences: list[list[int]], scored: list, pad_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """One sequence per row, padded on ``padding_side``; ``scored[i]`` is a start index or a mask."""
    width = max(len(s) for s in sequences)
    layout = _Layout(len(sequences), width, pad_id, len(sequences), with_mask=True)
    for i, (ids, which) in enumerate(zip(sequences, scored)):
        layout.place(i, ids, which, i, width - len(ids) if padding_side == "left" else 0)
    return layout.tensors()


def build_packed_batch(
    sequences: list[list[int]], scored: list, pad_id: int, one_row: bool = False
) -> dict[str, torch.Tensor]:
    """Pack ``sequences`` without padding between them (see the module docstring); ``one_row``: all of
    them in one row, described by ``segments`` (start, length) for segment attention."""
    lengths = [len(s) for s in sequences]
    rows = [list(range(len(sequences)))] if one_row else pack_rows(lengths, max(lengths))
    used = max(sum(lengths[i] for i in row) for row in rows)
    layout = _Layout(len(rows), used, pad_id, len(sequences), with_mask=False)
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            layout.place(i, sequences[i], scored[i], r, offset)
            offset += lengths[i]
        # trailing padding forms its own segment (positions restart at 0), so no sequence sees it
        layout.position_ids[r, offset:] = torch.arange(used - offset)
    batch = layout.tensors()
    if one_row:
        starts = accumulate(lengths[:-1], initial=0)
        batch["segments"] = torch.tensor([[start, length] for start, length in zip(starts, lengths)], dtype=torch.long)
    return batch


def scored_positions(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(positions, targets, owner)``: flat indices of the positions whose next token is scored, those
    tokens, and the sequence each belongs to; listed explicitly by shared-prefix batches, read from the
    ``seq_index`` grid otherwise."""
    if "score_positions" in batch:
        return batch["score_positions"], batch["score_targets"], batch["score_owner"]
    seq_index = batch["seq_index"].reshape(-1)
    positions = (seq_index >= 0).nonzero().squeeze(1)
    return positions, batch["target_ids"].reshape(-1).index_select(0, positions), seq_index.index_select(0, positions)


def build_batch(
    sequences: list[list[int]],
    scored: list,
    pad_id: int,
    padding_free: bool = True,
    padding_side: str = "right",
    one_row: bool = False,
) -> dict[str, torch.Tensor]:
    """The padding-free layout (in one row with ``one_row``), or the padded one on ``padding_side``."""
    if padding_free:
        return build_packed_batch(sequences, scored, pad_id, one_row)
    return build_sequence_batch(sequences, scored, pad_id, padding_side)


class SequenceCollator:
    """Base collator: a subclass says which sequences each item contributes, grouped by slot.

    ``slots(item) -> [(ids, scored), ...]`` (the same number of slots for every item). The batch
    holds slot 0 of every item, then slot 1 of every item, and so on; per-item cached reference
    log-probs (``item["ref_logps"]``, one value per slot) pass through in the same order.

    With ``prefix_sharing``, items whose sequences share a prompt (pairs, KTO's completion and KL
    completion) are laid out as one block each, the prompt computed once (``data.prefix_sharing``).
    With ``one_row`` (a model running segment attention, see ``models.segment_attention``), a
    padding-free batch is one row of exactly its real tokens.
    """

    def __init__(
        self,
        pad_id: int,
        padding_free: bool = True,
        padding_side: str = "right",
        prefix_sharing: bool = False,
        one_row: bool = False,
    ):
        self.pad_id, self.padding_free, self.padding_side = pad_id, padding_free, padding_side
        self.prefix_sharing = prefix_sharing
        self.one_row = one_row and padding_free

    def slots(self, item: dict) -> list[tuple[list[int], object]]:
        """The (token ids, what is scored) of each sequence ``item`` contributes, one per slot."""
        raise NotImplementedError

    def signature(self, item: dict) -> list:
        """What identifies an item's sequences (for caches keyed by token ids)."""
        return [[ids, scored] for ids, scored in self.slots(item)]

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """The batch of ``items``: one block per item with a shared prompt where every slot shares it (and
        prefix sharing is on), else each slot's sequences padded or packed; plus scored positions."""
        per_item = [self.slots(item) for item in items]
        groups = [shared_prefix(entry) for entry in per_item] if self.prefix_sharing else [None]
        if all(group is not None for group in groups):
            batch = build_shared_batch(groups, self.pad_id, self.padding_free, self.one_row)
        else:
            sequences = [entry[slot][0] for slot in range(len(per_item[0])) for entry in per_item]
            scored = [entry[slot][1] for slot in range(len(per_item[0])) for entry in per_item]
            batch = build_batch(sequences, scored, self.pad_id, self.padding_free, self.padding_side, self.one_row)
        if "ref_logps" in items[0]:
            batch["ref_logps"] = torch.tensor(
                [item["ref_logps"][slot] for slot in range(len(per_item[0])) for item in items], dtype=torch.float32
            )
        return batch


HOST_KEYS = frozenset({"segments"})  # a layout read on the host (segment attention): moving it costs a sync


def to_device(batch: dict, device) -> dict:
    """The batch with its tensors on ``device`` (other values, and the host-read layout, as they are). The
    scored positions are listed first, on the host: found on the device they would cost a sync per forward."""
    if "seq_index" in batch and "score_positions" not in batch and batch["seq_index"].device.type == "cpu":
        positions, targets, owner = scored_positions(batch)
        batch = {**batch, "score_positions": positions, "score_targets": targets, "score_owner": owner}
    return {k: v.to(device) if isinstance(v, torch.Tensor) and k not in HOST_KEYS else v for k, v in batch.items()}


def collate_to(collate, items: list, device) -> dict:
    """``collate(items)`` with the batch's tensors on ``device``: how every caller builds a batch."""
    return to_device(collate(items), device)


def halves(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot 0 and slot 1 of a two-slot batch's per-sequence values (see :class:`SequenceCollator`)."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


class ChosenRejected(NamedTuple):
    """Per-sequence values of a pair batch by role, as :class:`PreferenceCollator` lays them out."""

    chosen: torch.Tensor
    rejected: torch.Tensor

    @classmethod
    def split(cls, values: torch.Tensor) -> ChosenRejected:
        """The chosen and rejected halves of a [2B, ...] tensor of a pair batch."""
        return cls(*halves(values))


class PreferenceCollator(SequenceCollator):
    """Pairs -> one batch of 2B sequences: chosen 0..B-1, then rejected 0..B-1 (one forward for both)."""

    def slots(self, item: dict) -> list[tuple[list[int], object]]:
        """A pair's two sequences: prompt + chosen, prompt + rejected (scored from the prompt's end)."""
        pair: TokenizedPair = item["pair"]
        start = len(pair.prompt_ids)
        return [(pair.prompt_ids + pair.chosen_ids, start), (pair.prompt_ids + pair.rejected_ids, start)]
