"""Preference pairs: validate every row of prompt/chosen/rejected before any training starts.

Accepted forms (TRL's conventions):

* standard:        ``{"prompt": "...", "chosen": "...", "rejected": "..."}``
* conversational:  ``{"prompt": [{"role": "user", "content": "..."}],
                     "chosen": [{"role": "assistant", "content": "..."}], "rejected": [...]}``
* implicit prompt: ``{"chosen": [...whole conversation...], "rejected": [...]}``: the shared
  leading messages become the prompt.

Extra fields are kept out of the way (ignored). Every fault is reported with file:line and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignkit.data.records import FaultCollector, Record, read_records
from alignkit.errors import AlignkitError

ROLES = ("system", "user", "assistant", "tool")
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PreferenceExample:
    """One validated pair. ``prompt`` is plain text or a list of chat messages."""

    prompt: str | Messages
    chosen: str
    rejected: str
    where: str
    margin: float | None = None  # optional: how much better chosen is (reward-model margin loss)


def load_preference_data(source: str, split: str = "train", fields: dict | None = None) -> list[PreferenceExample]:
    """Read and validate ``source`` (``fields``: see :func:`read_records`); raises DataValidationError
    listing every fault (exit status 2)."""
    records = read_records(source, split, fields)
    return validate_preference_records(records, str(source))


def validate_preference_records(records: list[Record], source: str) -> list[PreferenceExample]:
    """Validated preference examples from read records; every fault is collected, then raised together."""
    return validate_records(records, source, validate_pair_row)


def validate_records(records: list[Record], source: str, validate_row) -> list:
    """Run ``validate_row(record, faults) -> example | list of examples | None`` over every row;
    raise once with every fault (file:line, field) or return the examples."""
    faults = FaultCollector(source)
    examples = []
    for record in records:
        example = validate_row(record, faults)
        if isinstance(example, list):
            examples.extend(example)
        elif example is not None:
            examples.append(example)
    faults.raise_if_any()
    if not examples:
        raise AlignkitError(f"{source}: contains no rows")
    return examples


def validate_pair_row(record: Record, faults: FaultCollector) -> PreferenceExample | None:
    """One row as a :class:`PreferenceExample` (explicit prompt, or TRL's implicit prompt in conversations
    or plain text), or None after recording its faults."""
    row, where = record.data, record.where
    if not isinstance(row, dict):
        faults.add(where, None, f"expected an object with prompt/chosen/rejected, got {type(row).__name__}")
        return None
    before = faults.total
    if "prompt" not in row and isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list):
        row = _split_implicit_prompt(row, where, faults)
        if row is None:
            return None
    elif "prompt" not in row and isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str):
        row = _split_implicit_text_prompt(row, where, faults)
        if row is None:
            return None
    values = check_fields(
        row, where, faults, ("prompt", "chosen", "rejected"), "each row needs prompt, chosen and rejected"
    )
    if faults.total > before:
        return None
    prompt, chosen, rejected = values["prompt"], values["chosen"], values["rejected"]
    if chosen == rejected:
        faults.add(where, "rejected", "identical to chosen (a pair must differ to teach a preference)")
        return None
    margin = row.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        faults.add(where, "margin", f"expected a number, got {margin!r}")
        return None
    return PreferenceExample(
        prompt=prompt, chosen=chosen, rejected=rejected, where=where, margin=None if margin is None else float(margin)
    )


def _split_implicit_prompt(row: dict, where: str, faults: FaultCollector) -> dict | None:
    chosen, rejected = row["chosen"], row["rejected"]
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        faults.add(where, "prompt", "missing, and chosen/rejected share no leading messages to use as the prompt")
        return None
    return {**row, "prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def _split_implicit_text_prompt(row: dict, where: str, faults: FaultCollector) -> dict | None:
    """TRL's implicit prompt in plain text (Anthropic HH's "Human: ... Assistant: ..." transcripts): the
    shared beginning up to the last whitespace before the answers part, which starts each response."""
    chosen, rejected = row["chosen"], row["rejected"]
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    cut = max((i for i in range(shared) if chosen[i].isspace()), default=0)
    if not chosen[:cut].strip():
        faults.add(where, "prompt", "missing, and chosen/rejected share no leading words to use as the prompt")
        return None
    return {**row, "prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}


def check_fields(row: dict, where: str, faults: FaultCollector, fields: tuple[str, ...], hint: str) -> dict[str, Any]:
    """Check each of ``fields`` (the first is the prompt, the rest responses) is present and valid;
    return the valid values, recording a fault for each missing or bad one."""
    values = {}
    for field in fields:
        if row.get(field) is None:
            faults.add(where, field, f"missing ({hint})")
        else:
            values[field] = check_content(row[field], where, field, faults, response=field != fields[0])
    return values


def check_content(value: Any, where: str, field: str, faults: FaultCollector, response: bool) -> Any:
    """Return the text (responses) or text/messages (prompt); record faults and return None if bad."""
    if isinstance(value, str):
        if not value.strip():
            faults.add(where, field, "empty text")
            return None
        return value
    if isinstance(value, list):
        messages = check_messages(value, where, field, faults)
        if messages is None:
            return None
        if not response:
            return messages
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            roles = [m["role"] for m in messages]
            faults.add(where, field, f"expected exactly one assistant message, got roles {roles}")
            return None
        return messages[0]["content"]
    faults.add(where, field, f"expected a string or a list of {{role, content}} messages, got {type(value).__name__}")
    return None


def check_messages(value: list, where: str, field: str, faults: FaultCollector) -> Messages | None:
    """A list of chat messages, checked (roles, non-empty text); None after recording its faults."""
    if not value:
        faults.add(where, field, "empty list of messages")
        return None
    messages, ok = [], True
    for i, message in enumerate(value):
        label = f"{field}[{i}]"
        if not isinstance(message, dict):
            faults.add(where, label, f"expected an object with role and content, got {type(message).__name__}")
            ok = False
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            faults.add(where, f"{label}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
            ok = False
        if not isinstance(content, str):
            faults.add(where, f"{label}.content", f"expected a string, got {type(content).__name__}")
            ok = False
        elif not content.strip():
            faults.add(where, f"{label}.content", "empty text")
            ok = False
        if ok:
            messages.append({"role": role, "content": content})
    return messages if ok else None
