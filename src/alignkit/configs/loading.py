"""Loading a command's config: a YAML file plus ``--key value`` overrides (ours, or another tool's names:
TRL's, LLaMA-Factory's, OpenRLHF's, torchtune's, see :mod:`alignkit.peer_names`) -> a validated
pydantic model; errors name the key, the value and where it came from (the YAML file or the command
line). Also writes the resolved config and the ``--help`` text."""

from __future__ import annotations

import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from alignkit import peer_names
from alignkit.configs.base import TrainConfig
from alignkit.errors import ConfigError


def _is_list_field(annotation: Any) -> bool:
    return "list" in str(annotation)


def parse_overrides(cls: type[TrainConfig], args: list[str]) -> dict[str, Any]:
    """Turn ``--key value`` / ``--key=value`` / ``--flag`` / ``--key v1 v2`` into a dict of raw values
    (keys as given: ours or another tool's, see :mod:`alignkit.peer_names`)."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("-") and "=" in token.split(" ", 1)[0]:
            token = f"--{token}"  # torchtune's (and Hydra's) key=value override: optimizer.lr=1e-5
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument '{token}': overrides look like --key value")
        key, _, inline = token[2:].partition("=")
        key = key.replace("-", "_")
        if key.startswith("no_") and not inline and key not in cls.model_fields and _is_known(cls, key[3:]):
            values[key[3:]] = False  # TRL's (HfArgumentParser's) negation of a boolean: --no_remove_unused_columns
            i += 1
            continue
        _check_known(cls, key, "command line")
        words: list[str] = [inline] if inline or "=" in token else []
        while not words or _takes_several(cls, key):  # --key v1 v2 ... for list fields, as TRL's parser allows
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                words.append(args[i + 1])
                i += 1
            else:
                break
        values[key] = _raw_value(cls, key, words)
        i += 1
    return values


def _takes_several(cls: type[TrainConfig], key: str) -> bool:
    return key in peer_names.LIST_NAMES or (
        key in cls.model_fields and _is_list_field(cls.model_fields[key].annotation)
    )


def _raw_value(cls: type[TrainConfig], key: str, words: list[str]) -> Any:
    annotation = cls.model_fields[key].annotation if key in cls.model_fields else None
    if not words:
        if annotation is bool or bool in typing.get_args(annotation) or key in peer_names.BARE_FLAGS:
            return True
        raise ConfigError(f"--{key} needs a value (e.g. --{key} VALUE)")
    if (_is_list_field(annotation) or len(words) > 1) and not words[0].lstrip().startswith("["):
        return [part.strip() for word in words for part in word.split(",") if part.strip()]
    if annotation in (str, str | None) or key in peer_names.TEXT_NAMES:  # text as given, not read as YAML
        text = " ".join(words)
        return None if text.strip().lower() in ("none", "null", "~") else text
    return _scalar(" ".join(words))


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently, so
    ``beta: 0.1`` above a forgotten ``beta: 0.5`` would train with 0.5)."""

    def construct_mapping(self, node, deep=False):
        """The mapping, once its own keys (not those a ``<<`` merge brings, which it may override) are unique."""
        lines: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (first on line {lines[key] + 1})", key_node.start_mark
                )
            lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)

    def construct_document(self, node):
        """The document; the lines of its top-level keys are kept in ``key_lines`` (1-based) for messages."""
        self.key_lines = {
            key.value: key.start_mark.line + 1
            for key, _ in (node.value if isinstance(node, yaml.MappingNode) else [])
            if isinstance(key, yaml.ScalarNode)
        }
        return super().construct_document(node)


def _read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """The YAML document of ``path`` and the line of each top-level key."""
    loader = UniqueKeyLoader(path.read_text(encoding="utf-8"))
    try:
        return loader.get_single_data(), getattr(loader, "key_lines", {})
    finally:
        loader.dispose()


def _scalar(raw: str) -> Any:
    if raw.strip().lower() in ("none", "null", "~"):
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _is_known(cls: type[TrainConfig], key: str) -> bool:
    return key in cls.model_fields or peer_names.knows(key)


