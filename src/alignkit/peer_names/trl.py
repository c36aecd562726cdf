"""TRL's names for alignkit's settings, so a TRL command line or YAML runs under alignkit as it is.

Every key of a config file or command line passes through :func:`translate` before validation. A key
TRL (``DPOConfig``/``SFTConfig``/``RewardConfig``/``KTOConfig``/``GRPOConfig``/``RLOOConfig``, their
``transformers.TrainingArguments`` base, ``ScriptArguments`` or ``ModelConfig``) knows is one of:

- the same name as ours (``beta``, ``learning_rate``, ``max_length``, ``lora_r`` ...): kept;
- ``RENAMED``: ours under another name, with its value converted (``model_name_or_path`` -> ``model``,
  ``bf16: true`` -> ``mixed_precision: bf16`` ...);
- ``NO_EFFECT`` / ``NOTED`` (:mod:`.trl_dropped`): cannot change the result here (data-loader workers,
  hub uploads, how a run is launched ...): dropped with a one-line notice;
- ``UNSUPPORTED`` (:mod:`.trl_dropped`): would change the result and alignkit lacks it: accepted at the
  value that means what alignkit does (mostly TRL's default), refused otherwise with what to do instead.
"""

from __future__ import annotations

from typing import Any, Callable

import yaml

from alignkit.errors import ConfigError
from alignkit.peer_names.trl_dropped import NO_EFFECT, NOTED, SAME_AS_ALIGNKIT, UNSUPPORTED
from alignkit.peer_names.values import as_list, reward_model, truthy


def _dtype(value: Any) -> dict:
    if str(value) in ("None", "none"):
        return {}  # alignkit's default: float32 weights (mixed precision is a separate setting)
    name = str(value).removeprefix("torch.")
    short = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # torchtune's and LLaMA-Factory's spelling
    return {"dtype": short.get(name, name)}  # auto: the checkpoint's dtype, as in transformers


def _precision(kind: str) -> Callable[[Any], dict]:
    return lambda value: {"mixed_precision": kind} if truthy(value) else {}


def _strategy(steps_key: str, off: dict) -> Callable[[Any], dict]:
    """TRL's ``*_strategy``: "steps" uses the ``*_steps`` value (ours too); "no" turns it off where
    alignkit can; "epoch" is refused (alignkit counts in steps)."""

    def convert(value: Any) -> dict:
        value = "no" if value is False or value is None else str(value).lower()  # YAML reads a bare no as false
        if value == "steps":
            return {}
        if value == "no":
            return dict(off)
        raise ConfigError(
            f"{steps_key.split('_')[0]}_strategy '{value}': alignkit schedules by steps; set {steps_key} instead "
            f"(it also runs once at the end)"
        )

    return convert


def _loss_type(value: Any) -> dict:
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError(
                f"loss_type {value}: alignkit trains one loss at a time; pick one (and add rpo_alpha for the NLL term)"
            )
        value = value[0]
    return {"loss_type": value}


def _scale_rewards(value: Any) -> dict:
    """TRL's GRPO ``scale_rewards``: "group" (or true) divides by each group's std, as alignkit's true
    does; "none" (or false) does not; "batch" (the batch's std) alignkit lacks."""
    word = "none" if value is False or value is None else "group" if value is True else str(value).lower()
    if word in ("group", "true"):
        return {"scale_rewards": True}
    if word in ("none", "false"):
        return {"scale_rewards": False}
    raise ConfigError(f"scale_rewards '{value}': alignkit scales by each group's std (group) or not at all (none)")


def _resume_from(value: Any) -> dict:
    """TRL's ``resume_from_checkpoint``: true resumes from output_dir's newest checkpoint (alignkit's
    ``resume``); a checkpoint path is refused with the way to say it here."""
    if value is None or value is False or str(value).strip().lower() in ("false", "none", ""):
        return {}
    if truthy(value):
        return {"resume": True}
    raise ConfigError(
        f"resume_from_checkpoint '{value}': alignkit resumes from the newest good checkpoint of output_dir; "
        "set output_dir to the run's folder and pass --resume"
    )


def _model_init_kwargs(value: Any) -> dict:
    """TRL's ``model_init_kwargs`` (a dict, or its JSON on the command line): the loading options alignkit
    has as keys of its own; any other is refused."""
    if value in (None, {}, ""):
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"model_init_kwargs {value!r}: expected a mapping such as {{torch_dtype: bfloat16}}")
    out: dict = {}
    for key, item in value.items():
        if key in ("torch_dtype", "dtype"):
            out.update(_dtype(item))
        elif key in ("attn_implementation", "trust_remote_code"):
            out[key] = item
        elif key != "device_map":  # placement is accelerate's
            raise ConfigError(
                f"model_init_kwargs '{key}' is not supported (dtype, attn_implementation, trust_remote_code)"
            )
    return out


