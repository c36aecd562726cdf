"""KTO data: unpaired ``prompt``/``completion``/``label`` rows (label true = desirable), or paired
``prompt``/``chosen``/``rejected`` rows, each of which becomes one desirable and one undesirable row.

Each example is also given a mismatched completion (another example's, fixed at load time by a
seeded rotation), from which KTO estimates its KL reference point.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

import torch

from alignkit.data.collate import SequenceCollator, halves
from alignkit.data.preference import (
    Messages,
    check_fields,
    validate_pair_row,
    validate_records,
)
from alignkit.data.records import FaultCollector, Record, read_records
from alignkit.data.tokenize import TokenizedRows, prompt_token_ids, response_token_ids, truncate_pair


@dataclass(frozen=True)
class KTOExample:
    """One unpaired KTO row: a prompt, a completion, and whether it is desirable."""

    prompt: str | Messages
    completion: str
    desirable: bool
    where: str


def load_kto_data(source: str, split: str = "train", fields: dict | None = None) -> list[KTOExample]:
    """Validated KTO rows (prompt/completion/label, or pairs split into one desirable and one undesirable row)."""
    return validate_records(read_records(source, split, fields), str(source), _validate_row)


# a label as JSON, CSV or a number column writes it, read through str(): true/false in any case (str(True) is "True",
# a sheet's TRUE), 1/0, and 1.0/0.0 (pandas writes an int column with gaps as floats, and exports them as "1.0")
LABELS = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}


def _validate_row(record: Record, faults: FaultCollector) -> KTOExample | list[KTOExample] | None:
    row, where = record.data, record.where
    if isinstance(row, dict) and "chosen" in row and "completion" not in row:
        pair = validate_pair_row(record, faults)
        if pair is None:
            return None
        return [KTOExample(pair.prompt, pair.chosen, True, where), KTOExample(pair.prompt, pair.rejected, False, where)]
    if not isinstance(row, dict):
        faults.add(where, None, f"expected an object with prompt/completion/label, got {type(row).__name__}")
        return None
    before = faults.total
    values = check_fields(
        row,
        where,
        faults,
        ("prompt", "completion"),
        "each row needs prompt, completion and label; or prompt, chosen and rejected",
    )
    given = row.get("label")
    label = LABELS.get(str(given).lower())  # str(1.0) == "1.0"; NaN, 2 and "yes" are not labels
    if label is None:
        faults.add(where, "label", f"expected true (desirable) or false (undesirable), got {given!r}")
    if faults.total > before:
        return None
    return KTOExample(values["prompt"], values["completion"], label, where)


def require_kl_partners(examples: list) -> None:
    """KTO's KL estimate pairs each prompt with another example's completion: at least two are needed."""
    if len(examples) < 2:
        raise ValueError(
            "KTO needs at least 2 examples (the KL estimate pairs prompts with other examples' completions)"
        )


def kto_rows(
    examples: list[KTOExample],
    tokenizer,
    max_length: int,
    max_prompt_length: int | None,
    apply_chat_template: bool = True,
    seed: int = 0,
) -> TokenizedRows:
    """Items ``{"prompt", "completion", "kl_completion", "desirable"}`` (token ids): each row's completion and,
    for the KL estimate, another row's (a seeded derangement; see :func:`require_kl_partners`), fitted like a pair."""
    prompts = [prompt_token_ids(tokenizer, e.prompt, apply_chat_template) for e in examples]
    completions = [response_token_ids(tokenizer, e.completion) for e in examples]
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    partner = {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}
    rows = TokenizedRows([])
    for i, example in enumerate(examples):
        fitted = truncate_pair(prompts[i], completions[i], completions[partner[i]], max_length, max_prompt_length)
        rows.add_lengths(len(prompts[i]), len(prompts[i]) + len(completions[i]))
        rows.items.append(
            {
                "prompt": fitted.prompt_ids,
                "completion": fitted.chosen_ids,
                "kl_completion": fitted.rejected_ids,
                "desirable": example.desirable,
            }
        )
    return rows


def tokenize_kto(
    examples: list[KTOExample],
    tokenizer,
    max_length: int,
    max_prompt_length: int | None,
    apply_chat_template: bool = True,
    seed: int = 0,
) -> list[dict]:
    """The items of :func:`kto_rows`."""
    require_kl_partners(examples)
    return kto_rows(examples, tokenizer, max_length, max_prompt_length, apply_chat_template, seed).items


class CompletionAndKL(NamedTuple):
    """Per-sequence values of a KTO batch by role, as :class:`KTOCollator` lays them out: each row's
    (prompt, completion), then its mismatched (prompt, KL completion)."""

    completion: torch.Tensor
    kl: torch.Tensor

    @classmethod
    def split(cls, values: torch.Tensor) -> CompletionAndKL:
        """The completion and KL halves of a [2B, ...] tensor of a KTO batch."""
        return cls(*halves(values))


class KTOCollator(SequenceCollator):
    """Batch of 2B sequences: the B (prompt, completion) pairs, then the B mismatched KL pairs."""

    def slots(self, item: dict):
        """A row's two sequences: prompt + completion, prompt + the KL completion."""
        start = len(item["prompt"])
        return [(item["prompt"] + item["completion"], start), (item["prompt"] + item["kl_completion"], start)]

    def __call__(self, items: list[dict]) -> dict:
        """The batch of ``items`` plus each row's ``desirable`` flag."""
        batch = super().__call__(items)
        batch["desirable"] = torch.tensor([item["desirable"] for item in items], dtype=torch.bool)
        return batch