def _check_known(cls: type[TrainConfig], key: str, origin: str) -> None:
    if not _is_known(cls, key):
        close = difflib.get_close_matches(key, [*cls.model_fields, *peer_names.all_names()], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{origin}: unknown key '{key}'{hint}")


def load_config(
    cls: type[TrainConfig],
    path: str | Path | None = None,
    overrides: list[str] | dict | None = None,
    invalid: list[tuple[str, str]] | None = None,
) -> TrainConfig:
    """Build ``cls`` from an optional YAML file and overrides (CLI tokens or a dict); validate all.
    With ``invalid`` (the doctor's mode), a value that fails validation is left at its default and
    reported there as (key, message) instead of stopping everything."""
    file_values: dict[str, Any] = {}
    key_lines: dict[str, int] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded, key_lines = _read_yaml(path)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start + 1}); save the file as UTF-8") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value, got {type(loaded).__name__}")
        for key in loaded:
            _check_known(cls, str(key), _where(path, key_lines, key))
        file_values = dict(loaded)
    if isinstance(overrides, dict):
        for key in overrides:
            _check_known(cls, key, "overrides")
        cli_values = dict(overrides)
    else:
        cli_values = parse_overrides(cls, list(overrides or []))
    notices: list[str] = []
    known = set(cls.model_fields)
    file_values = peer_names.interpolate(file_values, cli_values)  # torchtune's ${name} references
    file_values = peer_names.translate(file_values, known, str(path), notices)
    cli_values = peer_names.translate(cli_values, known, "command line", notices)
    for notice in dict.fromkeys(notices):
        print(f"alignkit: note: {notice}", file=sys.stderr)
    merged = peer_names.finish({**file_values, **cli_values}, cls)
    while True:
        try:
            return cls(**merged)
        except ValidationError as exc:
            keys = _error_keys(exc, merged)
            if invalid is None or not all(keys):
                raise ConfigError(_format_validation(exc, merged, cli_values, path, key_lines)) from None
            for line, key in zip(_format_validation(exc, merged, cli_values, path, key_lines).splitlines()[1:], keys):
                invalid.append((key, line.strip()))
                merged.pop(key, None)


def _error_keys(exc: ValidationError, merged: dict) -> list[str]:
    """The key each validation error is about ("" if none): a cross-field error is charged to the
    key it names first among those the user set."""
    keys = []
    for err in exc.errors():
        if err["loc"]:
            keys.append(str(err["loc"][0]))
            continue
        named = [(err["msg"].find(k), k) for k in merged if k in err["msg"]]
        keys.append(min(named)[1] if named else "")
    return keys


def _where(path: Path, key_lines: dict[str, int], key) -> str:
    """``file:line`` of a key of the config file (the file alone for a key it does not hold as written)."""
    return f"{path}:{key_lines[key]}" if key in key_lines else str(path)


def _format_validation(
    exc: ValidationError, merged: dict, cli_values: dict, path: Path | None, key_lines: dict[str, int]
) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else None
        message = err["msg"].removeprefix("Value error, ")
        if key is None:
            lines.append(f"  {message}")
            continue
        origin = "command line" if key in cli_values else (_where(path, key_lines, key) if path else "default")
        value = merged.get(key, "<default>")
        lines.append(f"  {key} = {value!r} ({origin}): {message}")
    return "\n".join(lines)


def save_config(config: BaseModel, path: Path) -> None:
    """Write the resolved config (every field, defaults included) as YAML."""
    data = config.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


HELP_GROUPS = {
    "model": (
        "model",
        "dtype",
        "trust_remote_code",
        "attn_implementation",
        "load_in_4bit",
        "use_peft",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "disable_dropout",
    ),
    "data": (
        "train_data",
        "eval_data",
        "eval_split",
        "dataset_train_split",
        "dataset_test_split",
        "max_length",
        "max_prompt_length",
        "apply_chat_template",
        "data_fields",
        "eos_token",
        "max_samples",
        "padding_free",
        "padding_side",
        "prefix_sharing",
        "packing",
    ),
    "optimisation": (
        "learning_rate",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "max_steps",
        "max_steps_per_epoch",
        "warmup_ratio",
        "warmup_steps",
        "lr_scheduler_type",
        "max_grad_norm",
        "max_nonfinite_steps",
        "seed",
    ),
    "logging and run directory": (
        "output_dir",
        "overwrite",
        "resume",
        "force_resume",
        "run_name",
        "logging_steps",
        "eval_steps",
        "eval_on_start",
        "save_steps",
        "save_total_limit",
        "report_to",
        "disable_tqdm",
        "symptom_warnings",
        "symptom_thresholds",
        "preflight",
        "push_to_hub",
        "hub_model_id",
        "hub_private_repo",
    ),
    "hardware": ("mixed_precision", "gradient_checkpointing", "logprob_chunk_size"),
}


def _type_text(annotation) -> str:
    """A field's type for --help: its choices when it has them; a union's parts joined by "or"."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + "|".join(str(c) for c in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(annotation) if a is not type(None))
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory else field.default
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, BaseModel):
        return "see description"
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe_fields(cls: type[BaseModel]) -> str:
    """Help text: the fields by group (model, data, method, optimisation, logging, hardware), each with its
    type or choices, its default and its description."""
    grouped: dict[str, list[str]] = {}
    for name, field in cls.model_fields.items():
        group = next((g for g, names in HELP_GROUPS.items() if name in names), "method")
        grouped.setdefault(group, []).append(
            f"  --{name} ({_type_text(field.annotation)}; default: {_default_text(field)})\n"
            f"      {field.description or ''}"
        )
    order = ["model", "data", "method", "optimisation", "logging and run directory", "hardware"]
    return "\n\n".join(f"{group}:\n" + "\n".join(grouped[group]) for group in order if group in grouped)
