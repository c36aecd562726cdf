"""TRL's names for alignkit's settings, so a TRL command line or YAML runs under alignkit as it is.

Every key of a config file or command line passes through :func:`translate` before validation. A key
TRL (``DPOConfig``/``SFTConfig``/``RewardConfig``/``KTOConfig``/``GRPOConfig``/``RLOOConfig``, their
``transformers.TrainingArguments`` base, ``ScriptArguments`` or ``ModelConfig``) knows is one of:

- the same name as ours (``beta``, ``learning_rate``, ``max_length``, ``lora_r`` ...): kept;
- ``RENAMED``: ours under another name, with its value converted (``model_name_or_path`` -> ``model``,
  ``bf16: true`` -> ``mixed_precision: bf16`` ...);
- ``NO_EFFECT``: cannot change the result here (data-loader workers, hub uploads ...): dropped with a
  one-line notice;
- ``UNSUPPORTED``: would change the result and alignkit lacks it: accepted at TRL's default value
  (which is what alignkit does), refused otherwise with what to do instead.
"""

from __future__ import annotations

from typing import Any, Callable

from alignkit.errors import ConfigError


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _dtype(value: Any) -> dict:
    if str(value) in ("None", "none"):
        return {}  # alignkit's default: float32 weights (mixed precision is a separate setting)
    return {"dtype": str(value).removeprefix("torch.")}  # auto: the checkpoint's dtype, as in transformers


def _precision(kind: str) -> Callable[[Any], dict]:
    return lambda value: {"mixed_precision": kind} if _truthy(value) else {}


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


def _report_to(value: Any) -> dict:
    items = value if isinstance(value, list) else [part.strip() for part in str(value).split(",") if part.strip()]
    return {"report_to": ["tensorboard"] if items == ["all"] else items}


RENAMED: dict[str, Callable[[Any], dict]] = {
    "model_name_or_path": lambda v: {"model": v},
    "dataset_name": lambda v: {"train_data": v},
    "torch_dtype": _dtype,
    "dtype": _dtype,
    "overwrite_output_dir": lambda v: {"overwrite": _truthy(v)},
    "bf16": _precision("bf16"),
    "fp16": _precision("fp16"),
    "eval_strategy": _strategy("eval_steps", {"eval_split": 0.0, "eval_data": None}),
    "evaluation_strategy": _strategy("eval_steps", {"eval_split": 0.0, "eval_data": None}),
    "save_strategy": _strategy("save_steps", {}),
    "logging_strategy": _strategy("logging_steps", {}),
    "loss_type": _loss_type,
    "report_to": _report_to,
}

NO_EFFECT = {
    "remove_unused_columns",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "logging_dir",
    "logging_first_step",
    "do_train",
    "do_eval",
    "do_predict",
    "ddp_find_unused_parameters",
    "ddp_timeout",
    "dataset_num_proc",
    "save_safetensors",
    "log_level",
    "log_level_replica",
    "use_liger_kernel",
    "torch_compile",
    "include_tokens_per_second",
    "include_num_input_tokens_seen",
    "torch_empty_cache_steps",
    "activation_offloading",
    "lora_task_type",
    "use_cpu",
    "bf16_full_eval",
    "fp16_full_eval",
    "tf32",
    "gradient_checkpointing_kwargs",
    "eval_accumulation_steps",
    "precompute_ref_batch_size",
    "save_only_model",
    "dataset_streaming",
    "ignore_bias_buffers",
    "pad_to_multiple_of",
    "label_names",
    "prediction_loss_only",
    "eval_do_concat_batches",
}

