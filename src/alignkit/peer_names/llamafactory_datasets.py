"""LLaMA-Factory's ``dataset`` names: looked up in ``dataset_dir/dataset_info.json`` as LLaMA-Factory
does, giving the file (or hub id) to read and its ``columns`` as alignkit's ``data_fields``. The rows
themselves (alpaca, sharegpt) are read by :mod:`alignkit.data.llamafactory`."""

from __future__ import annotations

import json
from pathlib import Path

from alignkit.errors import ConfigError

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