def _dataset_mixture(value: Any) -> dict:
    """TRL's YAML ``datasets:`` (a dataset mixture): each entry's local ``data_files``, else its ``path``
    (with ``data_dir``: ``path/data_dir``), read one after another as ``train_data``; the entries' ``split``
    must agree."""
    entries = value if isinstance(value, list) else [value]
    if not entries or not all(isinstance(entry, dict) and entry.get("path") for entry in entries):
        raise ConfigError("datasets: give a list of entries, each with a path (and data_files, split, data_dir)")
    sources, splits = [], {entry.get("split", "train") for entry in entries}
    for entry in entries:
        if entry.get("name") or entry.get("fraction") not in (None, 1, 1.0):  # (columns: only the needed are read)
            raise ConfigError(
                f"datasets: {entry['path']}: an entry's name (subset) and fraction are not supported; save that part "
                "to a file"
            )
        files = entry.get("data_files")
        files = files if isinstance(files, list) else [files] if files else []
        if not all(isinstance(f, str) for f in files):
            raise ConfigError(f"datasets: data_files {entry.get('data_files')!r}: give file names")
        data_dir = f"/{str(entry['data_dir']).strip('/')}" if entry.get("data_dir") else ""
        sources += files or [f"{entry['path']}{data_dir}"]  # path: json/parquet (with data_files), a folder or a hub id
    if len(splits) != 1:
        raise ConfigError(f"datasets: the entries' splits differ ({', '.join(sorted(splits))}); alignkit reads one")
    out = {"train_data": ",".join(sources)}
    if splits != {"train"}:
        out["dataset_train_split"] = splits.pop()
    return out


def _test_split_size(value: Any) -> dict:
    if value is None:
        return {}
    if not 0 < float(value) < 1:
        raise ConfigError(f"test_split_size {value}: give a fraction below 1 (alignkit's eval_split)")
    return {"eval_split": float(value)}


# TRL's built-in GRPO/RLOO reward functions (``--reward_funcs``) as alignkit reward terms
REWARD_FUNCS = {
    "accuracy_reward": {"kind": "verifier"},  # the row's answer (TRL's "solution": data_fields: {answer: solution})
    "reasoning_accuracy_reward": {"kind": "verifier"},
    "think_format_reward": {"kind": "regex", "pattern": r"(?s)^<think>(?!.*<think>)(.*?)</think>.*$"},
}


def _reward_func(name: str) -> dict:
    if name in REWARD_FUNCS:
        return dict(REWARD_FUNCS[name])
    raise ConfigError(
        f"reward_funcs '{name}': alignkit knows {', '.join(REWARD_FUNCS)}; for your own function give "
        "rewards: [{kind: python, function: file.py:fn}] with fn(row, response) -> float"
    )


def _lr_scheduler_kwargs(value: Any) -> dict:
    """transformers' scheduler arguments: cosine_with_min_lr's ``min_lr_rate`` is read, nothing else."""
    kwargs = value if isinstance(value, dict) else yaml.safe_load(str(value)) if value not in (None, "") else {}
    if not kwargs:
        return {}
    if not isinstance(kwargs, dict) or set(kwargs) - {"min_lr_rate"}:
        raise ConfigError(f"lr_scheduler_kwargs {value!r}: alignkit reads min_lr_rate (cosine_with_min_lr) only")
    return {"min_lr_rate": float(kwargs["min_lr_rate"])}


def _report_to(value: Any) -> dict:
    if value is None or value is False or value == []:  # YAML reads TRL's documented ``report_to: no`` as false
        return {"report_to": ["none"]}
    items = ["none" if str(item).lower() in ("no", "false") else item for item in as_list(value)]
    return {"report_to": ["tensorboard"] if items == ["all"] else items}