# name -> (TRL's default, what to do instead when it differs)
UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "use_rslora": (
        False,
        "alignkit's LoRA uses lora_alpha / lora_r scaling; drop use_rslora (or scale lora_alpha yourself)",
    ),
    "use_dora": (False, "DoRA is not supported; use plain LoRA (use_peft: true)"),
    "hub_token": (None, "set HF_TOKEN in the environment (or run huggingface-cli login) instead"),
    "hub_strategy": ("every_save", "alignkit pushes final/ once, when training ends (hub_strategy: end)"),
    "load_in_8bit": (False, "8-bit loading is not supported; use load_in_4bit (QLoRA) or full precision"),
    "f_divergence_type": ("reverse_kl", "only the reverse-KL (standard DPO) divergence is supported"),
    "sync_ref_model": (False, "the reference stays fixed in alignkit; drop sync_ref_model"),
    "use_weighting": (False, "WPO weighting is not supported"),
    "loss_weights": (None, "one loss at a time: pick loss_type, and add rpo_alpha for an NLL term"),
    "ld_alpha": (None, "LD-DPO is not supported"),
    "use_vllm": (False, "generation runs in the training process (transformers generate); drop use_vllm"),
    "reference_free": (False, "for a reference-free loss use --loss_type simpo, or alignkit orpo"),
    "optim": ("adamw_torch", "alignkit trains with torch AdamW (adamw_torch / adamw_torch_fused)"),
    "neftune_noise_alpha": (None, "NEFTune is not supported"),
    "lr_scheduler_kwargs": (None, "scheduler arguments are not supported; pick lr_scheduler_type"),
    "completion_only_loss": (None, "alignkit always trains on the completion only (the prompt is masked)"),
    "model_revision": ("main", "point model at a local folder holding the revision you want"),
    "use_bnb_nested_quant": (False, "QLoRA here always uses double quantisation"),
    "bnb_4bit_quant_type": ("nf4", "QLoRA here uses nf4"),
    "dataset_config": (None, "save the configuration you want with datasets.save_to_disk and pass that folder"),
    "max_completion_length": (None, "set max_length (alignkit cuts the pair to max_length, keeping the response)"),
    "eos_token": (
        None,
        "alignkit ends responses with the tokenizer's own eos token; set it in the tokenizer files of the model folder",
    ),
    "pad_token": (
        None,
        "alignkit pads with the tokenizer's pad token (or its eos token); padding is masked, so any token does",
    ),
    "chat_template_path": (
        None,
        "save the template into the model folder's tokenizer_config.json (tokenizer.chat_template)",
    ),
}
# renamed only where the command has that field and not TRL's: RL commands generate (max_new_tokens);
# TRL's RLOO calls its KL coefficient beta, alignkit's RLOO and PPO call it kl_coef (GRPO: beta in both)
RENAMED_IF_KNOWN = {"max_completion_length": "max_new_tokens", "beta": "kl_coef"}
SAME_AS_ALIGNKIT = {"optim": {"adamw_torch_fused"}, "completion_only_loss": {True}, "hub_strategy": {"end"}}
# TRL's list fields (``--loss_type sigmoid sft`` takes both words)
LIST_NAMES = {"loss_type", "loss_weights", "report_to", "lora_target_modules", "lora_modules_to_save"}
# TRL's boolean flags that are not booleans here (``--bf16`` alone means true, as in TRL)
BARE_FLAGS = {
    "bf16",
    "fp16",
    "overwrite_output_dir",
    *(k for k, (default, _) in UNSUPPORTED.items() if isinstance(default, bool)),
}


def translate(values: dict[str, Any], known: set[str], origin: str, notices: list[str] | None = None) -> dict[str, Any]:
    """Our fields for ``values`` given under TRL's or our names (see the module docstring). Notices
    for keys dropped are appended to ``notices``; a key that would change the result and that
    alignkit lacks raises a ConfigError naming ``origin``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if (
            key in RENAMED
        ):  # TRL's name, or a name both share whose values TRL spells differently (dtype, loss_type, report_to)
            out.update(_convert(key, value, origin))
        elif key in known:
            out[key] = value
        elif RENAMED_IF_KNOWN.get(key) in known:
            out[RENAMED_IF_KNOWN[key]] = value
        elif key in NO_EFFECT:
            if notices is not None:
                notices.append(f"{origin}: '{key}' (TRL/transformers) has no effect in alignkit; ignored")
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
    return sorted({*RENAMED, *NO_EFFECT, *UNSUPPORTED, *RENAMED_IF_KNOWN})
