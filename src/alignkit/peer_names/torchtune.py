"""torchtune's recipe configs (``tune run lora_dpo_single_device --config ...`` and the like) as
alignkit settings: their nested sections (``model:``, ``optimizer:``, ``loss:`` ...) are read as dotted
names (``optimizer.lr``), which is also how torchtune's ``key=value`` overrides spell them.

The weights come from ``checkpointer.checkpoint_dir`` (a Hugging Face folder, torchtune's
``FullModelHFCheckpointer``); the tokenizer and the architecture come with it, so the ``_component_``
entries that build them are dropped with a notice. Its dataset builders (``dataset._component_``) are
read as the rows they build: the generic ones (``preference_dataset``, ``instruct_dataset``,
``chat_dataset``, ``text_completion_dataset``) from ``source``/``data_files`` with their ``column_map``,
the named ones from the hub id each reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from alignkit.errors import ConfigError
from alignkit.peer_names.values import only, to

# the nested sections of a torchtune config
SECTIONS = {
    "model",
    "tokenizer",
    "checkpointer",
    "ref_checkpointer",
    "dataset",
    "dataset_val",
    "optimizer",
    "lr_scheduler",
    "loss",
    "metric_logger",
    "profiler",
    "dataloader",
}
# torchtune's names of the attention projections -> the Hugging Face module names LoRA adapts
ATTENTION = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
LOSSES = {"DPOLoss": "sigmoid", "RSOLoss": "hinge", "IPOLoss": "ipo", "SimPOLoss": "simpo"}


def _optimizer(component: Any) -> dict:
    name = str(component).rsplit(".", 1)[-1]
    if name not in ("AdamW", "Adam", "PagedAdamW", "PagedAdamW32bit"):  # paging moves AdamW's states, same numbers
        advice = "; 8-bit states change the updates (AdamW keeps them in full precision)" if "8bit" in name else ""
        raise ConfigError(
            f"optimizer {component}: alignkit trains with torch AdamW{advice}; run with "
            "optimizer._component_=torch.optim.AdamW"
        )
    return {}


def _scheduler(component: Any) -> dict:
    name = str(component).rsplit(".", 1)[-1]
    for kind in ("cosine", "linear", "constant"):
        if kind in name:
            return {"lr_scheduler_type": kind if kind != "constant" else "constant_with_warmup"}
    raise ConfigError(f"lr_scheduler {component}: alignkit's schedules are linear, cosine or constant (with warm-up)")


def _loss(component: Any) -> dict:
    name = str(component).rsplit(".", 1)[-1]
    if name in LOSSES:
        return {"loss_type": LOSSES[name]}
    if "CrossEntropy" in name or name.startswith("CE"):  # the fine-tuning recipes' loss: alignkit sft's
        return {}
    raise ConfigError(
        f"loss {component}: alignkit dpo trains {', '.join(LOSSES)} (as sigmoid, hinge, ipo, simpo); sft the "
        "cross-entropy losses"
    )


# torchtune's dataset builders -> the hub id a named one reads, and the fields ({ours: its column}) it reads
BUILDERS: dict[str, tuple[str | None, dict[str, str]]] = {
    "preference_dataset": (None, {}),  # chosen/rejected conversations: the shared turns are the prompt
    "instruct_dataset": (None, {"prompt": "input", "completion": "output"}),
    "chat_dataset": (None, {}),  # the conversation column, by conversation_style
    "text_completion_dataset": (None, {}),  # the text column
    "hh_rlhf_helpful_dataset": ("RLHFlow/HH-RLHF-Helpful-standard", {}),
    "stack_exchange_paired_dataset": (  # its data/rl folder
        "lvwerra/stack-exchange-paired/data/rl",
        {"prompt": "question", "chosen": "response_j", "rejected": "response_k"},
    ),
    "slimorca_dataset": ("Open-Orca/SlimOrca-Dedup", {}),  # sharegpt conversations
    "alpaca_dataset": ("tatsu-lab/alpaca", {}),  # alpaca rows: instruction and input joined, then the chat template
    "alpaca_cleaned_dataset": ("yahma/alpaca-cleaned", {}),
}
# a builder's own column names (the keys of its column_map) -> ours
COLUMN_NAMES = {
    "prompt": "prompt",
    "chosen": "chosen",
    "rejected": "rejected",
    "input": "prompt",
    "output": "completion",
}


def _dataset_builder(component: Any) -> dict:
    name = str(component).rsplit(".", 1)[-1]
    if name not in BUILDERS:
        raise ConfigError(
            f"dataset {component}: alignkit reads torchtune's {', '.join(BUILDERS)}; for another, save its rows to "
            "a file and give it as a preference_dataset/instruct_dataset/chat_dataset's data_files"
        )
    source, fields = BUILDERS[name]
    defaults = {f"_tt_default:{ours}": column for ours, column in fields.items()}  # column_map's win
    return {**({"_tt_source": source} if source else {}), **defaults}


def _column_map(value: Any) -> dict:
    if not isinstance(value, dict) or not all(key in COLUMN_NAMES for key in value):
        raise ConfigError(f"column_map {value!r}: give {{column: your column}} for {', '.join(COLUMN_NAMES)}")
    return {f"_tt_field:{COLUMN_NAMES[key]}": str(column) for key, column in value.items()}


def _conversation_style(value: Any) -> dict:
    if value not in ("sharegpt", "openai"):
        raise ConfigError(f"conversation_style {value!r}: alignkit reads sharegpt and openai conversations")
    return {"_tt_style": value}


def _model(component: Any) -> dict:
    name = str(component).rsplit(".", 1)[-1]
    lora = {"use_peft": True} if "lora_" in name or "dora_" in name else {}
    return {**lora, "load_in_4bit": True} if name.startswith(("qlora_", "qdora_")) else lora


def _hub_source(field: str) -> Callable[[Any], dict]:
    """A dataset section's ``source``: a hub id is ``field``; a file type (with ``data_files``) sets nothing."""
    return lambda value: {} if str(value) in ("json", "parquet", "csv", "text") else {field: value}