RENAMED: dict[str, Callable[[Any], dict]] = {
    "model_name_or_path": lambda v: {"model": v},
    "dataset_name": lambda v: {"train_data": v},
    "torch_dtype": _dtype,
    "dtype": _dtype,
    "overwrite_output_dir": lambda v: {"overwrite": truthy(v)},
    "bf16": _precision("bf16"),
    "fp16": _precision("fp16"),
    "eval_strategy": _strategy("eval_steps", {"eval_split": 0.0, "eval_data": None}),
    "evaluation_strategy": _strategy("eval_steps", {"eval_split": 0.0, "eval_data": None}),
    "save_strategy": _strategy("save_steps", {}),
    "logging_strategy": _strategy("logging_steps", {}),
    "loss_type": _loss_type,
    "report_to": _report_to,
    "scale_rewards": _scale_rewards,
    "model_init_kwargs": _model_init_kwargs,
    "datasets": _dataset_mixture,  # TRL's YAML dataset mixture
    "test_split_size": _test_split_size,
    "resume_from_checkpoint": _resume_from,
    "max_seq_length": lambda v: {"max_length": v},  # SFTConfig's name before TRL 0.20
    # TRL's PPO: a reward model's folder; the run's length in prompts; minibatches per rollout batch
    "reward_model_path": reward_model,
    "reward_model_name_or_path": reward_model,
    "reward_funcs": lambda v: {"_reward_terms:funcs": [_reward_func(name) for name in as_list(v)]},
    "total_episodes": lambda v: {"_total_episodes": int(v)} if v else {},
    "sft_model_path": lambda v: {"_sft_model_path": v},  # the policy and reference (model_name_or_path: tokenizer)
    "num_mini_batches": lambda v: {"_num_mini_batches": int(v)},
    "lr_scheduler_kwargs": _lr_scheduler_kwargs,
}

# renamed only where the command has that field and not TRL's: RL commands generate (max_new_tokens);
# TRL's RLOO calls its KL coefficient beta, alignkit's RLOO and PPO call it kl_coef (GRPO: beta in both)
RENAMED_IF_KNOWN = {
    "max_completion_length": "max_new_tokens",
    "response_length": "max_new_tokens",  # TRL's PPO before 0.20
    "beta": "kl_coef",
    "num_iterations": "num_ppo_epochs",  # GRPO/RLOO: updates per generation batch
    "epsilon": "cliprange",
    "epsilon_high": "cliprange_high",
}
# TRL's list fields (``--loss_type sigmoid sft`` takes both words)
LIST_NAMES = {"loss_type", "loss_weights", "report_to", "lora_target_modules", "lora_modules_to_save", "reward_funcs"}


def translate(values: dict[str, Any], known: set[str], origin: str, notices: list[str] | None = None) -> dict[str, Any]:
    """Our fields for ``values`` given under TRL's or our names (see the module docstring). Notices
    for keys dropped are appended to ``notices``; a key that would change the result and that
    alignkit lacks raises a ConfigError naming ``origin``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "loss_type" and key not in known:  # KTO's and SFT's single loss: TRL's name for it is checked
            out["_loss_type"] = _convert(key, value, origin)["loss_type"]
        elif (
            key in RENAMED
        ):  # TRL's name, or a name both share whose values TRL spells differently (dtype, loss_type, report_to)
            out.update(_convert(key, value, origin))
        elif key in known:
            out[key] = value
        elif RENAMED_IF_KNOWN.get(key) in known:
            out[RENAMED_IF_KNOWN[key]] = value
        elif key in NO_EFFECT or key.startswith("vllm_"):
            if notices is not None:
                notices.append(f"{origin}: '{key}' (TRL/transformers) has no effect in alignkit; ignored")
        elif key in NOTED:
            if notices is not None and value not in (None, False, "", {}):
                notices.append(f"{origin}: '{key}' ignored: {NOTED[key]}")
        elif key in UNSUPPORTED:
            default, advice = UNSUPPORTED[key]
            if (
                value != default
                and value not in SAME_AS_ALIGNKIT.get(key, set())
                and not (value is None or value == [] or value == {})
            ):
                raise ConfigError(f"{origin}: '{key}: {value}' is not supported by alignkit: {advice}")
        else:
            out[key] = value  # unknown: validation reports it, with a "did you mean"
    return out


def _convert(key: str, value: Any, origin: str) -> dict:
    try:
        return RENAMED[key](value)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def all_names() -> list[str]:
    """Every TRL name alignkit understands (for "did you mean" suggestions)."""
    return sorted({*RENAMED, *NO_EFFECT, *NOTED, *UNSUPPORTED, *RENAMED_IF_KNOWN})


def knows(key: str) -> bool:
    """Whether ``key`` is a TRL name alignkit understands (``vllm_*``: vLLM's settings, dropped)."""
    return (
        key in RENAMED
        or key in NO_EFFECT
        or key in NOTED
        or key in UNSUPPORTED
        or key in RENAMED_IF_KNOWN
        or (key.startswith("vllm_"))
    )
