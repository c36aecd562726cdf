"""The small converters every tool's table uses: a boolean as the tools spell it, a plain rename, and
a setting accepted only at the values that mean what alignkit does."""

from __future__ import annotations

from typing import Any, Callable

from alignkit.errors import ConfigError


def truthy(value: Any) -> bool:
    """A boolean as YAML, argparse and HfArgumentParser spell it (true, "True", "1", "yes")."""
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def to(field: str) -> Callable[[Any], dict]:
    """The same value under our name ``field``."""
    return lambda value: {field: value}


def only(expected: set, advice: str) -> Callable[[Any], dict]:
    """Accepted where ``value`` means what alignkit does (in ``expected``, case aside), else refused with
    ``advice``."""

    def convert(value: Any) -> dict:
        if value in expected or str(value).lower() in {str(e).lower() for e in expected}:
            return {}
        raise ConfigError(f"{value!r} is not supported by alignkit: {advice}")

    return convert


def as_list(value: Any) -> list:
    """A list as given, or a comma-separated string's parts (``q_proj,v_proj``)."""
    return value if isinstance(value, list) else [part.strip() for part in str(value).split(",") if part.strip()]


def reward_model(value: Any) -> dict:
    """A reward model's folder (TRL's ``reward_model_path``, LLaMA-Factory's ``reward_model``, OpenRLHF's
    ``reward_pretrain`` ...) as a reward term, settled by :func:`alignkit.peer_names.finish`."""
    return {"_reward_terms:model": [{"kind": "reward_model", "model": value}]} if value else {}
