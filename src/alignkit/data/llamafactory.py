"""LLaMA-Factory's dataset formats, read as alignkit's rows, and its ``dataset_info.json``.

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

:func:`find_dataset` looks a LLaMA-Factory ``dataset`` name up in ``dataset_dir/dataset_info.json``:
its file (or hub id) and its ``columns`` (as ``data_fields``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignkit.errors import ConfigError

if TYPE_CHECKING:  # records.py reads rows through this module
    from alignkit.data.records import FaultCollector

# the value of a sharegpt message's role key -> alignkit's role (LLaMA-Factory's default tags, and OpenAI's)
ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",  # a tool call the assistant makes (its JSON as the text)
    "observation": "tool",
    "tool": "tool",
    "system": "system",
}
ALPACA_FIELDS = ("instruction", "input", "output", "system", "history", "chosen", "rejected", "kto_tag")
SHAREGPT_FIELDS = ("conversations", "system", "tools", "chosen", "rejected", "kto_tag")
# dataset_info.json's column roles -> the row field alignkit reads them from (alpaca, sharegpt)
COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": "history",
    "system": "system",
    "chosen": "chosen",
    "rejected": "rejected",
    "kto_tag": "kto_tag",
    "messages": "conversations",
    "tools": "tools",
}
# the tags alignkit reads in sharegpt messages (LLaMA-Factory's defaults, and the OpenAI form's)
DEFAULT_TAGS = {
    "role_tag": {"from", "role"},
    "content_tag": {"value", "content"},
    "user_tag": {"human", "user"},
    "assistant_tag": {"gpt", "assistant"},
    "observation_tag": {"observation", "tool"},
    "function_tag": {"function_call", "function"},
    "system_tag": {"system"},
}


def is_llamafactory_row(row: Any) -> bool:
    """Whether ``row`` is in LLaMA-Factory's alpaca or sharegpt form (and not in alignkit's own)."""
    if not isinstance(row, dict) or "prompt" in row or "messages" in row:
        return False
    return "instruction" in row or isinstance(row.get("conversations"), list)


def convert_row(row: dict, where: str, faults: FaultCollector) -> dict | None:
    """``row`` (alpaca or sharegpt) as alignkit's row; None after recording its faults."""
    before = faults.total
    if "instruction" in row:
        prompt = _alpaca_prompt(row, where, faults)
        extra = {key: value for key, value in row.items() if key not in ALPACA_FIELDS}
        answer = row.get("output")
    else:
        messages = _sharegpt_messages(row, where, faults)
        extra = {key: value for key, value in row.items() if key not in SHAREGPT_FIELDS}
        prompt, answer = _sharegpt_split(row, messages, where, faults) if messages is not None else (None, None)
    if faults.total > before or prompt is None:
        return None
    if "chosen" in row or "rejected" in row:
        return {**extra, "prompt": prompt, "chosen": _text(row.get("chosen")), "rejected": _text(row.get("rejected"))}
    if isinstance(answer, list) and len(answer) == 2 and "kto_tag" not in row:  # older pairs: output [chosen, rejected]
        return {**extra, "prompt": prompt, "chosen": answer[0], "rejected": answer[1]}
    if "kto_tag" in row:
        return {**extra, "prompt": prompt, "completion": answer, "label": row["kto_tag"]}
    if answer is None:  # prompts only (the RL commands)
        return {**extra, "prompt": prompt}
    return {**extra, "prompt": prompt, "messages": [*prompt, {"role": "assistant", "content": answer}]}


def _text(value: Any) -> Any:
    """A sharegpt answer message's text ({"from": "gpt", "value": ...}); anything else as it is."""
    if isinstance(value, dict):
        for key in DEFAULT_TAGS["content_tag"]:
            if key in value:
                return value[key]
    return value


def _alpaca_prompt(row: dict, where: str, faults: FaultCollector) -> list[dict] | None:
    prompt = _system_message(row, where, faults)
    history = row.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn) for turn in history
    ):
        faults.add(where, "history", "expected a list of [instruction, response] pairs of strings")
        return None
    for question, answer in history:
        prompt += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    parts = []
    for field in ("instruction", "input"):
        value = row.get(field)
        if value is not None and not isinstance(value, str):
            faults.add(where, field, f"expected a string, got {type(value).__name__}")
            return None
        if value:
            parts.append(value)
    if not parts:
        faults.add(where, "instruction", "empty text (with no input either)")
        return None
    return [*prompt, {"role": "user", "content": "\n".join(parts)}]  # LLaMA-Factory's "instruction\ninput"