NAMES: dict[str, Callable[[Any], dict]] = {
    "model._component_": _model,
    "model.lora_rank": to("lora_r"),
    "model.lora_alpha": to("lora_alpha"),
    "model.lora_dropout": to("lora_dropout"),
    "model.lora_attn_modules": lambda value: {"_tt_attention": list(value)},
    "model.apply_lora_to_mlp": lambda value: {"_tt_mlp": bool(value)},
    "model.apply_lora_to_output": only({False, None}, "LoRA on the output layer is refused (use_peft adapts the body)"),
    "tokenizer.max_seq_len": lambda value: {"max_length": value} if value is not None else {},
    "model.use_dora": to("use_dora"),
    "model.quantize_base": lambda value: {"load_in_4bit": True} if value else {},
    "ref_checkpointer.checkpoint_dir": lambda value: {"_tt_reference": str(value)},
    "dataset_val.data_files": to("eval_data"),
    "dataset_val.source": _hub_source("eval_data"),
    "dataset_val.split": to("dataset_test_split"),
    "run_val_every_n_steps": to("eval_steps"),
    "batch_size_val": to("per_device_eval_batch_size"),
    "keep_last_n_checkpoints": to("save_total_limit"),
    "clip_grad_norm": lambda value: {"max_grad_norm": 0.0 if value is None else float(value)},  # null: no clipping
    "dataset.packed": lambda value: {"packing": True} if value else {},
    "checkpointer.checkpoint_dir": to("model"),
    "dataset.data_files": to("train_data"),
    "dataset.source": _hub_source("train_data"),
    "dataset.split": to("dataset_train_split"),
    "dataset._component_": _dataset_builder,
    "dataset.column_map": _column_map,
    "dataset.conversation_column": lambda value: {"_tt_conversations": str(value)},
    "dataset.conversation_style": _conversation_style,
    "dataset.column": lambda value: {"_tt_field:text": str(value)},  # text_completion_dataset's
    "dataset.train_on_input": only({False}, "alignkit trains on the responses only (the prompt is masked)"),
    "dataset.new_system_prompt": only({None}, "put the system message in your rows"),
    "batch_size": to("per_device_train_batch_size"),
    "epochs": to("num_train_epochs"),
    "optimizer._component_": _optimizer,
    "optimizer.lr": to("learning_rate"),
    "optimizer.weight_decay": to("weight_decay"),
    "optimizer.betas": lambda value: {"adam_beta1": float(value[0]), "adam_beta2": float(value[1])},
    "optimizer.eps": to("adam_epsilon"),
    "lr_scheduler._component_": _scheduler,
    "lr_scheduler.num_warmup_steps": to("warmup_steps"),
    "loss._component_": _loss,
    "loss.beta": to("beta"),
    "loss.label_smoothing": lambda value: {"label_smoothing": value} if value else {},
    "loss.gamma": to("simpo_gamma"),
    "log_every_n_steps": lambda value: {"logging_steps": value} if value is not None else {},
    "enable_activation_checkpointing": to("gradient_checkpointing"),
    "shuffle": only({True, None}, "alignkit shuffles the training data every epoch (seeded)"),
}
DROPPED = {
    **dict.fromkeys(
        [
            "save_adapter_weights_only",
            "optimizer.fused",
            "compile",
            "log_peak_memory_stats",
            "device",
            "enable_activation_offloading",
            "optimizer_in_bwd",
            "profiler",
            "dataset_val._component_",
            "log_level",
            "low_cpu_ram",
            "collate_fn",
            "ac_mode",
            "ac_option",
        ],
        "",
    ),
}


