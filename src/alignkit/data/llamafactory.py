"""LLaMA-Factory's dataset formats, read as alignkit's rows.

A row in LLaMA-Factory's **alpaca** form (``instruction``, optional ``input``, ``system`` and ``history``,
then ``output``, or ``chosen``/``rejected``, or ``output`` with a ``kto_tag``) or its **sharegpt** form
(``conversations`` of ``{"from", "value"}`` or ``{"role", "content"}`` messages, optional ``system``,
then ``chosen``/``rejected`` messages or a ``kto_tag``) becomes alignkit's conversational row, as
LLaMA-Factory's own converter reads it:

* the prompt is the system message, the history's turns and the user's ``instruction`` and ``input``
  joined by a newline (alpaca), or every message before the answer (sharegpt);
* with ``chosen``/``rejected``: a preference pair; with ``kto_tag``: a KTO row (``completion`` and
  ``label``); otherwise a conversation (``messages``, every assistant turn trained on, the history's
  included, as LLaMA-Factory does) whose ``prompt`` is what the RL commands read.

A row is read this way only when it has neither ``prompt`` nor ``messages`` (alignkit's own fields).
Rows alignkit already reads (``{"text": ...}``, OpenAI-style ``messages``) are left as they are.

A ``dataset`` name in a ``dataset_info.json`` is found by :mod:`alignkit.peer_names.llamafactory_datasets`.
"""

from __future__ import annotations

from typing import Any

# the value of a sharegpt message's role key -> alignkit's role (LLaMA-Factory's default tags, and OpenAI's)
ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",  # a tool call the assistant makes (its JSON as the text)
    "function": "assistant",
    "observation": "tool",
    "tool": "tool",
    "system": "system",
}
MESSAGE_KEYS = (("from", "value"), ("role", "content"))  # a sharegpt message's role and text keys
ALPACA_FIELDS = ("instruction", "input", "output", "system", "history", "chosen", "rejected", "kto_tag")
SHAREGPT_FIELDS = ("conversations", "system", "tools", "chosen", "rejected", "kto_tag")


class RowFault(ValueError):
    """What is wrong with a row, and in which field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def is_llamafactory_row(row: Any) -> bool:
    """Whether ``row`` is in LLaMA-Factory's alpaca or sharegpt form (and not in alignkit's own)."""
    if not isinstance(row, dict) or "prompt" in row or "messages" in row:
        return False
    return "instruction" in row or isinstance(row.get("conversations"), list)


def convert_row(row: dict) -> dict:
    """``row`` (alpaca or sharegpt) as alignkit's row; raises :class:`RowFault` naming the bad field."""
    if "instruction" in row:
        prompt, answer = _alpaca_prompt(row), row.get("output")
        extra = {key: value for key, value in row.items() if key not in ALPACA_FIELDS}
    else:
        prompt, answer = _sharegpt_split(row, _sharegpt_messages(row))
        extra = {key: value for key, value in row.items() if key not in SHAREGPT_FIELDS}
    if "chosen" in row or "rejected" in row:
        return {**extra, "prompt": prompt, "chosen": _text(row.get("chosen")), "rejected": _text(row.get("rejected"))}
    if isinstance(answer, list) and len(answer) == 2 and "kto_tag" not in row:  # older pairs: output [chosen, rejected]
        return {**extra, "prompt": prompt, "chosen": answer[0], "rejected": answer[1]}
    if "kto_tag" in row:
        if not isinstance(row["kto_tag"], bool):
            raise RowFault("kto_tag", f"expected true or false, got {row['kto_tag']!r}")
        return {**extra, "prompt": prompt, "completion": answer, "label": row["kto_tag"]}
    if answer is None:  # prompts only (the RL commands)
        return {**extra, "prompt": prompt}
    return {**extra, "prompt": prompt, "messages": [*prompt, {"role": "assistant", "content": answer}]}


def _text(value: Any) -> Any:
    """A sharegpt answer message's text ({"from": "gpt", "value": ...}); anything else as it is."""
    if isinstance(value, dict):
        for _, content in MESSAGE_KEYS:
            if content in value:
                return value[content]
    return value


def _alpaca_prompt(row: dict) -> list[dict]:
    prompt = _system_message(row)
    history = row.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn) for turn in history
    ):
        raise RowFault("history", "expected a list of [instruction, response] pairs of strings")
    for question, answer in history:
        prompt += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    parts = []
    for field in ("instruction", "input"):
        value = row.get(field)
        if value is not None and not isinstance(value, str):
            raise RowFault(field, f"expected a string, got {type(value).__name__}")
        if value:
            parts.append(value)
    if not parts:
        raise RowFault("instruction", "empty text (with no input either)")
    return [*prompt, {"role": "user", "content": "\n".join(parts)}]  # LLaMA-Factory's "instruction\ninput"


def _system_message(row: dict) -> list[dict]:
    system = row.get("system")
    if system is None or system == "":
        return []
    if not isinstance(system, str):
        raise RowFault("system", f"expected a string, got {type(system).__name__}")
    return [{"role": "system", "content": system}]


def _sharegpt_messages(row: dict) -> list[dict]:
    messages = []
    for i, message in enumerate(row["conversations"]):
        label = f"conversations[{i}]"
        keys = next((pair for pair in MESSAGE_KEYS if isinstance(message, dict) and set(pair) <= set(message)), None)
        if keys is None:
            raise RowFault(label, "expected a message {from, value} (or {role, content})")
        role = ROLE_NAMES.get(message[keys[0]])
        if role is None:
            known = ", ".join(ROLE_NAMES)
            raise RowFault(f"{label}.{keys[0]}", f"unknown role {message[keys[0]]!r} (expected one of {known})")
        messages.append({"role": role, "content": message[keys[1]]})
    if not (messages and messages[0]["role"] == "system"):
        messages = _system_message(row) + messages
    return messages


def _sharegpt_split(row: dict, messages: list[dict]) -> tuple[list, Any]:
    """(prompt, answer): every message, none (pairs, prompts); or all but the last, the last assistant
    message's text."""
    if "chosen" in row or "rejected" in row:
        return messages, None
    if not messages or messages[-1]["role"] != "assistant":
        if "kto_tag" in row:
            raise RowFault("conversations", "a KTO row's conversation must end with the assistant's answer")
        return messages, None  # a prompt only
    if len(messages) == 1 or messages[-2]["role"] == "system":
        raise RowFault("conversations", "has an answer but nothing before it to answer")
    return messages[:-1], messages[-1]["content"]