def _system_message(row: dict, where: str, faults: FaultCollector) -> list[dict]:
    system = row.get("system")
    if system is None or system == "":
        return []
    if not isinstance(system, str):
        faults.add(where, "system", f"expected a string, got {type(system).__name__}")
        return []
    return [{"role": "system", "content": system}]


def _sharegpt_messages(row: dict, where: str, faults: FaultCollector) -> list[dict] | None:
    messages = []
    for i, message in enumerate(row["conversations"]):
        label = f"conversations[{i}]"
        role_key = next((key for key in DEFAULT_TAGS["role_tag"] if isinstance(message, dict) and key in message), None)
        content_key = "value" if role_key == "from" else "content"
        if role_key is None or content_key not in message:
            faults.add(where, label, "expected a message {from, value} (or {role, content})")
            return None
        role = ROLE_NAMES.get(message[role_key])
        if role is None:
            known = ", ".join(ROLE_NAMES)
            faults.add(where, f"{label}.{role_key}", f"unknown role {message[role_key]!r} (expected one of {known})")
            return None
        messages.append({"role": role, "content": message[content_key]})
    if not (messages and messages[0]["role"] == "system"):
        messages = _system_message(row, where, faults) + messages
    return messages


def _sharegpt_split(row: dict, messages: list[dict], where: str, faults: FaultCollector) -> tuple[list | None, Any]:
    """(prompt, answer): every message, none (pairs); or all but the last, the last assistant message's text."""
    if "chosen" in row or "rejected" in row:
        return messages, None
    if not messages or messages[-1]["role"] != "assistant":
        if "kto_tag" in row:
            faults.add(where, "conversations", "a KTO row's conversation must end with the assistant's answer")
            return None, None
        return messages, None  # a prompt only
    if len(messages) == 1:
        faults.add(where, "conversations", "has an answer but nothing before it to answer")
        return None, None
    return messages[:-1], messages[-1]["content"]


def find_dataset(name: str, dataset_dir: str | None) -> tuple[str, dict[str, str]] | None:
    """LLaMA-Factory's ``dataset`` looked up in ``dataset_dir/dataset_info.json`` (``data`` when unset,
    as LLaMA-Factory's default): its file (or hub id) and ``data_fields`` from its ``columns``. None when
    ``name`` is to be read as it is (a file, folder or hub id; OpenRLHF's ``dataset``). With a
    ``dataset_dir`` given, a name found neither there nor as a path is refused."""
    folder = Path(dataset_dir or "data")
    info_path = folder / "dataset_info.json"
    info = _read_info(info_path) if info_path.is_file() else {}
    entry = info.get(name)
    if entry is None:
        if dataset_dir is None or Path(name).exists():
            return None
        if (folder / name).exists():
            return str(folder / name), {}
        known = f" (it names: {', '.join(sorted(info)[:20])})" if info else " (there is none)"
        raise ConfigError(f"dataset '{name}': not in {info_path}{known}, nor a file in {folder}")
    where = f"{info_path}: '{name}'"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object with file_name (or hf_hub_url)")
    return _entry_source(entry, folder, where), _entry_fields(entry, where)


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: expected an object of dataset names")
    return info


def _entry_source(entry: dict, folder: Path, where: str) -> str:
    if entry.get("hf_hub_url"):
        if entry.get("subset") or entry.get("folder"):
            raise ConfigError(f"{where}: a hub dataset's subset/folder is not read; save that part to a file")
        return str(entry["hf_hub_url"])
    if entry.get("file_name"):
        return str(folder / entry["file_name"])
    raise ConfigError(f"{where}: give file_name (or hf_hub_url); ms_hub_url and script_url are not read")


def _entry_fields(entry: dict, where: str) -> dict[str, str]:
    for tag, value in (entry.get("tags") or {}).items():
        if tag in DEFAULT_TAGS and value not in DEFAULT_TAGS[tag]:
            raise ConfigError(
                f"{where}: tags.{tag} '{value}': alignkit reads LLaMA-Factory's default tags or the OpenAI form's "
                f"({', '.join(sorted(DEFAULT_TAGS[tag]))}); rename it in the data"
            )
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt", "openai"):
        raise ConfigError(f"{where}: formatting '{formatting}': alignkit reads alpaca and sharegpt")
    fields = {}
    for role, column in (entry.get("columns") or {}).items():
        if role not in COLUMNS:
            raise ConfigError(f"{where}: columns.{role} is not read by alignkit (images, videos and audios are not)")
        fields[COLUMNS[role]] = column
    return {ours: yours for ours, yours in fields.items() if ours != yours}