# every other key of these sections: what the note says
SECTION_NOTES = {
    "tokenizer": "the tokenizer is the model folder's",
    "checkpointer": "",
    "ref_checkpointer": "",
    "metric_logger": "",
    "profiler": "",
    "dataloader": "",
    "model": "the architecture comes from checkpointer.checkpoint_dir",
}
SHARDING = (
    "tensor_parallel_dim",
    "tensor_parallel_plan",
    "data_parallel_shard_dim",
    "data_parallel_replicate_dim",
    "fsdp_cpu_offload",
    "fsdp_reshard_after_forward",
    "custom_sharded_layers",
    "memory_efficient_fsdp_wrap",
)
DROPPED.update(dict.fromkeys(SHARDING, "sharding is chosen at launch (--accelerate_config fsdp2 or zero3)"))


def dropped_note(key: str) -> str | None:
    """The note for a torchtune key alignkit drops ("" for none), or None when it is not one."""
    if key in DROPPED:
        return DROPPED[key]
    section = key.split(".", 1)[0]
    return SECTION_NOTES.get(section) if "." in key else None


INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def interpolate(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A config file's values with torchtune's (OmegaConf's) ``${name}`` references resolved against the
    file and the command line's ``name=value`` overrides (which win): ``batch_size_val: ${batch_size}``
    follows ``batch_size=2``. A reference to nothing stays as it is."""

    def lookup(name: str) -> Any:
        if name in overrides:
            return overrides[name]
        node: Any = values
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def resolve(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict):
            return {key: resolve(item, depth) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item, depth) for item in value]
        if not isinstance(value, str) or "${" not in value or depth > 8:
            return value
        whole = INTERPOLATION.fullmatch(value)
        found = lookup(whole.group(1)) if whole else None
        if found is not None:
            return resolve(found, depth + 1)  # its own type: ${batch_size} is an int

        def substitute(match: re.Match) -> str:
            found = lookup(match.group(1))
            return match.group(0) if found is None else str(resolve(found, depth + 1))

        return INTERPOLATION.sub(substitute, value)

    return resolve(values)


def flatten(values: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """torchtune's nested sections as dotted names (a section alignkit has a field of its own name for,
    such as ``model``, is flattened only when it is a mapping)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict) and (key not in known or key == "model"):
            out.update({f"{key}.{sub}": item for sub, item in value.items()})
        else:
            out[key] = value
    return out


def finish(merged: dict[str, Any], out: dict[str, Any]) -> None:
    """LoRA's modules from torchtune's attention list and MLP switch (``max_steps_per_epoch`` is ours too);
    the data a dataset builder reads (its hub id where no source is given, its columns as data_fields)."""
    reference = merged.get("_tt_reference")
    if reference is not None and Path(reference) != Path(str(out.get("model", reference))):
        raise ConfigError(
            f"ref_checkpointer.checkpoint_dir {reference}: the reference is the model training starts from "
            f"({out.get('model')}); give the same folder"
        )
    if "_tt_source" in merged:
        out.setdefault("train_data", merged["_tt_source"])
    fields = {key.split(":", 1)[1]: value for key, value in merged.items() if key.startswith("_tt_default:")}
    fields.update({key.split(":", 1)[1]: value for key, value in merged.items() if key.startswith("_tt_field:")})
    if "_tt_conversations" in merged:  # chat_dataset: openai's messages, or sharegpt's from/value turns
        fields["conversations" if merged.get("_tt_style") == "sharegpt" else "messages"] = merged["_tt_conversations"]
    fields = {ours: theirs for ours, theirs in fields.items() if ours != theirs}
    if fields:
        out["data_fields"] = {**fields, **(out.get("data_fields") or {})}
    if "_tt_attention" in merged or merged.get("_tt_mlp"):
        modules = [ATTENTION.get(name, name) for name in merged.get("_tt_attention", [])]
        out["lora_target_modules"] = modules + (["gate_proj", "up_proj", "down_proj"] if merged.get("_tt_mlp") else [])
