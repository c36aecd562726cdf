"""SFT data: conversations (``messages``), ``prompt``/``completion`` or plain ``text`` rows, validated,
then tokenized with a loss mask covering only what the assistant says.

* conversational: ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}, ...]}``: every
  assistant turn is trained on (its text and end-of-turn token), nothing else;
* prompt/completion: ``{"prompt": "..." or [messages], "completion": "..." or [assistant message]}``:
  the completion (plus EOS) is trained on;
* plain text (TRL's language-modelling rows): ``{"text": "..."}``: every token (plus EOS) is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.data.collate import SequenceCollator, build_batch, pack_rows
from alignkit.data.preference import (
    Messages,
    check_fields,
    check_messages,
    validate_records,
)
from alignkit.data.records import FaultCollector, Record, read_records
from alignkit.data.tokenize import TokenizedRows, prompt_limit, prompt_token_ids, response_token_ids
from alignkit.errors import AlignkitError


@dataclass(frozen=True)
class SFTExample:
    """One SFT row: a conversation (``messages``), a prompt and its completion, or plain text (``prompt``
    None, the text in ``completion``)."""

    messages: Messages | None  # the conversational form
    prompt: str | Messages | None  # the prompt/completion form
    completion: str | None
    where: str


def load_sft_data(source: str, split: str = "train", fields: dict | None = None) -> list[SFTExample]:
    """Validated SFT rows (``messages``, ``prompt``/``completion``, or ``text``)."""
    return validate_records(read_records(source, split, fields), str(source), _validate_row)


def _validate_row(record: Record, faults: FaultCollector) -> SFTExample | None:
    row, where = record.data, record.where
    if not isinstance(row, dict) or not ("messages" in row or "prompt" in row or "completion" in row or "text" in row):
        faults.add(where, None, "expected an object with 'messages', with 'prompt' and 'completion', or with 'text'")
        return None
    if "text" in row and not ("messages" in row or "prompt" in row or "completion" in row):
        if not isinstance(row["text"], str) or not row["text"].strip():
            faults.add(where, "text", f"expected non-empty text, got {row['text']!r}"[:200])
            return None
        return SFTExample(None, None, row["text"], where)  # plain text: every token is trained on
    if "messages" in row:
        if not isinstance(row["messages"], list):
            faults.add(
                where,
                "messages",
                f"expected a list of {{role, content}} messages, got {type(row['messages']).__name__}",
            )
            return None
        messages = check_messages(row["messages"], where, "messages", faults)
        if messages is None:
            return None
        if not any(m["role"] == "assistant" for m in messages):
            faults.add(where, "messages", "has no assistant message to train on")
            return None
        return SFTExample(messages, None, None, where)
    before = faults.total
    values = check_fields(
        row, where, faults, ("prompt", "completion"), "each row needs prompt and completion, or messages"
    )
    if faults.total > before:
        return None
    return SFTExample(None, values["prompt"], values["completion"], where)


def conversation_tokens(tokenizer, messages: Messages) -> tuple[list[int], list[int]]:
    """Token ids of the templated conversation and a 0/1 mask of the assistant turns' tokens.

    Each assistant turn's character span is found by rendering the conversation up to the turn
    with and without it; tokens are then marked through the tokenizer's offset mapping.
    """
    if not tokenizer.chat_template:
        raise AlignkitError(
            "conversational SFT data ('messages') needs a tokenizer with a chat template; use prompt/completion rows"
        )
    if not tokenizer.is_fast:
        raise AlignkitError("conversational SFT data needs a fast tokenizer (for offset mappings)")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True) if k else ""
        through = tokenizer.apply_chat_template(messages[: k + 1], tokenize=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise AlignkitError(
                "the chat template does not render conversations prefix-consistently; use prompt/completion rows"
            )
        spans.append((len(before), len(through.rstrip())))  # the turn's text and end-of-turn token
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(lo <= start < hi for lo, hi in spans)) for start, _ in encoded["offset_mapping"]]
    return encoded["input_ids"], mask


def sft_rows(
    examples: list[SFTExample],
    tokenizer,
    max_length: int,
    max_prompt_length: int | None,
    apply_chat_template: bool = True,
) -> TokenizedRows:
    """Items ``{"ids", "mask"}`` cut to ``max_length`` (the mask marks assistant tokens); a row with no
    trainable token left after truncation is dropped and counted."""
    rows = TokenizedRows([])
    for example in examples:
        if example.messages is not None:
            ids, mask = conversation_tokens(tokenizer, example.messages)
            rows.add_lengths(mask.index(1) if 1 in mask else len(ids), len(ids))
        elif example.prompt is None:  # plain text, as TRL's language-modelling rows: BOS (if any), text, EOS
            start = tokenizer("", add_special_tokens=True)["input_ids"]
            ids = start + response_token_ids(tokenizer, example.completion)
            mask = [0] * len(start) + [1] * (len(ids) - len(start))
            rows.add_lengths(len(start), len(ids))
        else:
            prompt = prompt_token_ids(tokenizer, example.prompt, apply_chat_template)
            completion = response_token_ids(tokenizer, example.completion)
            rows.add_lengths(len(prompt), len(prompt) + len(completion))
            prompt = prompt[-prompt_limit(max_length, max_prompt_length) :]
            ids, mask = prompt + completion, [0] * len(prompt) + [1] * len(completion)
        ids, mask = ids[:max_length], mask[:max_length]
        if sum(mask[1:]) == 0:
            rows.dropped += 1
            continue
        rows.items.append({"ids": ids, "mask": mask})
    return rows


def tokenize_sft(
    examples: list[SFTExample],
    tokenizer,
    max_length: int,
    max_prompt_length: int | None,
    apply_chat_template: bool = True,
) -> tuple[list[dict], int]:
    """(items, rows dropped) of :func:`sft_rows`."""
    rows = sft_rows(examples, tokenizer, max_length, max_prompt_length, apply_chat_template)
    return rows.items, rows.dropped


def pack_examples(items: list[dict], max_length: int) -> list[dict]:
    """Packing: group examples (first-fit decreasing) into bins of at most ``max_length`` tokens.
    Each bin is one training item; sequences stay separate (positions restart, no cross-attention)."""
    bins = pack_rows([len(item["ids"]) for item in items], max_length)
    return [{"sequences": [items[i] for i in sorted(row)]} for row in bins]


class SFTCollator(SequenceCollator):
    """Examples (or packed bins of examples) -> one batch; the loss mask marks assistant tokens."""

    def __call__(self, items: list[dict]) -> dict:
        """The batch of ``items`` (packed bins contribute each of their sequences); the mask marks trained tokens."""
        sequences = [seq for item in items for seq in item.get("sequences", [item])]
        return build_batch(
            [s["ids"] for s in sequences],
            [s["mask"] for s in sequences],
            self.pad_id,
            self.padding_free,
            self.padding_side,
            self.one_row,
        )
